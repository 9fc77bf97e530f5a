// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createAsyncProjection,
  createInMemoryDocumentStore,
  createInMemoryProjectionCatalog,
  createInMemoryStore,
  createInMemorySubscriptionStore,
} from '@eventline/core';
import {
  bankEvents,
  bankReadModels,
  ConfirmPayment,
  CreatePayment,
  createBank,
  Deposit,
  OpenAccount,
  sampleCpf,
  RefundPayment,
  TransferMoney,
  Withdraw,
  type BalanceView,
  type PaymentCounts,
  type PaymentView,
  type StatementView,
} from '../src/index.js';

/** The bank in memory, with its read models running. */
async function bankWithReadModels() {
  const store = createInMemoryStore({ events: bankEvents });
  const { bus } = createBank(store);
  const projection = createAsyncProjection({
    projection: bankReadModels,
    store,
    subscriptions: createInMemorySubscriptionStore(store),
    documents: createInMemoryDocumentStore(),
    catalog: createInMemoryProjectionCatalog(),
    pollIntervalMs: 10,
  });
  await projection.start();
  return { bus, projection };
}

describe('bank read models', () => {
  it('balance, statement with running balance, payments by status', async () => {
    const { bus, projection } = await bankWithReadModels();
    try {
      await bus.dispatch(OpenAccount.create({ accountId: 'a', owner: 'Ada', holderTaxId: sampleCpf('a') }));
      await bus.dispatch(OpenAccount.create({ accountId: 'b', owner: 'Bob', holderTaxId: sampleCpf('b') }));
      await bus.dispatch(Deposit.create({ accountId: 'a', amount: 100 }));
      await bus.dispatch(Withdraw.create({ accountId: 'a', amount: 30 }));
      await bus.dispatch(TransferMoney.create({ transferId: 't1', from: 'a', to: 'b', amount: 50 }));
      await bus.dispatch(CreatePayment.create({ paymentId: 'p1', accountId: 'a', amount: 20 }));
      await bus.dispatch(CreatePayment.create({ paymentId: 'p2', accountId: 'b', amount: 5 }));
      await bus.dispatch(ConfirmPayment.create({ paymentId: 'p1' }));
      const last = await bus.dispatch(RefundPayment.create({ paymentId: 'p1', reason: 'returned' }));
      await projection.waitFor(last.position!);

      const balances = await projection.collection<BalanceView>('balance');
      assert.deepEqual(await balances.get('a'), {
        accountId: 'a',
        owner: 'Ada',
        balance: '20',
        status: 'open',
        version: 4,
      });
      assert.equal((await balances.get('b'))?.balance, '50');
      const statement = (await (await projection.collection<StatementView>('statement')).get('a'))!;
      assert.deepEqual(
        statement.lines.map((line) => [line.type, line.amount, line.balance]),
        [
          ['MoneyDeposited', '100', '100'],
          ['MoneyWithdrawn', '-30', '70'],
          ['MoneyTransferredOut', '-50', '20'],
        ],
      );
      assert.equal(statement.lines[2]!.counterparty, 'b');
      const p1 = await (await projection.collection<PaymentView>('payment')).get('p1');
      assert.deepEqual([p1?.status, p1?.amount], ['refunded', '20']);
      assert.deepEqual(await (await projection.collection<PaymentCounts>('payment_counts')).get('all'), {
        created: 1,
        confirmed: 0,
        refunded: 1,
      });
    } finally {
      await projection.stop(); // even when an assertion fails, or the file never ends
    }
  });

  it('balances and statements beyond 2^53 are exact to the unit', async () => {
    const { bus, projection } = await bankWithReadModels();
    try {
      await bus.dispatch(OpenAccount.create({ accountId: 'a', owner: 'Ada', holderTaxId: sampleCpf('a') }));
      await bus.dispatch(OpenAccount.create({ accountId: 'b', owner: 'Bob', holderTaxId: sampleCpf('b') }));
      await bus.dispatch(Deposit.create({ accountId: 'a', amount: '9007199254740993' }));
      await bus.dispatch(Deposit.create({ accountId: 'a', amount: 1 }));
      await bus.dispatch(Deposit.create({ accountId: 'a', amount: '123456789012345678901234567890' }));
      await bus.dispatch(
        TransferMoney.create({ transferId: 't', from: 'a', to: 'b', amount: '123456789012345678901234567891' }),
      );
      const last = await bus.dispatch(
        CreatePayment.create({ paymentId: 'p', accountId: 'b', amount: '99999999999999999999' }),
      );
      await projection.waitFor(last.position!);
      const balances = await projection.collection<BalanceView>('balance');
      assert.equal((await balances.get('a'))?.balance, '9007199254740993');
      assert.equal((await balances.get('b'))?.balance, '123456789012345678901234567891');
      const statement = (await (await projection.collection<StatementView>('statement')).get('a'))!;
      assert.deepEqual(
        statement.lines.map((line) => [line.type, line.amount, line.balance]),
        [
          ['MoneyDeposited', '9007199254740993', '9007199254740993'],
          ['MoneyDeposited', '1', '9007199254740994'],
          ['MoneyDeposited', '123456789012345678901234567890', '123456789012354686100489308884'],
          ['MoneyTransferredOut', '-123456789012345678901234567891', '9007199254740993'],
        ],
      );
      assert.equal(
        (await (await projection.collection<PaymentView>('payment')).get('p'))?.amount,
        '99999999999999999999',
      );
    } finally {
      await projection.stop();
    }
  });
});
