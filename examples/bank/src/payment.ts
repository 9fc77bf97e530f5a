/** Payments, with the article's life cycle: created → confirmed → refunded. */
import {
  defineAggregate,
  defineCommand,
  defineEvent,
  DomainError,
  type CommandOf,
  type EventInputOf,
} from '@eventline/core';
import { z } from 'zod';
import { amount, moneyEventVersions, storedAmount, type Units } from './money.js';

export const CreatePayment = defineCommand(
  'CreatePayment',
  z.object({ paymentId: z.string().min(1), accountId: z.string().min(1), amount }),
);
export const ConfirmPayment = defineCommand('ConfirmPayment', z.object({ paymentId: z.string().min(1) }));
export const RefundPayment = defineCommand(
  'RefundPayment',
  z.object({ paymentId: z.string().min(1), reason: z.string().min(1) }),
);

// Amounts as in the accounts (money.ts): decimal strings in events (schema version 2; v1 held numbers, upcast).
export const PaymentCreated = defineEvent(
  'PaymentCreated',
  z.object({ accountId: z.string(), amount: storedAmount }),
  moneyEventVersions,
);
export const PaymentConfirmed = defineEvent('PaymentConfirmed', z.object({}));
export const PaymentRefunded = defineEvent(
  'PaymentRefunded',
  z.object({ amount: storedAmount, reason: z.string() }),
  moneyEventVersions,
);
export const paymentEvents = [PaymentCreated, PaymentConfirmed, PaymentRefunded];

export type PaymentCommand = CommandOf<typeof CreatePayment | typeof ConfirmPayment | typeof RefundPayment>;
export type PaymentEvent = EventInputOf<(typeof paymentEvents)[number]>;
export interface PaymentState {
  status: 'none' | 'created' | 'confirmed' | 'refunded';
  /** Minor units as a decimal string ('0' before the payment is created). */
  amount: Units;
}

export const payment = defineAggregate<PaymentState, PaymentCommand, PaymentEvent>({
  category: 'payment',
  initialState: () => ({ status: 'none', amount: '0' }),
  decide(command, state) {
    const id = command.data.paymentId;
    if (CreatePayment.is(command)) {
      if (state.status === 'none')
        return PaymentCreated.create({
          accountId: command.data.accountId,
          amount: BigInt(command.data.amount).toString(),
        });
      throw new DomainError(`payment ${id} already exists`, 'PAYMENT_EXISTS');
    }
    if (state.status === 'none') throw new DomainError(`payment ${id} does not exist`, 'PAYMENT_NOT_FOUND');
    if (ConfirmPayment.is(command)) {
      if (state.status === 'created') return PaymentConfirmed.create({});
      if (state.status === 'confirmed') return []; // confirming twice is a no-op
      throw new DomainError(`payment ${id} was refunded and can no longer be confirmed`, 'PAYMENT_REFUNDED');
    }
    if (state.status === 'created')
      throw new DomainError(
        `payment ${id} is not confirmed yet: only a confirmed payment can be refunded`,
        'PAYMENT_NOT_CONFIRMED',
      );
    if (state.status === 'refunded') return []; // refunding twice is a no-op
    return PaymentRefunded.create({ amount: state.amount, reason: command.data.reason });
  },
  evolve(state, event) {
    switch (event.type) {
      case 'PaymentCreated':
        return { status: 'created', amount: event.data.amount };
      case 'PaymentConfirmed':
        return { ...state, status: 'confirmed' };
      case 'PaymentRefunded':
        return { ...state, status: 'refunded' };
    }
  },
});
