/**
 * The bank on the embedded PGlite store and on the PostgreSQL server: the same commands and rules as in memory, plus
 * what only a real store shows — idempotency keys surviving a restart, concurrent withdrawals, transfers in one
 * transaction, snapshots in the database.
 */
// tier: integration
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  ConcurrencyError,
  createAsyncProjection,
  defineEvent,
  DomainError,
  eventRegistry,
  type EventRegistry,
} from '@eventline/core';
import {
  createSqlDocumentStore,
  createSqlProjectionCatalog,
  createSqlSnapshotStore,
  createSqlSubscriptionStore,
  type SqlEventStore,
} from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import { z } from 'zod';
import {
  bankEvents,
  bankReadModels,
  CloseAccount,
  createBank,
  Deposit,
  MoneyDeposited,
  OpenAccount,
  parseCpf,
  sampleCpf,
  TransferMoney,
  Withdraw,
  type BalanceView,
  type PaymentView,
  type StatementView,
} from '../src/index.js';

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases();
});
after(() => databases.close());

/**
 * Each backend gives a database that can be opened several times, as by a process that restarts (with the bank's
 * event definitions unless told others, as by an earlier version of the bank).
 */
const backends: Array<[string, () => { open: (events?: EventRegistry) => SqlEventStore }]> = [
  [
    'PostgreSQL',
    () => {
      const schema = `bank_${randomBytes(5).toString('hex')}`;
      return { open: (events = bankEvents) => databases.postgres({ schema, events, poolSize: 6 }) };
    },
  ],
  [
    'PGlite (file)',
    () => {
      const dataDir = `./.tmp/bank-${randomBytes(5).toString('hex')}`;
      return { open: (events = bankEvents) => databases.pglite({ dataDir, events }) };
    },
  ],
];

/** The money events as earlier versions of the bank defined them (schema version 1): amounts as JSON numbers. */
const v1 = z.number().int().positive();
const earlierBankEvents = eventRegistry(
  [
    defineEvent('AccountOpened', z.object({ owner: z.string() })),
    defineEvent('MoneyDeposited', z.object({ amount: v1 })),
    defineEvent('MoneyWithdrawn', z.object({ amount: v1 })),
    defineEvent('MoneyTransferredOut', z.object({ transferId: z.string(), to: z.string(), amount: v1 })),
    defineEvent('MoneyTransferredIn', z.object({ transferId: z.string(), from: z.string(), amount: v1 })),
    defineEvent('PaymentCreated', z.object({ accountId: z.string(), amount: v1 })),
    defineEvent('PaymentConfirmed', z.object({})),
    defineEvent('PaymentRefunded', z.object({ amount: v1, reason: z.string() })),
  ],
  { strict: false },
);

/** The bank's read models on the store's own database, running. */
async function readModelsOn(store: SqlEventStore) {
  const projection = createAsyncProjection({
    projection: bankReadModels,
    store,
    subscriptions: createSqlSubscriptionStore(store),
    documents: createSqlDocumentStore(store),
    catalog: createSqlProjectionCatalog(store),
    pollIntervalMs: 20,
  });
  await projection.start();
  return projection;
}

for (const [name, backend] of backends) {
  describe(`bank on ${name}`, () => {
    it('idempotency keys hold across a restart of the process', async () => {
      const database = backend();
      let store = database.open();
      let bank = createBank(store, { snapshots: createSqlSnapshotStore(store) });
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'a', owner: 'Ada', holderTaxId: sampleCpf('a') }));
      const first = await bank.bus.dispatch(
        Deposit.create({ accountId: 'a', amount: 100 }, { idempotencyKey: 'deposit-1' }),
      );
      await store.close();
      store = database.open(); // a new process: nothing kept in memory
      bank = createBank(store, { snapshots: createSqlSnapshotStore(store) });
      const again = await bank.bus.dispatch(
        Deposit.create({ accountId: 'a', amount: 100 }, { idempotencyKey: 'deposit-1' }),
      );
      assert.equal(again.duplicate, true);
      assert.equal(again.position, first.position);
      assert.equal((await bank.accounts.load('a')).state.balance, '100');
    });

    it('20 concurrent withdrawals never overdraw an account, and every success is in the log', async () => {
      const store = backend().open();
      const bank = createBank(store);
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'b', owner: 'Bob', holderTaxId: sampleCpf('b') }));
      await bank.bus.dispatch(Deposit.create({ accountId: 'b', amount: 100 }));
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, () => bank.bus.dispatch(Withdraw.create({ accountId: 'b', amount: 15 }))),
      );
      const succeeded = results.filter((r) => r.status === 'fulfilled').length;
      for (const result of results) {
        if (result.status === 'fulfilled') continue;
        // Refused by the rule, or (rarely) still conflicting after every retry: never anything else.
        const refused = result.reason instanceof DomainError && result.reason.rule === 'INSUFFICIENT_FUNDS';
        assert.ok(refused || result.reason instanceof ConcurrencyError, String(result.reason));
      }
      if (results.every((r) => r.status === 'fulfilled' || r.reason instanceof DomainError))
        assert.equal(succeeded, 6, '100 / 15: six fit');
      let withdrawn = 0;
      for await (const event of store.readStream('account-b')) if (event.type === 'MoneyWithdrawn') withdrawn++;
      assert.equal(withdrawn, succeeded, 'every successful withdrawal is in the log, and only those');
      const balance = (await bank.accounts.load('b')).state.balance;
      assert.equal(balance, String(100 - 15 * succeeded));
      assert.ok(BigInt(balance) >= 0n, 'never overdrawn');
    });

    it('two writers with state caches of their own on one account: every command decides on the current balance', async () => {
      const database = backend();
      // An embedded database belongs to one process: there, two banks on one store (each with its own cache).
      const one = database.open();
      const two = name === 'PostgreSQL' ? database.open() : one;
      const [here, there] = [createBank(one, { cache: true }), createBank(two, { cache: true })];
      await here.bus.dispatch(OpenAccount.create({ accountId: 'k', owner: 'Kim', holderTaxId: sampleCpf('k') }));
      await here.bus.dispatch(Deposit.create({ accountId: 'k', amount: 100 }));
      await there.bus.dispatch(Withdraw.create({ accountId: 'k', amount: 60 })); // `here` still caches balance 100
      await assert.rejects(
        here.bus.dispatch(Withdraw.create({ accountId: 'k', amount: 60 })),
        (e: unknown) => e instanceof DomainError && e.rule === 'INSUFFICIENT_FUNDS',
      );
      await here.bus.dispatch(Withdraw.create({ accountId: 'k', amount: 40 })); // `here` caches balance 0
      await there.bus.dispatch(Deposit.create({ accountId: 'k', amount: 100 }));
      await here.bus.dispatch(Withdraw.create({ accountId: 'k', amount: 50 })); // not refused for the stale balance of 0
      // Both processes at once, each with its own cache: still never overdrawn, and every success is in the log.
      await here.bus.dispatch(Deposit.create({ accountId: 'k', amount: 50 })); // balance 100
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? here : there).bus.dispatch(Withdraw.create({ accountId: 'k', amount: 15 })),
        ),
      );
      const succeeded = results.filter((r) => r.status === 'fulfilled').length;
      for (const result of results) {
        if (result.status === 'fulfilled') continue;
        const refused = result.reason instanceof DomainError && result.reason.rule === 'INSUFFICIENT_FUNDS';
        assert.ok(refused || result.reason instanceof ConcurrencyError, String(result.reason));
      }
      let withdrawn = 0;
      for await (const event of one.readStream('account-k'))
        if (event.type === 'MoneyWithdrawn') withdrawn += Number((event.data as { amount: string }).amount);
      assert.equal(
        withdrawn,
        60 + 40 + 50 + 15 * succeeded,
        'every successful withdrawal is in the log, and only those',
      );
      const balance = (await there.accounts.load('k')).state.balance;
      assert.equal(balance, String(100 - 15 * succeeded));
      assert.ok(BigInt(balance) >= 0n, 'never overdrawn');
      await one.close();
      if (two !== one) await two.close();
    });

    it('a transfer moves money in one transaction, or not at all', async () => {
      const store = backend().open();
      const bank = createBank(store);
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'x', owner: 'X', holderTaxId: sampleCpf('x') }));
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'y', owner: 'Y', holderTaxId: sampleCpf('y') }));
      await bank.bus.dispatch(Deposit.create({ accountId: 'x', amount: 30 }));
      await bank.bus.dispatch(TransferMoney.create({ transferId: 't1', from: 'x', to: 'y', amount: 20 }));
      await assert.rejects(
        bank.bus.dispatch(TransferMoney.create({ transferId: 't2', from: 'x', to: 'nobody', amount: 5 })),
        (e: unknown) => e instanceof DomainError && e.rule === 'ACCOUNT_NOT_FOUND',
      );
      assert.equal((await bank.accounts.load('x')).state.balance, '10', 'the failed transfer took nothing out');
      assert.equal((await bank.accounts.load('y')).state.balance, '20');
    });

    it('a transfer takes the snapshots its events make due once it has committed, and none when it rolls back', async () => {
      const store = backend().open();
      const snapshots = createSqlSnapshotStore(store);
      const bank = createBank(store, { snapshots, cache: true });
      await bank.bus.dispatch(OpenAccount.create({ accountId: 's', owner: 'S', holderTaxId: sampleCpf('s') }));
      await bank.bus.dispatch(OpenAccount.create({ accountId: 't', owner: 'T', holderTaxId: sampleCpf('t') }));
      await store.append(
        'account-s',
        Array.from({ length: 98 }, () => MoneyDeposited.create({ amount: '1' })),
        { expectedVersion: 1 },
      );
      // Version 100 is the policy's multiple: the transfer to a closed account fails, and so does its transaction.
      await bank.bus.dispatch(CloseAccount.create({ accountId: 't' }));
      await assert.rejects(
        bank.bus.dispatch(TransferMoney.create({ transferId: 'f', from: 's', to: 't', amount: 5 })),
        DomainError,
      );
      assert.equal(await snapshots.load('account-s'), null, 'nothing saved for the rolled-back transfer');
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'u', owner: 'U', holderTaxId: sampleCpf('u') }));
      await bank.bus.dispatch(TransferMoney.create({ transferId: 'g', from: 's', to: 'u', amount: 5 }));
      assert.deepEqual(await snapshots.load('account-s'), {
        streamId: 'account-s',
        version: 100,
        stateVersion: 3,
        state: (await bank.accounts.load('s')).state,
      });
      assert.equal(
        (await bank.bus.dispatch(Withdraw.create({ accountId: 's', amount: 93 }))).version,
        101,
        'the cached state after the transfer is right',
      );
      await assert.rejects(
        bank.bus.dispatch(Withdraw.create({ accountId: 's', amount: 1 })),
        (e: unknown) => e instanceof DomainError && e.rule === 'INSUFFICIENT_FUNDS',
      );
    });

    it('balances beyond 2^53 are exact across a snapshot and a restart, in the aggregate and the read models', async () => {
      const database = backend();
      let store = database.open();
      let bank = createBank(store, { snapshots: createSqlSnapshotStore(store), cache: true });
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'big', owner: 'Big', holderTaxId: sampleCpf('big') }));
      await store.append(
        'account-big',
        Array.from({ length: 98 }, () => MoneyDeposited.create({ amount: '1' })),
        { expectedVersion: 1 },
      );
      await bank.bus.dispatch(Deposit.create({ accountId: 'big', amount: '9007199254740993' })); // version 100: a snapshot
      const snapshot = await createSqlSnapshotStore(store).load('account-big');
      assert.deepEqual(
        snapshot && { version: snapshot.version, stateVersion: snapshot.stateVersion, state: snapshot.state },
        {
          version: 100,
          stateVersion: 3,
          state: { status: 'open', owner: 'Big', holderTaxId: parseCpf(sampleCpf('big')), balance: '9007199254741091' },
        },
      );
      await store.close();
      store = database.open(); // a new process: the state comes from the snapshot, not from a cache
      bank = createBank(store, { snapshots: createSqlSnapshotStore(store), cache: true });
      const loaded = await bank.accounts.load('big');
      assert.deepEqual([loaded.fromSnapshot, loaded.eventsRead, loaded.state.balance], [true, 0, '9007199254741091']);
      await bank.bus.dispatch(Deposit.create({ accountId: 'big', amount: 1 }));
      assert.equal((await bank.accounts.load('big')).state.balance, '9007199254741092');
      await assert.rejects(
        bank.bus.dispatch(Withdraw.create({ accountId: 'big', amount: '9007199254741093' })),
        (e: unknown) => {
          assert.ok(e instanceof DomainError && e.rule === 'INSUFFICIENT_FUNDS', String(e));
          assert.deepEqual(e.details, { balance: '9007199254741092', amount: '9007199254741093' });
          return true;
        },
      );
      await assert.rejects(
        bank.bus.dispatch(Withdraw.create({ accountId: 'big', amount: 2 ** 53 + 1 })),
        /send the amount as a string of digits/,
      );
      const last = await bank.bus.dispatch(Withdraw.create({ accountId: 'big', amount: '9007199254741091' }));
      const projection = await readModelsOn(store);
      try {
        await projection.waitFor(last.position!, { timeoutMs: 30_000 }); // a guard, not a speed check
        assert.equal((await (await projection.collection<BalanceView>('balance')).get('big'))?.balance, '1');
        const lines = (await (await projection.collection<StatementView>('statement')).get('big'))!.lines;
        assert.deepEqual(
          lines.slice(-3).map((line) => [line.version, line.amount, line.balance]),
          [
            [100, '9007199254740993', '9007199254741091'],
            [101, '1', '9007199254741092'],
            [102, '-9007199254741091', '1'],
          ],
        );
      } finally {
        await projection.stop();
      }
      await store.close();
    });

    it('events stored by an earlier version of the bank (numeric amounts) still load and project, as strings', async () => {
      const database = backend();
      const earlier = database.open(earlierBankEvents);
      const meta = { metadata: { correlationId: 'c' } };
      await earlier.append('account-ada', [
        { type: 'AccountOpened', data: { owner: 'Ada' }, ...meta },
        { type: 'MoneyDeposited', data: { amount: 9007199254740991 }, ...meta },
        { type: 'MoneyDeposited', data: { amount: 100 }, ...meta },
        { type: 'MoneyTransferredOut', data: { transferId: 't', to: 'bob', amount: 5 }, ...meta },
      ]);
      await earlier.append('account-bob', [
        { type: 'AccountOpened', data: { owner: 'Bob' }, ...meta },
        { type: 'MoneyTransferredIn', data: { transferId: 't', from: 'ada', amount: 5 }, ...meta },
        { type: 'MoneyWithdrawn', data: { amount: 2 }, ...meta },
      ]);
      await earlier.append('payment-p', [
        { type: 'PaymentCreated', data: { accountId: 'ada', amount: 20 }, ...meta },
        { type: 'PaymentConfirmed', data: {}, ...meta },
        { type: 'PaymentRefunded', data: { amount: 20, reason: 'returned' }, ...meta },
      ]);
      await earlier.close();

      const store = database.open();
      const bank = createBank(store, { snapshots: createSqlSnapshotStore(store) });
      const stored = [];
      for await (const event of store.readStream('account-ada'))
        stored.push([event.type, event.data, event.metadata.schemaVersion]);
      assert.deepEqual(stored, [
        ['AccountOpened', { owner: 'Ada' }, 1],
        ['MoneyDeposited', { amount: '9007199254740991' }, 2],
        ['MoneyDeposited', { amount: '100' }, 2],
        ['MoneyTransferredOut', { transferId: 't', to: 'bob', amount: '5' }, 2],
      ]);
      assert.equal((await bank.accounts.load('ada')).state.balance, '9007199254741086'); // as numbers: 9007199254741088
      assert.equal((await bank.accounts.load('bob')).state.balance, '3');
      assert.deepEqual((await bank.payments.load('p')).state, { status: 'refunded', amount: '20' });
      await bank.bus.dispatch(Deposit.create({ accountId: 'ada', amount: '1' }));
      const last = await bank.bus.dispatch(Withdraw.create({ accountId: 'bob', amount: 3 }));
      const projection = await readModelsOn(store);
      try {
        await projection.waitFor(last.position!, { timeoutMs: 30_000 }); // a guard, not a speed check
        const balances = await projection.collection<BalanceView>('balance');
        assert.equal((await balances.get('ada'))?.balance, '9007199254741087');
        assert.equal((await balances.get('bob'))?.balance, '0');
        const ada = (await (await projection.collection<StatementView>('statement')).get('ada'))!.lines;
        assert.deepEqual(
          ada.map((line) => [line.type, line.amount, line.balance]),
          [
            ['MoneyDeposited', '9007199254740991', '9007199254740991'],
            ['MoneyDeposited', '100', '9007199254741091'],
            ['MoneyTransferredOut', '-5', '9007199254741086'],
            ['MoneyDeposited', '1', '9007199254741087'],
          ],
        );
        const payment = await (await projection.collection<PaymentView>('payment')).get('p');
        assert.deepEqual([payment?.amount, payment?.status], ['20', 'refunded']);
      } finally {
        await projection.stop();
      }
      await store.close();
    });
  });
}
