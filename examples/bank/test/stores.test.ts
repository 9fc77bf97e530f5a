/**
 * The bank on the embedded PGlite store and on the PostgreSQL server: the same commands and rules as in memory, plus
 * what only a real store shows — idempotency keys surviving a restart, concurrent withdrawals, transfers in one
 * transaction, snapshots in the database.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ConcurrencyError, DomainError } from 'eventline';
import { createSqlSnapshotStore, type SqlEventStore } from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import { bankEvents, CloseAccount, createBank, Deposit, MoneyDeposited, OpenAccount, TransferMoney, Withdraw } from '../src/index.js';

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases();
});
after(() => databases.close());

/** Each backend gives a database that can be opened several times, as by a process that restarts. */
const backends: Array<[string, () => { open: () => SqlEventStore }]> = [
  [
    'PostgreSQL',
    () => {
      const schema = `bank_${randomBytes(5).toString('hex')}`;
      return { open: () => databases.postgres({ schema, events: bankEvents, poolSize: 6 }) };
    },
  ],
  [
    'PGlite (file)',
    () => {
      const dataDir = `./.tmp/bank-${randomBytes(5).toString('hex')}`;
      return { open: () => databases.pglite({ dataDir, events: bankEvents }) };
    },
  ],
];

for (const [name, backend] of backends) {
  describe(`bank on ${name}`, () => {
    it('idempotency keys hold across a restart of the process', async () => {
      const database = backend();
      let store = database.open();
      let bank = createBank(store, { snapshots: createSqlSnapshotStore(store) });
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'a', owner: 'Ada' }));
      const first = await bank.bus.dispatch(Deposit.create({ accountId: 'a', amount: 100 }, { idempotencyKey: 'deposit-1' }));
      await store.close();
      store = database.open(); // a new process: nothing kept in memory
      bank = createBank(store, { snapshots: createSqlSnapshotStore(store) });
      const again = await bank.bus.dispatch(Deposit.create({ accountId: 'a', amount: 100 }, { idempotencyKey: 'deposit-1' }));
      assert.equal(again.duplicate, true);
      assert.equal(again.position, first.position);
      assert.equal((await bank.accounts.load('a')).state.balance, 100);
    });

    it('20 concurrent withdrawals never overdraw an account, and every success is in the log', async () => {
      const store = backend().open();
      const bank = createBank(store);
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'b', owner: 'Bob' }));
      await bank.bus.dispatch(Deposit.create({ accountId: 'b', amount: 100 }));
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => bank.bus.dispatch(Withdraw.create({ accountId: 'b', amount: 15 }))));
      const succeeded = results.filter((r) => r.status === 'fulfilled').length;
      for (const result of results) {
        if (result.status === 'fulfilled') continue;
        // Refused by the rule, or (rarely) still conflicting after every retry: never anything else.
        const refused = result.reason instanceof DomainError && result.reason.rule === 'INSUFFICIENT_FUNDS';
        assert.ok(refused || result.reason instanceof ConcurrencyError, String(result.reason));
      }
      if (results.every((r) => r.status === 'fulfilled' || r.reason instanceof DomainError)) assert.equal(succeeded, 6, '100 / 15: six fit');
      let withdrawn = 0;
      for await (const event of store.readStream('account-b')) if (event.type === 'MoneyWithdrawn') withdrawn++;
      assert.equal(withdrawn, succeeded, 'every successful withdrawal is in the log, and only those');
      const balance = (await bank.accounts.load('b')).state.balance;
      assert.equal(balance, 100 - 15 * succeeded);
      assert.ok(balance >= 0, 'never overdrawn');
    });

    it('two writers with state caches of their own on one account: every command decides on the current balance', async () => {
      const database = backend();
      // An embedded database belongs to one process: there, two banks on one store (each with its own cache).
      const one = database.open();
      const two = name === 'PostgreSQL' ? database.open() : one;
      const [here, there] = [createBank(one, { cache: true }), createBank(two, { cache: true })];
      await here.bus.dispatch(OpenAccount.create({ accountId: 'k', owner: 'Kim' }));
      await here.bus.dispatch(Deposit.create({ accountId: 'k', amount: 100 }));
      await there.bus.dispatch(Withdraw.create({ accountId: 'k', amount: 60 })); // `here` still caches balance 100
      await assert.rejects(here.bus.dispatch(Withdraw.create({ accountId: 'k', amount: 60 })), (e: unknown) => e instanceof DomainError && e.rule === 'INSUFFICIENT_FUNDS');
      await here.bus.dispatch(Withdraw.create({ accountId: 'k', amount: 40 })); // `here` caches balance 0
      await there.bus.dispatch(Deposit.create({ accountId: 'k', amount: 100 }));
      await here.bus.dispatch(Withdraw.create({ accountId: 'k', amount: 50 })); // not refused for the stale balance of 0
      // Both processes at once, each with its own cache: still never overdrawn, and every success is in the log.
      await here.bus.dispatch(Deposit.create({ accountId: 'k', amount: 50 })); // balance 100
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? here : there).bus.dispatch(Withdraw.create({ accountId: 'k', amount: 15 }))),
      );
      const succeeded = results.filter((r) => r.status === 'fulfilled').length;
      for (const result of results) {
        if (result.status === 'fulfilled') continue;
        const refused = result.reason instanceof DomainError && result.reason.rule === 'INSUFFICIENT_FUNDS';
        assert.ok(refused || result.reason instanceof ConcurrencyError, String(result.reason));
      }
      let withdrawn = 0;
      for await (const event of one.readStream('account-k')) if (event.type === 'MoneyWithdrawn') withdrawn += (event.data as { amount: number }).amount;
      assert.equal(withdrawn, 60 + 40 + 50 + 15 * succeeded, 'every successful withdrawal is in the log, and only those');
      const balance = (await there.accounts.load('k')).state.balance;
      assert.equal(balance, 100 - 15 * succeeded);
      assert.ok(balance >= 0, 'never overdrawn');
      await one.close();
      if (two !== one) await two.close();
    });

    it('a transfer moves money in one transaction, or not at all', async () => {
      const store = backend().open();
      const bank = createBank(store);
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'x', owner: 'X' }));
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'y', owner: 'Y' }));
      await bank.bus.dispatch(Deposit.create({ accountId: 'x', amount: 30 }));
      await bank.bus.dispatch(TransferMoney.create({ transferId: 't1', from: 'x', to: 'y', amount: 20 }));
      await assert.rejects(bank.bus.dispatch(TransferMoney.create({ transferId: 't2', from: 'x', to: 'nobody', amount: 5 })), (e: unknown) => e instanceof DomainError && e.rule === 'ACCOUNT_NOT_FOUND');
      assert.equal((await bank.accounts.load('x')).state.balance, 10, 'the failed transfer took nothing out');
      assert.equal((await bank.accounts.load('y')).state.balance, 20);
    });

    it('a transfer takes the snapshots its events make due once it has committed, and none when it rolls back', async () => {
      const store = backend().open();
      const snapshots = createSqlSnapshotStore(store);
      const bank = createBank(store, { snapshots, cache: true });
      await bank.bus.dispatch(OpenAccount.create({ accountId: 's', owner: 'S' }));
      await bank.bus.dispatch(OpenAccount.create({ accountId: 't', owner: 'T' }));
      await store.append('account-s', Array.from({ length: 98 }, () => MoneyDeposited.create({ amount: 1 })), { expectedVersion: 1 });
      // Version 100 is the policy's multiple: the transfer to a closed account fails, and so does its transaction.
      await bank.bus.dispatch(CloseAccount.create({ accountId: 't' }));
      await assert.rejects(bank.bus.dispatch(TransferMoney.create({ transferId: 'f', from: 's', to: 't', amount: 5 })), DomainError);
      assert.equal(await snapshots.load('account-s'), null, 'nothing saved for the rolled-back transfer');
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'u', owner: 'U' }));
      await bank.bus.dispatch(TransferMoney.create({ transferId: 'g', from: 's', to: 'u', amount: 5 }));
      assert.deepEqual(await snapshots.load('account-s'), { streamId: 'account-s', version: 100, stateVersion: 1, state: (await bank.accounts.load('s')).state });
      assert.equal((await bank.bus.dispatch(Withdraw.create({ accountId: 's', amount: 93 }))).version, 101, 'the cached state after the transfer is right');
      await assert.rejects(bank.bus.dispatch(Withdraw.create({ accountId: 's', amount: 1 })), (e: unknown) => e instanceof DomainError && e.rule === 'INSUFFICIENT_FUNDS');
    });
  });
}
