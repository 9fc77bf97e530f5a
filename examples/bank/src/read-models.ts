/**
 * The bank's read models, from the article: the balance of each account, its statement (every movement with the
 * running balance) and payments by status. One projection; bump its version when a handler changes, and it is
 * rebuilt blue/green.
 *
 * Money is exact (see money.ts): amounts and balances are decimal strings of minor units, added through BigInt, so a
 * balance beyond 2^53 is still right to the cent. A statement line's amount is signed ("-30" for money out). Version 2
 * of the projection holds strings where version 1 held numbers; the version bump rebuilds it from the log, whose older
 * events (numeric amounts) are upcast on the way.
 */
import { defineProjection, type ProjectionDocuments, type RecordedEvent } from '@eventline/core';
import { minus, plus, type Units } from './money.js';

type Documents = <T>(name: string) => ProjectionDocuments<T>;

export interface BalanceView {
  accountId: string;
  owner: string;
  /** Minor units, a decimal string. */
  balance: Units;
  status: 'open' | 'closed';
  version: number;
}

export interface StatementLine {
  version: number;
  type: string;
  /** The movement in minor units, signed: `"100"` in, `"-30"` out. */
  amount: string;
  /** The running balance after this movement, in minor units. */
  balance: Units;
  at: string;
  transferId?: string;
  counterparty?: string;
}

export interface StatementView {
  accountId: string;
  lines: StatementLine[];
}

export interface PaymentView {
  paymentId: string;
  accountId: string;
  /** Minor units, a decimal string. */
  amount: Units;
  status: 'created' | 'confirmed' | 'refunded';
  updatedAt: string;
}

export interface PaymentCounts {
  created: number;
  confirmed: number;
  refunded: number;
}

const accountIdOf = (event: RecordedEvent) => event.streamId.slice('account-'.length);
const paymentIdOf = (event: RecordedEvent) => event.streamId.slice('payment-'.length);

/** A signed movement: what it does to the balance, as a decimal string. */
function movement(event: RecordedEvent): StatementLine['amount'] | null {
  const amount = (event.data as { amount: Units }).amount;
  switch (event.type) {
    case 'MoneyDeposited':
    case 'MoneyTransferredIn':
    case 'MoneyTransferRefunded':
      return plus(0, amount);
    case 'MoneyWithdrawn':
    case 'MoneyTransferredOut':
      return minus(0, amount);
    default:
      return null;
  }
}

const applyMovement = async (event: RecordedEvent, documents: Documents) => {
  const amount = movement(event)!;
  const id = accountIdOf(event);
  await documents<BalanceView>('balance').update(id, (current) => ({
    accountId: id,
    owner: current?.owner ?? '',
    status: current?.status ?? 'open',
    balance: plus(current?.balance ?? 0, amount),
    version: event.version,
  }));
  const data = event.data as { transferId?: string; to?: string; from?: string };
  await documents<StatementView>('statement').update(id, (current) => ({
    accountId: id,
    lines: [
      ...(current?.lines ?? []),
      {
        version: event.version,
        type: event.type,
        amount,
        balance: plus(current?.lines.at(-1)?.balance ?? 0, amount),
        at: event.recordedAt.toISOString(),
        ...(data.transferId ? { transferId: data.transferId, counterparty: data.to ?? data.from ?? '' } : {}),
      },
    ],
  }));
};

export const bankReadModels = defineProjection({
  name: 'bank',
  version: 2, // 2: money as decimal strings (1 held numbers)
  categories: ['account', 'payment'],
  collections: ['balance', 'statement', 'payment', 'payment_counts'],
  handlers: {
    AccountOpened: async (event, { documents }) => {
      const id = accountIdOf(event);
      await documents<BalanceView>('balance').set(id, {
        accountId: id,
        owner: (event.data as { owner: string }).owner,
        balance: '0',
        status: 'open',
        version: event.version,
      });
      await documents<StatementView>('statement').set(id, { accountId: id, lines: [] });
    },
    MoneyDeposited: (event, { documents }) => applyMovement(event, documents),
    MoneyWithdrawn: (event, { documents }) => applyMovement(event, documents),
    MoneyTransferredIn: (event, { documents }) => applyMovement(event, documents),
    MoneyTransferredOut: (event, { documents }) => applyMovement(event, documents),
    // New with transfers as a process; no earlier log holds one, so the projection's version stays.
    MoneyTransferRefunded: (event, { documents }) => applyMovement(event, documents),
    AccountClosed: async (event, { documents }) => {
      await documents<BalanceView>('balance').update(accountIdOf(event), (current) =>
        current ? { ...current, status: 'closed', version: event.version } : null,
      );
    },
    PaymentCreated: async (event, { documents }) => {
      const data = event.data as { accountId: string; amount: Units };
      await documents<PaymentView>('payment').set(paymentIdOf(event), {
        paymentId: paymentIdOf(event),
        accountId: data.accountId,
        amount: data.amount,
        status: 'created',
        updatedAt: event.recordedAt.toISOString(),
      });
      await countPayment(documents, event, null, 'created');
    },
    PaymentConfirmed: (event, { documents }) => movePayment(event, documents, 'confirmed'),
    PaymentRefunded: (event, { documents }) => movePayment(event, documents, 'refunded'),
  },
});

async function movePayment(event: RecordedEvent, documents: Documents, status: 'confirmed' | 'refunded') {
  let previous: PaymentView['status'] | null = null;
  await documents<PaymentView>('payment').update(paymentIdOf(event), (current) => {
    previous = current?.status ?? null;
    return current ? { ...current, status, updatedAt: event.recordedAt.toISOString() } : null;
  });
  await countPayment(documents, event, previous, status);
}

/** Payments by status: one document with the counts. */
async function countPayment(
  documents: Documents,
  _event: RecordedEvent,
  from: PaymentView['status'] | null,
  to: PaymentView['status'],
) {
  await documents<PaymentCounts>('payment_counts').update('all', (current) => {
    const counts = { created: 0, confirmed: 0, refunded: 0, ...current };
    if (from) counts[from]--;
    counts[to]++;
    return counts;
  });
}
