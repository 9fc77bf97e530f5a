/** The statement model on its own: exact money, and the messages and statements an earlier bank left behind. */
// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatPosition, newId, type RecordedEvent } from '@eventline/core';
import { nextStatement, StatementAmountError, type Statement } from '../src/model.js';

const event = (version: number, type: string, data: unknown): RecordedEvent => ({
  id: newId(),
  type,
  streamId: 'account-ada',
  version,
  position: formatPosition(BigInt(version), 0n),
  recordedAt: new Date(),
  data,
  metadata: {},
});

const build = (events: RecordedEvent[], from: Statement | null = null) =>
  events.reduce<Statement | null>((statement, next) => nextStatement(statement, next) ?? statement, from);

describe('the statement model', () => {
  it('keeps amounts and running balances beyond 2^53 exact, as decimal strings', () => {
    const statement = build([
      event(1, 'AccountOpened', { owner: 'Ada' }),
      event(2, 'MoneyDeposited', { amount: '9007199254740993' }),
      event(3, 'MoneyDeposited', { amount: '1' }),
      event(4, 'MoneyTransferredOut', { transferId: 't', to: 'bob', amount: '9007199254740990' }),
    ]);
    assert.deepEqual(statement, {
      accountId: 'ada',
      version: 4,
      lines: [
        { version: 2, type: 'MoneyDeposited', amount: '9007199254740993', balance: '9007199254740993' },
        { version: 3, type: 'MoneyDeposited', amount: '1', balance: '9007199254740994' },
        { version: 4, type: 'MoneyTransferredOut', amount: '-9007199254740990', balance: '4' },
      ],
    });
  });

  it('reads numeric amounts from older messages and numeric balances from statements stored before', () => {
    const stored: Statement = {
      accountId: 'ada',
      version: 2,
      lines: [
        {
          version: 2,
          type: 'MoneyDeposited',
          amount: 100,
          balance: 9007199254740991,
        } as unknown as Statement['lines'][number],
      ],
    };
    const statement = build(
      [event(3, 'MoneyWithdrawn', { amount: 1 }), event(4, 'MoneyDeposited', { amount: '3' })],
      stored,
    );
    assert.deepEqual(statement?.lines.slice(1), [
      { version: 3, type: 'MoneyWithdrawn', amount: '-1', balance: '9007199254740990' },
      { version: 4, type: 'MoneyDeposited', amount: '3', balance: '9007199254740993' },
    ]);
  });

  it('refuses an amount that is not a whole number of minor units instead of applying it', () => {
    for (const amount of [1.5, 2 ** 53 + 2, '1e3', ' 1', '', '-5', '0', null, '9'.repeat(201)]) {
      assert.throws(
        () => nextStatement(null, event(1, 'MoneyDeposited', { amount })),
        StatementAmountError,
        JSON.stringify(amount),
      );
    }
  });
});
