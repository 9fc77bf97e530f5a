/** The statement service's read model: an account's movements with the running balance, built event by event. */
import type { RecordedEvent } from 'eventline';

export interface StatementLine {
  version: number;
  type: string;
  amount: number;
  balance: number;
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

const SIGN: Record<string, number> = { MoneyDeposited: 1, MoneyTransferredIn: 1, MoneyWithdrawn: -1, MoneyTransferredOut: -1 };

/** The next statement after an account event (null: nothing to do, the event is already in it). */
export function nextStatement(current: Statement | null, event: RecordedEvent): Statement | null {
  const accountId = event.streamId.slice('account-'.length);
  const statement = current ?? { accountId, version: 0, lines: [] };
  if (event.version <= statement.version) return null;
  if (event.version !== statement.version + 1) throw new StatementGapError(accountId, statement.version + 1, event.version);
  const sign = SIGN[event.type];
  if (sign === undefined) return { ...statement, version: event.version };
  const amount = sign * (event.data as { amount: number }).amount;
  const balance = (statement.lines.at(-1)?.balance ?? 0) + amount;
  return { accountId, version: event.version, lines: [...statement.lines, { version: event.version, type: event.type, amount, balance }] };
}
