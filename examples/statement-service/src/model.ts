/**
 * The statement service's read model: an account's movements with the running balance, built event by event.
 *
 * Money is exact: the bank's events carry amounts as decimal strings of minor units (cents), and the statement keeps
 * them so, added through BigInt, so a balance beyond 2^53 is right to the unit. A line's amount is signed (`"-30"` for
 * money out); its balance is the running total. Messages an earlier bank published (still on the bus, or replayed from
 * a log it wrote) carry amounts as JSON numbers, and statements stored before hold numbers: both are read too.
 */
import type { RecordedEvent } from '@eventline/core';

export interface StatementLine {
  version: number;
  type: string;
  /** The movement in minor units, a signed decimal string. */
  amount: string;
  /** The running balance after this movement, in minor units (a decimal string). */
  balance: string;
}

export interface Statement {
  accountId: string;
  /** The account stream's version of the last event applied. */
  version: number;
  lines: StatementLine[];
}

/** An account event that comes before one still missing: applied once the missing one arrives (it is retried). */
export class StatementGapError extends Error {
  readonly code = 'STATEMENT_GAP';
  constructor(accountId: string, expected: number, got: number) {
    super(`account ${accountId}: event ${got} arrived before event ${expected}; retried until ${expected} is applied`);
  }
}

/** An amount that is not a whole number of minor units: never applied (it would make the ledger wrong). */
export class StatementAmountError extends Error {
  readonly code = 'STATEMENT_AMOUNT';
  constructor(what: string, amount: unknown) {
    super(`${what}: amount ${String(JSON.stringify(amount)).slice(0, 40)} is not a whole number of minor units`);
  }
}

const SIGN: Record<string, bigint> = {
  MoneyDeposited: 1n,
  MoneyTransferredIn: 1n,
  MoneyWithdrawn: -1n,
  MoneyTransferredOut: -1n,
};

/**
 * Minor units from a decimal string or a safe-integer number (older messages and statements), else null. An event's
 * amount is bounded (the bank sends at most 100 digits) so a hostile message cannot make a huge BigInt.
 */
function units(value: unknown, maxDigits = Infinity): bigint | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? BigInt(value) : null;
  if (typeof value !== 'string' || !/^-?[0-9]+$/.test(value)) return null;
  return value.length - (value.startsWith('-') ? 1 : 0) <= maxDigits ? BigInt(value) : null;
}

/** The next statement after an account event (null: nothing to do, the event is already in it). */
export function nextStatement(current: Statement | null, event: RecordedEvent): Statement | null {
  const accountId = event.streamId.slice('account-'.length);
  const statement = current ?? { accountId, version: 0, lines: [] };
  if (event.version <= statement.version) return null;
  if (event.version !== statement.version + 1)
    throw new StatementGapError(accountId, statement.version + 1, event.version);
  const sign = SIGN[event.type];
  if (sign === undefined) return { ...statement, version: event.version };
  const given = (event.data as { amount?: unknown } | null)?.amount;
  const moved = units(given, 200);
  if (moved === null || moved <= 0n)
    throw new StatementAmountError(
      `event ${event.id} (${event.type}, ${event.streamId} version ${event.version})`,
      given,
    );
  const amount = sign * moved;
  const before = statement.lines.at(-1)?.balance ?? '0';
  const previous = units(before);
  if (previous === null)
    throw new StatementAmountError(
      `the statement of account ${accountId}, balance at version ${statement.version}`,
      before,
    );
  const balance = previous + amount;
  const line = { version: event.version, type: event.type, amount: amount.toString(), balance: balance.toString() };
  return { accountId, version: event.version, lines: [...statement.lines, line] };
}
