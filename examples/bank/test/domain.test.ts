import { describe, it } from 'node:test';
import { DomainError } from 'eventline';
import { DeciderSpecification } from 'eventline/testing';
import {
  account,
  AccountClosed,
  AccountOpened,
  CloseAccount,
  ConfirmPayment,
  CreatePayment,
  Deposit,
  MoneyDeposited,
  MoneyTransferredIn,
  MoneyTransferredOut,
  MoneyWithdrawn,
  OpenAccount,
  payment,
  PaymentConfirmed,
  PaymentCreated,
  PaymentRefunded,
  RefundPayment,
  TransferIn,
  TransferOut,
  Withdraw,
} from '../src/index.js';

const rule = (name: string) => (error: DomainError) => error.rule === name;

describe('bank: accounts', () => {
  const spec = DeciderSpecification.for(account);
  const opened = AccountOpened.create({ owner: 'Ada' });
  const a = 'a1';

  it('open, deposit and withdraw within the balance', async () => {
    await spec.given([]).when(OpenAccount.create({ accountId: a, owner: 'Ada' })).then([opened]);
    await spec.given([opened]).when(Deposit.create({ accountId: a, amount: 100 })).then([MoneyDeposited.create({ amount: 100 })]);
    await spec.given([opened, MoneyDeposited.create({ amount: 100 })]).when(Withdraw.create({ accountId: a, amount: 100 })).then([MoneyWithdrawn.create({ amount: 100 })]);
  });

  it('no overdraft, by withdrawal or transfer', async () => {
    await spec.given([opened, MoneyDeposited.create({ amount: 50 })]).when(Withdraw.create({ accountId: a, amount: 51 })).thenThrows(DomainError, rule('INSUFFICIENT_FUNDS'));
    await spec.given([opened]).when(TransferOut.create({ accountId: a, transferId: 't', to: 'b', amount: 1 })).thenThrows(DomainError, rule('INSUFFICIENT_FUNDS'));
  });

  it('transfers move money out of one account and into another', async () => {
    await spec
      .given([opened, MoneyDeposited.create({ amount: 10 })])
      .when(TransferOut.create({ accountId: a, transferId: 't', to: 'b', amount: 10 }))
      .then([MoneyTransferredOut.create({ transferId: 't', to: 'b', amount: 10 })]);
    await spec.given([opened]).when(TransferIn.create({ accountId: a, transferId: 't', from: 'b', amount: 10 })).then([MoneyTransferredIn.create({ transferId: 't', from: 'b', amount: 10 })]);
  });

  it('opening twice is a no-op for the same owner and an error for another', async () => {
    await spec.given([opened]).when(OpenAccount.create({ accountId: a, owner: 'Ada' })).then([]);
    await spec.given([opened]).when(OpenAccount.create({ accountId: a, owner: 'Bob' })).thenThrows(DomainError, rule('ACCOUNT_EXISTS'));
  });

  it('close only when empty; nothing is accepted after closing or before opening', async () => {
    await spec.given([opened, MoneyDeposited.create({ amount: 1 })]).when(CloseAccount.create({ accountId: a })).thenThrows(DomainError, rule('ACCOUNT_NOT_EMPTY'));
    await spec.given([opened]).when(CloseAccount.create({ accountId: a })).then([AccountClosed.create({})]);
    await spec.given([opened, AccountClosed.create({})]).when(Deposit.create({ accountId: a, amount: 1 })).thenThrows(DomainError, rule('ACCOUNT_CLOSED'));
    await spec.given([]).when(Deposit.create({ accountId: a, amount: 1 })).thenThrows(DomainError, rule('ACCOUNT_NOT_FOUND'));
  });
});

describe('bank: payments (created → confirmed → refunded)', () => {
  const spec = DeciderSpecification.for(payment);
  const created = PaymentCreated.create({ accountId: 'a1', amount: 100 });
  const confirmed = PaymentConfirmed.create({});
  const p = 'p1';

  it('follow the life cycle', async () => {
    await spec.given([]).when(CreatePayment.create({ paymentId: p, accountId: 'a1', amount: 100 })).then([created]);
    await spec.given([created]).when(ConfirmPayment.create({ paymentId: p })).then([confirmed]);
    await spec.given([created, confirmed]).when(RefundPayment.create({ paymentId: p, reason: 'damaged' })).then([PaymentRefunded.create({ amount: 100, reason: 'damaged' })]);
  });

  it('enforce the rules of each step', async () => {
    await spec.given([created]).when(CreatePayment.create({ paymentId: p, accountId: 'a1', amount: 5 })).thenThrows(DomainError, rule('PAYMENT_EXISTS'));
    await spec.given([]).when(ConfirmPayment.create({ paymentId: p })).thenThrows(DomainError, rule('PAYMENT_NOT_FOUND'));
    await spec.given([created]).when(RefundPayment.create({ paymentId: p, reason: 'x' })).thenThrows(DomainError, rule('PAYMENT_NOT_CONFIRMED'));
    const refunded = PaymentRefunded.create({ amount: 100, reason: 'x' });
    await spec.given([created, confirmed, refunded]).when(ConfirmPayment.create({ paymentId: p })).thenThrows(DomainError, rule('PAYMENT_REFUNDED'));
  });

  it('repeats are no-ops', async () => {
    await spec.given([created, confirmed]).when(ConfirmPayment.create({ paymentId: p })).then([]);
    await spec.given([created, confirmed, PaymentRefunded.create({ amount: 100, reason: 'x' })]).when(RefundPayment.create({ paymentId: p, reason: 'again' })).then([]);
  });
});
