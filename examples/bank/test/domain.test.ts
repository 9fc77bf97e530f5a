// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createInMemoryStore,
  DomainError,
  formatPosition,
  newId,
  ValidationError,
  type RecordedEvent,
} from '@eventline/core';
import { DeciderSpecification } from '@eventline/core/testing';
import {
  account,
  amount,
  bankEvents,
  createBank,
  MAX_AMOUNT_DIGITS,
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
  formatCpf,
  parseCpf,
  sampleCpf,
  payment,
  PaymentConfirmed,
  PaymentCreated,
  PaymentRefunded,
  RefundPayment,
  TransferIn,
  TransferMoney,
  TransferOut,
  Withdraw,
  type AccountEvent,
} from '../src/index.js';

const rule = (name: string) => (error: DomainError) => error.rule === name;

describe('bank: accounts', () => {
  const spec = DeciderSpecification.for(account);
  const a = 'a1';
  const opened = AccountOpened.create({ owner: 'Ada', holderTaxId: parseCpf(sampleCpf(a))! });

  it('open, deposit and withdraw within the balance', async () => {
    await spec
      .given([])
      .when(OpenAccount.create({ accountId: a, owner: 'Ada', holderTaxId: sampleCpf(a) }))
      .then([opened]);
    await spec
      .given([opened])
      .when(Deposit.create({ accountId: a, amount: '100' }))
      .then([MoneyDeposited.create({ amount: '100' })]);
    await spec
      .given([opened, MoneyDeposited.create({ amount: '100' })])
      .when(Withdraw.create({ accountId: a, amount: '100' }))
      .then([MoneyWithdrawn.create({ amount: '100' })]);
  });

  it('no overdraft, by withdrawal or transfer', async () => {
    await spec
      .given([opened, MoneyDeposited.create({ amount: '50' })])
      .when(Withdraw.create({ accountId: a, amount: '51' }))
      .thenThrows(DomainError, rule('INSUFFICIENT_FUNDS'));
    await spec
      .given([opened])
      .when(TransferOut.create({ accountId: a, transferId: 't', to: 'b', amount: '1' }))
      .thenThrows(DomainError, rule('INSUFFICIENT_FUNDS'));
  });

  it('transfers move money out of one account and into another', async () => {
    await spec
      .given([opened, MoneyDeposited.create({ amount: '10' })])
      .when(TransferOut.create({ accountId: a, transferId: 't', to: 'b', amount: '10' }))
      .then([MoneyTransferredOut.create({ transferId: 't', to: 'b', amount: '10' })]);
    await spec
      .given([opened])
      .when(TransferIn.create({ accountId: a, transferId: 't', from: 'b', amount: '10' }))
      .then([MoneyTransferredIn.create({ transferId: 't', from: 'b', amount: '10' })]);
  });

  it('opening twice is a no-op for the same owner and an error for another', async () => {
    await spec
      .given([opened])
      .when(OpenAccount.create({ accountId: a, owner: 'Ada', holderTaxId: sampleCpf(a) }))
      .then([]);
    await spec
      .given([opened])
      .when(OpenAccount.create({ accountId: a, owner: 'Bob', holderTaxId: sampleCpf(a) }))
      .thenThrows(DomainError, rule('ACCOUNT_EXISTS'));
    await spec
      .given([opened])
      .when(OpenAccount.create({ accountId: a, owner: 'Ada', holderTaxId: sampleCpf('another') }))
      .thenThrows(DomainError, rule('ACCOUNT_EXISTS'));
    await spec
      .given([])
      .when(OpenAccount.create({ accountId: a, owner: 'Ada', holderTaxId: '123.456.789-00' }))
      .thenThrows(ValidationError);
    // Given as the formatted CPF, kept as its digits.
    await spec
      .given([])
      .when(OpenAccount.create({ accountId: a, owner: 'Ada', holderTaxId: formatCpf(parseCpf(sampleCpf(a))!) }))
      .then([opened]);
  });

  it('close only when empty; nothing is accepted after closing or before opening', async () => {
    await spec
      .given([opened, MoneyDeposited.create({ amount: '1' })])
      .when(CloseAccount.create({ accountId: a }))
      .thenThrows(DomainError, rule('ACCOUNT_NOT_EMPTY'));
    await spec
      .given([opened])
      .when(CloseAccount.create({ accountId: a }))
      .then([AccountClosed.create({})]);
    await spec
      .given([opened, AccountClosed.create({})])
      .when(Deposit.create({ accountId: a, amount: '1' }))
      .thenThrows(DomainError, rule('ACCOUNT_CLOSED'));
    await spec
      .given([])
      .when(Deposit.create({ accountId: a, amount: '1' }))
      .thenThrows(DomainError, rule('ACCOUNT_NOT_FOUND'));
  });
});

describe('bank: payments (created → confirmed → refunded)', () => {
  const spec = DeciderSpecification.for(payment);
  const created = PaymentCreated.create({ accountId: 'a1', amount: '100' });
  const confirmed = PaymentConfirmed.create({});
  const p = 'p1';

  it('follow the life cycle', async () => {
    await spec
      .given([])
      .when(CreatePayment.create({ paymentId: p, accountId: 'a1', amount: '100' }))
      .then([created]);
    await spec
      .given([created])
      .when(ConfirmPayment.create({ paymentId: p }))
      .then([confirmed]);
    await spec
      .given([created, confirmed])
      .when(RefundPayment.create({ paymentId: p, reason: 'damaged' }))
      .then([PaymentRefunded.create({ amount: '100', reason: 'damaged' })]);
  });

  it('enforce the rules of each step', async () => {
    await spec
      .given([created])
      .when(CreatePayment.create({ paymentId: p, accountId: 'a1', amount: '5' }))
      .thenThrows(DomainError, rule('PAYMENT_EXISTS'));
    await spec
      .given([])
      .when(ConfirmPayment.create({ paymentId: p }))
      .thenThrows(DomainError, rule('PAYMENT_NOT_FOUND'));
    await spec
      .given([created])
      .when(RefundPayment.create({ paymentId: p, reason: 'x' }))
      .thenThrows(DomainError, rule('PAYMENT_NOT_CONFIRMED'));
    const refunded = PaymentRefunded.create({ amount: '100', reason: 'x' });
    await spec
      .given([created, confirmed, refunded])
      .when(ConfirmPayment.create({ paymentId: p }))
      .thenThrows(DomainError, rule('PAYMENT_REFUNDED'));
  });

  it('repeats are no-ops', async () => {
    await spec
      .given([created, confirmed])
      .when(ConfirmPayment.create({ paymentId: p }))
      .then([]);
    await spec
      .given([created, confirmed, PaymentRefunded.create({ amount: '100', reason: 'x' })])
      .when(RefundPayment.create({ paymentId: p, reason: 'again' }))
      .then([]);
  });
});

/** Beyond 2^53 - 1 a JS number skips odd values: 9007199254740993 is not one, and +1 on 2^53 gives 2^53 again. */
const BEYOND = '9007199254740993';

describe('bank: money is exact at any size', () => {
  const spec = DeciderSpecification.for(account);
  const opened = AccountOpened.create({ owner: 'Ada' });
  const balanceOf = (events: AccountEvent[]) => events.reduce(account.evolve, account.initialState()).balance;

  it('deposits whose sum is beyond 2^53 give the exact balance, and withdrawals are decided on it', async () => {
    const deposits = [opened, MoneyDeposited.create({ amount: BEYOND }), MoneyDeposited.create({ amount: '1' })];
    assert.equal(balanceOf(deposits), '9007199254740994');
    const huge = '123456789012345678901234567890';
    assert.equal(
      balanceOf([
        opened,
        MoneyDeposited.create({ amount: huge }),
        MoneyDeposited.create({ amount: huge }),
        MoneyWithdrawn.create({ amount: '1' }),
      ]),
      '246913578024691357802469135779',
    );
    await spec
      .given(deposits)
      .when(Withdraw.create({ accountId: 'a1', amount: '9007199254740994' }))
      .then([MoneyWithdrawn.create({ amount: '9007199254740994' })]);
    await spec
      .given(deposits)
      .when(Withdraw.create({ accountId: 'a1', amount: '9007199254740995' }))
      .thenThrows(
        DomainError,
        (error) =>
          error.rule === 'INSUFFICIENT_FUNDS' &&
          error.message === 'insufficient funds in account a1: balance 9007199254740994, asked 9007199254740995' &&
          JSON.stringify(error.details) === JSON.stringify({ balance: '9007199254740994', amount: '9007199254740995' }),
      );
    await spec
      .given([...deposits, MoneyWithdrawn.create({ amount: '9007199254740993' })])
      .when(CloseAccount.create({ accountId: 'a1' }))
      .thenThrows(
        DomainError,
        (error) => error.rule === 'ACCOUNT_NOT_EMPTY' && JSON.stringify(error.details) === '{"balance":"1"}',
      );
  });

  it('amounts come in as safe integers or digit strings and are kept as decimal strings', () => {
    const accepted: Array<[unknown, string]> = [
      [100, '100'],
      [Number.MAX_SAFE_INTEGER, '9007199254740991'],
      ['100', '100'],
      [BEYOND, BEYOND],
      ['9'.repeat(MAX_AMOUNT_DIGITS), '9'.repeat(MAX_AMOUNT_DIGITS)],
    ];
    for (const [input, output] of accepted)
      assert.deepEqual(amount.safeParse(input), { success: true, data: output }, JSON.stringify(input));
    const refused: Array<[unknown, RegExp]> = [
      [2 ** 53 + 1, /send the amount as a string of digits/], // the JSON 9007199254740993 reads as 9007199254740992
      [2 ** 53, /beyond 2\^53 - 1/],
      [1e21, /send the amount as a string/],
      [1.5, /whole number/],
      [0, /positive/],
      [-5, /positive/],
      ['0', /positive/],
      ['007', /leading zeros/],
      ['-5', /digits only/],
      ['+5', /digits only/],
      ['1.0', /digits only/],
      ['1e5', /digits only/],
      [' 5', /digits only/],
      ['', /digits only/],
      ['1'.repeat(MAX_AMOUNT_DIGITS + 1), /at most 100 digits/],
      ['1'.repeat(1_000_000), /at most 100 digits/],
      [true, /a JSON safe integer \(100\) or a string of digits/],
      [null, /a JSON safe integer/],
      [5n, /a JSON safe integer/],
    ];
    for (const [input, message] of refused) {
      const result = amount.safeParse(input);
      assert.equal(
        result.success,
        false,
        `${typeof input === 'string' ? input.slice(0, 20) : String(input)} was accepted`,
      );
      assert.match(result.error!.issues[0]!.message, message);
    }
  });

  it('the bus refuses an amount that is not exact with a ValidationError naming the field, and takes digit strings', async () => {
    const { bus, accounts } = createBank(createInMemoryStore({ events: bankEvents }));
    await bus.dispatch(OpenAccount.create({ accountId: 'a', owner: 'Ada', holderTaxId: sampleCpf('a') }));
    await bus.dispatch(OpenAccount.create({ accountId: 'b', owner: 'Bob', holderTaxId: sampleCpf('b') }));
    for (const command of [
      Deposit.create({ accountId: 'a', amount: 2 ** 53 + 1 }),
      Withdraw.create({ accountId: 'a', amount: '01' }),
      TransferMoney.create({ from: 'a', to: 'b', amount: 1.5 }),
      CreatePayment.create({ paymentId: 'p', accountId: 'a', amount: '1e3' }),
    ]) {
      await assert.rejects(bus.dispatch(command), (error: unknown) => {
        assert.ok(error instanceof ValidationError, String(error));
        assert.deepEqual(error.issues[0]!.path, ['amount']);
        return true;
      });
    }
    await assert.rejects(
      bus.dispatch(Deposit.create({ accountId: 'a', amount: 9007199254740992 })),
      /send the amount as a string of digits/,
    );
    await bus.dispatch(Deposit.create({ accountId: 'a', amount: BEYOND }));
    await bus.dispatch(Deposit.create({ accountId: 'a', amount: 1 }));
    await bus.dispatch(TransferMoney.create({ from: 'a', to: 'b', amount: '9007199254740990' }));
    assert.equal((await accounts.load('a')).state.balance, '4');
    assert.equal((await accounts.load('b')).state.balance, '9007199254740990');
  });

  it('events stored with numeric amounts (schema version 1) are read with decimal strings', () => {
    const stored = (type: string, data: unknown, schemaVersion?: number): RecordedEvent => ({
      id: newId(),
      type,
      streamId: type.startsWith('Payment') ? 'payment-p' : 'account-a',
      version: 1,
      position: formatPosition(1n, 1n),
      recordedAt: new Date(),
      data,
      metadata: schemaVersion === undefined ? {} : { schemaVersion },
    });
    const cases: Array<[RecordedEvent, unknown]> = [
      [stored('MoneyDeposited', { amount: 100 }, 1), { amount: '100' }],
      [stored('MoneyWithdrawn', { amount: 9007199254740991 }), { amount: '9007199254740991' }],
      [
        stored('MoneyTransferredOut', { transferId: 't', to: 'b', amount: 5 }, 1),
        { transferId: 't', to: 'b', amount: '5' },
      ],
      [
        stored('MoneyTransferredIn', { transferId: 't', from: 'b', amount: 5 }, 1),
        { transferId: 't', from: 'b', amount: '5' },
      ],
      [stored('PaymentCreated', { accountId: 'a', amount: 20 }, 1), { accountId: 'a', amount: '20' }],
      [stored('PaymentRefunded', { amount: 20, reason: 'x' }, 1), { amount: '20', reason: 'x' }],
      [stored('MoneyDeposited', { amount: BEYOND }, 2), { amount: BEYOND }],
    ];
    for (const [event, data] of cases) {
      const read = bankEvents.upcast(event);
      assert.deepEqual(read.data, data, event.type);
      assert.equal(read.metadata.schemaVersion, 2);
    }
    const old = [
      stored('AccountOpened', { owner: 'Ada' }, 1),
      cases[0]![0],
      stored('MoneyDeposited', { amount: 9007199254740991 }, 1),
    ];
    assert.equal(
      old
        .map((event) => bankEvents.upcast(event) as unknown as AccountEvent)
        .reduce(account.evolve, account.initialState()).balance,
      '9007199254741091',
    );
  });
});
