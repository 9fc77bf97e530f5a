/**
 * `bank-transfers`: the process manager that carries out a requested transfer (transfer.ts), one instance per
 * transfer (its id), one account at a time:
 *
 * 1. `TransferRequested` → `TransferOut` from the source (refused for insufficient funds, or a source closed or
 *    unknown: → `FailTransfer`, nothing moved);
 * 2. `MoneyTransferredOut` → `TransferIn` to the target (refused, the target closed or unknown: → `RefundTransfer`
 *    to the source, then `MoneyTransferRefunded` → `FailTransfer` with `refunded: true`);
 * 3. `MoneyTransferredIn` → `CompleteTransfer`;
 * 4. `TransferCompleted` or `TransferFailed` → the instance completes.
 *
 * The account events are the same `MoneyTransferredOut` and `MoneyTransferredIn` as a one-transaction `TransferMoney`
 * writes, so statements and balances read both ways alike. They name the transfer in their data (`transferId`), which
 * is how `correlate` finds the instance; an account event is taken only when it is the step the instance waits for,
 * on the account and for the amount it expects, and carries the instance's correlation id (the process stamps it on
 * every command it sends, and the accounts stamp it on the events those commands cause). Anything else (a
 * `TransferMoney` that reused the id, a stray copy) moves nothing.
 *
 * Sent at most once in effect: each command has a deterministic id, sent as its idempotency key, so the bus handles a
 * command the process sends again (after a crash, or an input delivered twice) only once. Between the steps the money
 * is in flight: out of the source and not yet in the target (or back). The sum of the balances is the same as before
 * once the instance completes, whatever the outcome.
 */
import { defineProcess, type ProcessDecision, type ProcessInput, type RecordedEvent } from '@eventline/core';
import { RefundTransfer, TransferIn, TransferOut } from './account.js';
import type { Units } from './money.js';
import { CompleteTransfer, FailTransfer, MAX_TRANSFER_ID_LENGTH } from './transfer.js';

/** The process's name: its subscription, instances, outbox and timers go by it. */
export const TRANSFER_PROCESS = 'bank-transfers';

export interface TransferProcessState {
  /**
   * Where the transfer is: `withdrawing` (TransferOut sent), `depositing` (TransferIn sent), `refunding`
   * (RefundTransfer sent), `completing` / `failing` (CompleteTransfer / FailTransfer sent), then `completed` /
   * `failed`. `new` only before the first input.
   */
  step: 'new' | 'withdrawing' | 'depositing' | 'refunding' | 'completing' | 'failing' | 'completed' | 'failed';
  /** Whether the last input moved the transfer on: decide sends the next step's command only then. */
  moved: boolean;
  transferId: string;
  from: string;
  to: string;
  amount: Units;
  /** The instance's correlation id (of its `TransferRequested`), which the account events it causes carry. */
  correlationId: string;
  /** The refusal that failed the transfer; `refunded` when the money had left the source (and is sent back). */
  failure: { rule: string; reason: string; refunded: boolean } | null;
}

const TRANSFER_STREAM = 'transfer-';
const ACCOUNT_EVENTS = ['MoneyTransferredOut', 'MoneyTransferredIn', 'MoneyTransferRefunded'];

/** The transfer an event belongs to: its stream's id, or the `transferId` of an account event. */
function correlate(event: RecordedEvent): string | null {
  const id = event.streamId.startsWith(TRANSFER_STREAM)
    ? event.streamId.slice(TRANSFER_STREAM.length)
    : ACCOUNT_EVENTS.includes(event.type)
      ? (event.data as { transferId?: unknown }).transferId
      : null;
  // A one-transaction transfer's id may be longer than a requested one's: it is not one of ours.
  return typeof id === 'string' && id.length > 0 && id.length <= MAX_TRANSFER_ID_LENGTH ? id : null;
}

/** An account event is this instance's step when it is on `account`, for its transfer and amount, and caused by it. */
function isOurs(event: RecordedEvent, state: TransferProcessState, account: string): boolean {
  const data = event.data as { transferId?: unknown; amount?: unknown };
  return (
    event.streamId === `account-${account}` &&
    data.transferId === state.transferId &&
    data.amount === state.amount &&
    event.metadata.correlationId === state.correlationId
  );
}

/** The state after an input: the next step when the input is the one the instance waits for, else unchanged. */
export function evolveTransfer(state: TransferProcessState, input: ProcessInput): TransferProcessState {
  const stay = { ...state, moved: false };
  const to = (step: TransferProcessState['step'], change: Partial<TransferProcessState> = {}) => ({
    ...state,
    ...change,
    step,
    moved: true,
  });
  if (input.kind === 'timer') return stay; // the process sets none
  if (input.kind === 'rejected') {
    const failure = { rule: input.error.rule, reason: input.error.message };
    if (state.step === 'withdrawing' && TransferOut.is(input.command))
      return to('failing', { failure: { ...failure, refunded: false } });
    if (state.step === 'depositing' && TransferIn.is(input.command))
      return to('refunding', { failure: { ...failure, refunded: true } });
    return stay; // a refund, completion or failure is not refused by the bank's rules
  }
  const { event } = input;
  switch (event.type) {
    case 'TransferRequested': {
      if (state.step !== 'new') return stay;
      const data = event.data as { from: string; to: string; amount: Units };
      const correlationId = event.metadata.correlationId;
      return to('withdrawing', {
        transferId: event.streamId.slice(TRANSFER_STREAM.length),
        from: data.from,
        to: data.to,
        amount: data.amount,
        // As the process manager gives an instance its correlation id: the starting event's, or the event's id.
        correlationId: typeof correlationId === 'string' ? correlationId : event.id,
      });
    }
    case 'MoneyTransferredOut':
      return state.step === 'withdrawing' && isOurs(event, state, state.from) ? to('depositing') : stay;
    case 'MoneyTransferredIn':
      return state.step === 'depositing' && isOurs(event, state, state.to) ? to('completing') : stay;
    case 'MoneyTransferRefunded':
      return state.step === 'refunding' && isOurs(event, state, state.from) ? to('failing') : stay;
    case 'TransferCompleted':
      return state.step === 'completing' ? to('completed') : stay;
    case 'TransferFailed':
      return state.step === 'failing' ? to('failed') : stay;
    default:
      return stay;
  }
}

/** What to do in a state: the command of the step just entered (nothing when the input moved nothing). */
export function decideTransfer(_input: ProcessInput, state: TransferProcessState): ProcessDecision {
  if (!state.moved) return {};
  const { transferId, from, to, amount, failure } = state;
  switch (state.step) {
    case 'withdrawing':
      return { commands: [TransferOut.create({ accountId: from, transferId, to, amount })] };
    case 'depositing':
      return { commands: [TransferIn.create({ accountId: to, transferId, from, amount })] };
    case 'refunding':
      return {
        commands: [RefundTransfer.create({ accountId: from, transferId, to, amount, reason: failure!.reason })],
      };
    case 'completing':
      return { commands: [CompleteTransfer.create({ transferId })] };
    case 'failing':
      return { commands: [FailTransfer.create({ transferId, ...failure! })] };
    case 'completed':
    case 'failed':
      return { complete: true };
    case 'new':
      return {};
  }
}

/** The transfer process's definition: run it with `createProcessManager` and the bank's `processBus`. */
export const transferProcess = defineProcess<TransferProcessState>({
  name: TRANSFER_PROCESS,
  startedBy: ['TransferRequested'],
  handles: [...ACCOUNT_EVENTS, 'TransferCompleted', 'TransferFailed'],
  correlate,
  initialState: () => ({
    step: 'new',
    moved: false,
    transferId: '',
    from: '',
    to: '',
    amount: '0',
    correlationId: '',
    failure: null,
  }),
  evolve: evolveTransfer,
  decide: decideTransfer,
});
