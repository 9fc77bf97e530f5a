/**
 * A transfer as a process (the other way to move money; `TransferMoney` is the one-transaction way): a `transfer`
 * aggregate (`transfer-<id>` streams) records the request and how it ended, and the `bank-transfers` process manager
 * (transfer-process.ts) moves the money one account at a time, refunding the source when the target refuses it.
 *
 *   RequestTransfer → TransferRequested → (process) TransferOut → MoneyTransferredOut → TransferIn → MoneyTransferredIn
 *   → CompleteTransfer → TransferCompleted; or a refusal → RefundTransfer → MoneyTransferRefunded → FailTransfer →
 *   TransferFailed.
 *
 * Only `RequestTransfer` is for clients (on the bank's `bus`); `CompleteTransfer` and `FailTransfer` are the
 * process's steps (on the bank's `processBus`, with the accounts' `TransferOut`, `TransferIn` and `RefundTransfer`).
 */
import {
  defineAggregate,
  defineCommand,
  defineEvent,
  DomainError,
  streamId,
  ValidationError,
  type CommandOf,
  type EventInputOf,
} from '@eventline/core';
import { z } from 'zod';
import { amount as money, storedAmount, type Units } from './money.js';

/** Longest transfer id: a process instance id holds at most 200 characters. */
export const MAX_TRANSFER_ID_LENGTH = 200;

/** True when `id` names an account whose stream id is valid (checked before a transfer is recorded, not after). */
export function isAccountId(id: unknown): id is string {
  if (typeof id !== 'string' || id.length === 0) return false;
  try {
    streamId('account', id);
    return true;
  } catch {
    return false;
  }
}

const transferId = z
  .string()
  .min(1)
  .max(MAX_TRANSFER_ID_LENGTH)
  .refine((id) => {
    try {
      streamId('transfer', id);
      return true;
    } catch {
      return false;
    }
  }, 'a transfer id is visible characters only (no whitespace, control characters or lone surrogates)');
const accountId = z
  .string()
  .refine(
    isAccountId,
    'an account id is visible characters only (no whitespace, control characters or lone surrogates)',
  );

/** Asks for money to move from one account to another, by the `bank-transfers` process (eventually consistent). */
export const RequestTransfer = defineCommand(
  'RequestTransfer',
  z
    .object({ transferId, from: accountId, to: accountId, amount: money })
    .refine((t) => t.from !== t.to, { message: 'cannot transfer to the same account', path: ['to'] }),
);
/** The process's step: the money arrived at the target. */
export const CompleteTransfer = defineCommand('CompleteTransfer', z.object({ transferId }));
/** The process's step: the transfer did not happen; `refunded` when money had left the source and came back. */
export const FailTransfer = defineCommand(
  'FailTransfer',
  z.object({ transferId, rule: z.string(), reason: z.string(), refunded: z.boolean() }),
);

export const TransferRequested = defineEvent(
  'TransferRequested',
  z.object({ from: z.string(), to: z.string(), amount: storedAmount }),
);
export const TransferCompleted = defineEvent('TransferCompleted', z.object({}));
/** `rule`: the refusal's rule (`INSUFFICIENT_FUNDS`, `ACCOUNT_CLOSED`, ...); `reason`: its message. */
export const TransferFailed = defineEvent(
  'TransferFailed',
  z.object({ rule: z.string(), reason: z.string(), refunded: z.boolean() }),
);
export const transferEvents = [TransferRequested, TransferCompleted, TransferFailed];

export type TransferCommand = CommandOf<typeof RequestTransfer | typeof CompleteTransfer | typeof FailTransfer>;
export type TransferEvent = EventInputOf<(typeof transferEvents)[number]>;

export interface TransferState {
  status: 'none' | 'requested' | 'completed' | 'failed';
  from: string;
  to: string;
  /** Minor units as a decimal string ('0' before the request). */
  amount: Units;
  /** Why it failed (the refusal's rule and message), once it has. */
  failure: { rule: string; reason: string; refunded: boolean } | null;
}

export const transfer = defineAggregate<TransferState, TransferCommand, TransferEvent>({
  category: 'transfer',
  initialState: () => ({ status: 'none', from: '', to: '', amount: '0', failure: null }),
  decide(command, state) {
    const id = command.data.transferId;
    if (RequestTransfer.is(command)) {
      const { from, to } = command.data;
      // Also for a command handed to the decider without the bus's validation: the process must be able to send
      // its commands to these accounts.
      if (!isAccountId(from) || !isAccountId(to) || from === to)
        throw new ValidationError(`RequestTransfer ${id}: from and to must be two valid, different account ids`);
      const amount = BigInt(command.data.amount).toString();
      if (state.status === 'none') return TransferRequested.create({ from, to, amount });
      // The same request again is a no-op; another one under this id is refused.
      if (state.from === from && state.to === to && state.amount === amount) return [];
      throw new DomainError(
        `transfer ${id} already exists (from ${state.from} to ${state.to}, ${state.amount}): use a new transfer id`,
        'TRANSFER_EXISTS',
      );
    }
    if (state.status === 'none') throw new DomainError(`transfer ${id} does not exist`, 'TRANSFER_NOT_FOUND');
    if (CompleteTransfer.is(command)) {
      if (state.status === 'requested') return TransferCompleted.create({});
      if (state.status === 'completed') return [];
      throw new DomainError(`transfer ${id} has failed and cannot complete`, 'TRANSFER_FAILED');
    }
    const { rule, reason, refunded } = command.data;
    if (state.status === 'requested') return TransferFailed.create({ rule, reason, refunded });
    if (state.status === 'failed') return [];
    throw new DomainError(`transfer ${id} has completed and cannot fail`, 'TRANSFER_COMPLETED');
  },
  evolve(state, event) {
    switch (event.type) {
      case 'TransferRequested':
        return { ...state, status: 'requested', ...event.data };
      case 'TransferCompleted':
        return { ...state, status: 'completed' };
      case 'TransferFailed':
        return { ...state, status: 'failed', failure: event.data };
    }
  },
});
