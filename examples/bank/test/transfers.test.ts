/**
 * Transfers as a process (`RequestTransfer` and the `bank-transfers` process manager) on PostgreSQL and PGlite: one
 * that completes, one refused for insufficient funds, one whose target is closed (refunded), every step sent twice,
 * and many at once between a few accounts. Money is conserved in every outcome.
 */
// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  createAsyncProjection,
  createProcessManager,
  systemClock,
  type CommandBus,
  type ProcessManager,
} from '@eventline/core';
import { createTestClock, until } from '@eventline/core/testing';
import {
  createSqlDocumentStore,
  createSqlProcessStore,
  createSqlProjectionCatalog,
  createSqlSubscriptionStore,
  type SqlEventStore,
} from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import {
  bankEvents,
  bankReadModels,
  CloseAccount,
  createBank,
  Deposit,
  OpenAccount,
  RequestTransfer,
  sampleCpf,
  transferProcess,
  type BalanceView,
  type StatementView,
  type TransferProcessState,
} from '../src/index.js';

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases();
});
after(() => databases.close());

const backends: Array<[string, () => SqlEventStore]> = [
  ['PostgreSQL', () => databases.postgres({ events: bankEvents, poolSize: 6 })],
  ['PGlite', () => databases.pglite({ events: bankEvents })],
];

/** A bus that sends every command twice at once, as a sender that crashed after sending it would (and more). */
function sendingTwice(bus: CommandBus): CommandBus {
  return {
    register: bus.register.bind(bus) as CommandBus['register'],
    types: () => bus.types(),
    async dispatch(command) {
      const [first, second] = await Promise.allSettled([bus.dispatch(command), bus.dispatch(command)]);
      if (first.status === 'rejected') throw first.reason;
      if (second.status === 'rejected') throw second.reason;
      return first.value;
    },
  };
}

function bankWithTransfers(store: SqlEventStore, options: { sendTwice?: boolean } = {}) {
  const bank = createBank(store);
  const transfers = createProcessManager({
    process: transferProcess,
    store,
    subscriptions: createSqlSubscriptionStore(store),
    processes: createSqlProcessStore(store),
    bus: options.sendTwice ? sendingTwice(bank.processBus) : bank.processBus,
    // The process's time is the test's; its subscription reads the log on the system's clock.
    clock: createTestClock(),
    subscriptionClock: systemClock,
    pollIntervalMs: { commands: 20, timers: 20 },
  });
  return { bank, transfers };
}

async function open(bank: ReturnType<typeof createBank>, accountId: string, balance: number | string = 0) {
  await bank.bus.dispatch(OpenAccount.create({ accountId, owner: accountId, holderTaxId: sampleCpf(accountId) }));
  if (balance !== 0) await bank.bus.dispatch(Deposit.create({ accountId, amount: balance }));
}

async function ended(transfers: ProcessManager, transferId: string) {
  await until(async () => (await transfers.instance(transferId))?.completed === true, `transfer ${transferId} to end`);
  return (await transfers.instance(transferId))!.state as unknown as TransferProcessState;
}

async function balanceOf(bank: ReturnType<typeof createBank>, accountId: string) {
  return (await bank.accounts.load(accountId)).state.balance;
}

async function typesIn(store: SqlEventStore, streamId: string) {
  const types: string[] = [];
  for await (const event of store.readStream(streamId)) types.push(event.type);
  return types;
}

for (const [name, create] of backends) {
  describe(`transfers as a process on ${name}`, () => {
    it('completes: money out of the source, into the target, the transfer completed', async () => {
      const store = create();
      const { bank, transfers } = bankWithTransfers(store);
      transfers.start();
      try {
        await open(bank, 'ada', '123456789012345678901234567890');
        await open(bank, 'bob');
        await bank.bus.dispatch(
          RequestTransfer.create({ transferId: 't1', from: 'ada', to: 'bob', amount: '9007199254740993' }),
        );
        const state = await ended(transfers, 't1');
        assert.equal(state.step, 'completed');
        assert.equal(await balanceOf(bank, 'ada'), (123456789012345678901234567890n - 9007199254740993n).toString());
        assert.equal(await balanceOf(bank, 'bob'), '9007199254740993');
        assert.deepEqual((await bank.transfers.load('t1')).state, {
          status: 'completed',
          from: 'ada',
          to: 'bob',
          amount: '9007199254740993',
          failure: null,
        });
        assert.deepEqual(await typesIn(store, 'transfer-t1'), ['TransferRequested', 'TransferCompleted']);
        assert.deepEqual(await typesIn(store, 'account-bob'), ['AccountOpened', 'MoneyTransferredIn']);
        assert.deepEqual(await transfers.commands(), [], 'nothing left in the outbox, nothing parked');
        // Every event the transfer caused carries the request's correlation id.
        let correlationId: unknown;
        for await (const event of store.readStream('transfer-t1', { limit: 1 }))
          correlationId = event.metadata.correlationId;
        assert.equal(typeof correlationId, 'string');
        for (const streamId of ['account-ada', 'account-bob', 'transfer-t1']) {
          for await (const event of store.readStream(streamId)) {
            if (event.type.startsWith('Transfer') || event.type.startsWith('MoneyTransferred'))
              assert.equal(event.metadata.correlationId, correlationId, event.type);
          }
        }
      } finally {
        await transfers.stop();
      }
    });

    it('refused for insufficient funds: the transfer fails, and no account is touched', async () => {
      const store = create();
      const { bank, transfers } = bankWithTransfers(store);
      transfers.start();
      try {
        await open(bank, 'ada', 10);
        await open(bank, 'bob', 5);
        await bank.bus.dispatch(RequestTransfer.create({ transferId: 't2', from: 'ada', to: 'bob', amount: 30 }));
        const state = await ended(transfers, 't2');
        assert.equal(state.step, 'failed');
        const { status, failure } = (await bank.transfers.load('t2')).state;
        assert.equal(status, 'failed');
        assert.equal(failure?.rule, 'INSUFFICIENT_FUNDS');
        assert.equal(failure?.refunded, false);
        assert.match(failure!.reason, /insufficient funds in account ada/);
        assert.deepEqual(await typesIn(store, 'account-ada'), ['AccountOpened', 'MoneyDeposited']);
        assert.deepEqual(await typesIn(store, 'account-bob'), ['AccountOpened', 'MoneyDeposited']);
        assert.deepEqual([await balanceOf(bank, 'ada'), await balanceOf(bank, 'bob')], ['10', '5']);
      } finally {
        await transfers.stop();
      }
    });

    it('the target closed, or unknown: the source is refunded, balances as before, TransferFailed', async () => {
      const store = create();
      const { bank, transfers } = bankWithTransfers(store);
      const projection = createAsyncProjection({
        projection: bankReadModels,
        store,
        subscriptions: createSqlSubscriptionStore(store),
        documents: createSqlDocumentStore(store),
        catalog: createSqlProjectionCatalog(store),
        pollIntervalMs: 20,
      });
      await projection.start();
      transfers.start();
      try {
        await open(bank, 'ada', 100);
        await open(bank, 'bob');
        await bank.bus.dispatch(CloseAccount.create({ accountId: 'bob' }));
        await bank.bus.dispatch(RequestTransfer.create({ transferId: 't3', from: 'ada', to: 'bob', amount: 30 }));
        await bank.bus.dispatch(RequestTransfer.create({ transferId: 't4', from: 'ada', to: 'nobody', amount: 20 }));
        for (const [transferId, rule] of [
          ['t3', 'ACCOUNT_CLOSED'],
          ['t4', 'ACCOUNT_NOT_FOUND'],
        ] as const) {
          assert.equal((await ended(transfers, transferId)).step, 'failed');
          const { failure } = (await bank.transfers.load(transferId)).state;
          assert.equal(failure?.rule, rule, transferId);
          assert.equal(failure?.refunded, true, transferId);
        }
        assert.equal(await balanceOf(bank, 'ada'), '100');
        assert.equal(await balanceOf(bank, 'bob'), '0');
        assert.deepEqual(await typesIn(store, 'account-bob'), ['AccountOpened', 'AccountClosed']);
        assert.deepEqual(await typesIn(store, 'transfer-t3'), ['TransferRequested', 'TransferFailed']);
        // The statement shows the money going and coming back, with the counterparty, ending where it began.
        await projection.waitFor(await store.headPosition(), { timeoutMs: 30_000 });
        const statement = await (await projection.collection<StatementView>('statement')).get('ada');
        const lines = statement!.lines;
        for (const [transferId, amount, counterparty] of [
          ['t3', '30', 'bob'],
          ['t4', '20', 'nobody'],
        ] as const) {
          assert.deepEqual(
            lines
              .filter((line) => line.transferId === transferId)
              .map((line) => ({ type: line.type, amount: line.amount, counterparty: line.counterparty })),
            [
              { type: 'MoneyTransferredOut', amount: `-${amount}`, counterparty },
              { type: 'MoneyTransferRefunded', amount, counterparty },
            ],
          );
        }
        assert.equal(lines.at(-1)?.balance, '100');
        const balance = await (await projection.collection<BalanceView>('balance')).get('ada');
        assert.equal(balance?.balance, '100');
      } finally {
        await transfers.stop();
        await projection.stop();
      }
    });

    it('every step sent twice at once, and the log read again: each is handled once', async () => {
      const store = create();
      const { bank, transfers } = bankWithTransfers(store, { sendTwice: true });
      transfers.start();
      try {
        await open(bank, 'ada', 100);
        await open(bank, 'bob');
        await open(bank, 'cy');
        await bank.bus.dispatch(CloseAccount.create({ accountId: 'cy' }));
        await bank.bus.dispatch(RequestTransfer.create({ transferId: 'ok', from: 'ada', to: 'bob', amount: 30 }));
        await bank.bus.dispatch(RequestTransfer.create({ transferId: 'back', from: 'ada', to: 'cy', amount: 40 }));
        await bank.bus.dispatch(RequestTransfer.create({ transferId: 'no', from: 'bob', to: 'ada', amount: 31 }));
        assert.equal((await ended(transfers, 'ok')).step, 'completed');
        assert.equal((await ended(transfers, 'back')).step, 'failed');
        assert.equal((await ended(transfers, 'no')).step, 'failed');
        const expected = async () => {
          assert.deepEqual([await balanceOf(bank, 'ada'), await balanceOf(bank, 'bob')], ['70', '30']);
          assert.deepEqual(await typesIn(store, 'account-ada'), [
            'AccountOpened',
            'MoneyDeposited',
            'MoneyTransferredOut',
            'MoneyTransferredOut',
            'MoneyTransferRefunded',
          ]);
          assert.deepEqual(await typesIn(store, 'account-bob'), ['AccountOpened', 'MoneyTransferredIn']);
          for (const transferId of ['ok', 'back', 'no'])
            assert.equal((await typesIn(store, `transfer-${transferId}`)).length, 2, transferId);
        };
        await expected();
        // The process's subscription reads the whole log again, as after a lost checkpoint: nothing is done twice.
        await transfers.stop();
        await transfers.subscription.reset('beginning');
        transfers.start();
        await transfers.subscription.waitFor(await store.headPosition(), { timeoutMs: 30_000 });
        await transfers.runOnce();
        for (const transferId of ['ok', 'back', 'no'])
          assert.ok((await transfers.instance(transferId))!.ignored > 0, `${transferId}: its events came again`);
        await expected();
        assert.deepEqual(await transfers.commands(), []);
      } finally {
        await transfers.stop();
      }
    });

    it('many transfers at once between a few accounts: every one ends, and no money appears or vanishes', async () => {
      const store = create();
      const { bank, transfers } = bankWithTransfers(store);
      transfers.start();
      try {
        const accounts = ['a', 'b', 'c', 'd'];
        for (const id of accounts) await open(bank, id, 1000);
        await open(bank, 'closed');
        await bank.bus.dispatch(CloseAccount.create({ accountId: 'closed' }));
        // Amounts of 5 to 304, ten out of each account: some are refused for insufficient funds, and every fifth goes
        // to the closed account and is refunded (unless refused first).
        const requests = Array.from({ length: 40 }, (_, index) => {
          const from = accounts[index % 4]!;
          const others = accounts.filter((id) => id !== from);
          const to = index % 5 === 4 ? 'closed' : others[(index * 7) % 3]!;
          return { transferId: `m${index}`, from, to, amount: 5 + ((index * 37) % 300) };
        });
        await Promise.all(requests.map((request) => bank.bus.dispatch(RequestTransfer.create(request))));
        const moved = new Map(accounts.map((id) => [id, 1000n]));
        const outcomes = { completed: 0, refunded: 0, refused: 0 };
        for (const request of requests) {
          const state = await ended(transfers, request.transferId);
          const { status, failure } = (await bank.transfers.load(request.transferId)).state;
          if (status === 'completed') {
            assert.notEqual(request.to, 'closed');
            outcomes.completed++;
            moved.set(request.from, moved.get(request.from)! - BigInt(request.amount));
            moved.set(request.to, moved.get(request.to)! + BigInt(request.amount));
          } else if (failure?.refunded) {
            outcomes.refunded++;
            assert.equal(request.to, 'closed');
          } else {
            outcomes.refused++;
            assert.equal(failure?.rule, 'INSUFFICIENT_FUNDS');
          }
          assert.equal(state.step, status, request.transferId);
        }
        let total = 0n;
        for (const id of accounts) {
          const balance = await balanceOf(bank, id);
          assert.equal(balance, String(moved.get(id)), `account ${id}: every completed transfer, and only those`);
          assert.ok(BigInt(balance) >= 0n);
          total += BigInt(balance);
        }
        assert.equal(total, 4000n, 'money conserved');
        assert.equal(await balanceOf(bank, 'closed'), '0');
        assert.ok(outcomes.completed > 0 && outcomes.refunded > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
        assert.deepEqual(await transfers.commands(), []);
      } finally {
        await transfers.stop();
      }
    });
  });
}
