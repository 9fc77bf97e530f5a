/**
 * Accounts: open (with the holder's CPF, unique among open accounts), deposit, withdraw (never below zero), close
 * (only when empty, which frees the CPF), the two halves of a transfer, and the refund of a transfer that failed.
 */
import {
  defineAggregate,
  defineCommand,
  defineEvent,
  DomainError,
  ValidationError,
  type CommandOf,
  type EventInputOf,
} from '@eventline/core';
import { z } from 'zod';
import { cpf, parseCpf } from './cpf.js';
import { amount as money, isMore, minus, moneyEventVersions, plus, storedAmount, type Units } from './money.js';

// Amounts are exact minor units (cents) as decimal strings: see money.ts. Commands take a safe integer or a string of
// digits; events and state keep decimal strings; money events are at schema version 2 (v1 held numbers, upcast).

export const OpenAccount = defineCommand(
  'OpenAccount',
  z.object({ accountId: z.string().min(1), owner: z.string().min(1), holderTaxId: cpf }),
);
export const Deposit = defineCommand('Deposit', z.object({ accountId: z.string().min(1), amount: money }));
export const Withdraw = defineCommand('Withdraw', z.object({ accountId: z.string().min(1), amount: money }));
export const CloseAccount = defineCommand('CloseAccount', z.object({ accountId: z.string().min(1) }));
/** Internal: the halves of a transfer, sent by the transfer handler inside one transaction. */
export const TransferOut = defineCommand(
  'TransferOut',
  z.object({ accountId: z.string(), transferId: z.string(), to: z.string(), amount: money }),
);
export const TransferIn = defineCommand(
  'TransferIn',
  z.object({ accountId: z.string(), transferId: z.string(), from: z.string(), amount: money }),
);

/**
 * Internal: money of a transfer out of this account coming back, because the transfer could not finish (the target
 * refused it). Sent by the `bank-transfers` process only. Taken by a closed account too: see the decider.
 */
export const RefundTransfer = defineCommand(
  'RefundTransfer',
  z.object({ accountId: z.string(), transferId: z.string(), to: z.string(), amount: money, reason: z.string() }),
);

/** `holderTaxId`: the CPF's 11 digits; absent from accounts opened before the bank kept CPFs. */
export const AccountOpened = defineEvent(
  'AccountOpened',
  z.object({
    owner: z.string(),
    holderTaxId: z
      .string()
      .regex(/^\d{11}$/)
      .optional(),
  }),
);
export const MoneyDeposited = defineEvent('MoneyDeposited', z.object({ amount: storedAmount }), moneyEventVersions);
export const MoneyWithdrawn = defineEvent('MoneyWithdrawn', z.object({ amount: storedAmount }), moneyEventVersions);
export const MoneyTransferredOut = defineEvent(
  'MoneyTransferredOut',
  z.object({ transferId: z.string(), to: z.string(), amount: storedAmount }),
  moneyEventVersions,
);
export const MoneyTransferredIn = defineEvent(
  'MoneyTransferredIn',
  z.object({ transferId: z.string(), from: z.string(), amount: storedAmount }),
  moneyEventVersions,
);
/** Money of a transfer out (to `to`) back in this account: the transfer failed after the money left. */
export const MoneyTransferRefunded = defineEvent(
  'MoneyTransferRefunded',
  z.object({ transferId: z.string(), to: z.string(), amount: storedAmount, reason: z.string() }),
);
export const AccountClosed = defineEvent('AccountClosed', z.object({}));
export const accountEvents = [
  AccountOpened,
  MoneyDeposited,
  MoneyWithdrawn,
  MoneyTransferredOut,
  MoneyTransferredIn,
  MoneyTransferRefunded,
  AccountClosed,
];

export type AccountCommand = CommandOf<
  | typeof OpenAccount
  | typeof Deposit
  | typeof Withdraw
  | typeof CloseAccount
  | typeof TransferOut
  | typeof TransferIn
  | typeof RefundTransfer
>;
export type AccountEvent = EventInputOf<(typeof accountEvents)[number]>;

export interface AccountState {
  status: 'new' | 'open' | 'closed';
  owner: string | null;
  /** The holder's CPF (11 digits); null before opening, and for accounts opened before the bank kept CPFs. */
  holderTaxId: string | null;
  /** Minor units as a decimal string (exact at any size, and JSON for snapshots and the state cache). */
  balance: Units;
}

export const account = defineAggregate<AccountState, AccountCommand, AccountEvent>({
  category: 'account',
  // State version 3: the holder's CPF is kept (2 had none; in 1 the balance was a number): older snapshots are ignored
  // and replaced.
  snapshots: { every: 100, stateVersion: 3 },
  initialState: () => ({ status: 'new', owner: null, holderTaxId: null, balance: '0' }),
  decide(command, state) {
    if (OpenAccount.is(command)) {
      const { owner } = command.data;
      // The CPF's digits, also for a command handed to the decider without the bus's validation.
      const holderTaxId = parseCpf(command.data.holderTaxId);
      if (holderTaxId === null)
        throw new ValidationError(`OpenAccount ${command.data.accountId}: holderTaxId is not a valid CPF`);
      if (state.status === 'new') return AccountOpened.create({ owner, holderTaxId });
      // A repeat is a no-op.
      if (state.status === 'open' && state.owner === owner && state.holderTaxId === holderTaxId) return [];
      throw new DomainError(`account ${command.data.accountId} already exists`, 'ACCOUNT_EXISTS');
    }
    if (state.status === 'new')
      throw new DomainError(`account ${command.data.accountId} does not exist`, 'ACCOUNT_NOT_FOUND');
    // A refund is never refused: the money left this account for a transfer that did not happen, and refusing it
    // would lose it. The account may have been closed meanwhile (emptied by the transfer itself): it then holds the
    // refund, closed, and the balance read model shows a closed account with money for the bank to give back.
    if (RefundTransfer.is(command)) {
      const { transferId, to, reason } = command.data;
      return MoneyTransferRefunded.create({ transferId, to, amount: BigInt(command.data.amount).toString(), reason });
    }
    if (state.status === 'closed')
      throw new DomainError(`account ${command.data.accountId} is closed`, 'ACCOUNT_CLOSED');
    if (CloseAccount.is(command)) {
      if (state.balance !== '0')
        throw new DomainError(
          `account ${command.data.accountId} still holds ${state.balance}; withdraw it first`,
          'ACCOUNT_NOT_EMPTY',
          { balance: state.balance },
        );
      return AccountClosed.create({});
    }
    // The canonical decimal string, also for a command handed to the decider without the bus's validation.
    const amount = BigInt(command.data.amount).toString();
    if (Deposit.is(command)) return MoneyDeposited.create({ amount });
    if (TransferIn.is(command))
      return MoneyTransferredIn.create({ transferId: command.data.transferId, from: command.data.from, amount });
    if (isMore(amount, state.balance)) {
      throw new DomainError(
        `insufficient funds in account ${command.data.accountId}: balance ${state.balance}, asked ${amount}`,
        'INSUFFICIENT_FUNDS',
        { balance: state.balance, amount },
      );
    }
    if (Withdraw.is(command)) return MoneyWithdrawn.create({ amount });
    return MoneyTransferredOut.create({ transferId: command.data.transferId, to: command.data.to, amount });
  },
  evolve(state, event) {
    switch (event.type) {
      case 'AccountOpened':
        return { ...state, status: 'open', owner: event.data.owner, holderTaxId: event.data.holderTaxId ?? null };
      case 'MoneyDeposited':
      case 'MoneyTransferredIn':
      case 'MoneyTransferRefunded':
        return { ...state, balance: plus(state.balance, event.data.amount) };
      case 'MoneyWithdrawn':
      case 'MoneyTransferredOut':
        return { ...state, balance: minus(state.balance, event.data.amount) };
      case 'AccountClosed':
        return { ...state, status: 'closed' };
    }
  },
});
