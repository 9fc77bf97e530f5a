/**
 * The bank: accounts, payments and transfers on one command bus, over any event store.
 *
 * ```ts
 * const bank = createBank(createPGliteStore({ dataDir: './.eventline/bank' }));
 * await bank.bus.dispatch(OpenAccount.create({ accountId: 'a1', owner: 'Ada' }));
 * ```
 */
import {
  createCommandBus,
  createRepository,
  defaultMiddleware,
  defineCommand,
  eventRegistry,
  inTransaction,
  newId,
  retryOnConflict,
  type CommandContext,
  type EventStore,
  type SnapshotStore,
  type UniquenessOptions,
} from '@eventline/core';
import { z } from 'zod';
import {
  account,
  accountEvents,
  CloseAccount,
  Deposit,
  OpenAccount,
  TransferIn,
  TransferOut,
  RefundTransfer,
  Withdraw,
} from './account.js';
import { cpfUniqueness } from './cpf.js';
import { amount as money } from './money.js';
import { ConfirmPayment, CreatePayment, payment, paymentEvents, RefundPayment } from './payment.js';
import { CompleteTransfer, FailTransfer, RequestTransfer, transfer, transferEvents } from './transfer.js';

export * from './account.js';
export * from './cpf.js';
export * from './money.js';
export * from './payment.js';
export * from './read-models.js';
export * from './transfer.js';
export * from './transfer-process.js';

/**
 * Moves money between two accounts: both halves commit in one transaction, or neither does. The other way is
 * `RequestTransfer`, carried out step by step by the `bank-transfers` process (transfer-process.ts).
 */
export const TransferMoney = defineCommand(
  'TransferMoney',
  z
    .object({
      transferId: z
        .string()
        .min(1)
        .default(() => newId()),
      from: z.string().min(1),
      to: z.string().min(1),
      amount: money,
    })
    .refine((t) => t.from !== t.to, {
      message: 'cannot transfer to the same account',
      path: ['to'],
    }),
);

/** Every event type of the bank, for the store's registry (validation on append, upcasting on read). */
export const bankEvents = eventRegistry([...accountEvents, ...paymentEvents, ...transferEvents], {
  strict: false,
});

/**
 * The bank's uniqueness rules for the store's `uniqueness` option: one CPF per open account. Give a `key` (16 bytes
 * or more, kept out of the database) in production: a CPF is one of 10^9 values, found from a plain hash by trying them.
 */
export function bankUniqueness(key?: string | Uint8Array): UniquenessOptions {
  return key === undefined ? { rules: [cpfUniqueness] } : { rules: [cpfUniqueness], key };
}

/** Retries on conflict: one account can see many concurrent commands (every retry reloads and decides again). */
const retry = { maxAttempts: 12, baseDelayMs: 5, maxDelayMs: 200 };

export function createBank(store: EventStore, options: { snapshots?: SnapshotStore; cache?: boolean } = {}) {
  const accounts = createRepository(store, account, { ...options, retry });
  const payments = createRepository(store, payment, { ...options, retry });
  const bus = createCommandBus({ middleware: defaultMiddleware(store, { retry }) });
  const byAccount = accounts.handler((command) => command.data.accountId);
  // TransferOut and TransferIn are not on the bus: only the transfer handler sends them, both in one transaction.
  for (const command of [OpenAccount, Deposit, Withdraw, CloseAccount]) bus.register(command, byAccount);
  const byPayment = payments.handler((command) => command.data.paymentId);
  for (const command of [CreatePayment, ConfirmPayment, RefundPayment]) bus.register(command, byPayment);
  const transfers = createRepository(store, transfer, { ...options, retry });
  const byTransfer = transfers.handler((command) => command.data.transferId);
  bus.register(RequestTransfer, byTransfer);
  // The steps of the transfer process, on a bus of their own that clients are not given (a TransferIn alone would
  // be money from nowhere); its idempotency keys are in the same store, so a step sent twice is handled once.
  const processBus = createCommandBus({ middleware: defaultMiddleware(store, { retry }) });
  for (const command of [TransferOut, TransferIn, RefundTransfer]) processBus.register(command, byAccount);
  for (const command of [CompleteTransfer, FailTransfer]) processBus.register(command, byTransfer);
  bus.register(TransferMoney, async (command, context) => {
    const { transferId, from, to, amount } = command.data;
    const metadata = { correlationId: command.metadata.correlationId ?? command.id, causationId: command.id };
    const both = async () => {
      const run = async (inside: CommandContext) => {
        // Both accounts' locks first, in the store's one order: transfers crossing each other (a to b, b to a) queue
        // instead of each holding one account and waiting for the other (a deadlock on PostgreSQL).
        await inside.session!.lockStreams([accounts.streamIdOf(from), accounts.streamIdOf(to)]);
        const out = await accounts.handle(
          from,
          TransferOut.create({ accountId: from, transferId, to, amount }, { metadata }),
          inside,
        );
        await accounts.handle(to, TransferIn.create({ accountId: to, transferId, from, amount }, { metadata }), inside);
        return out;
      };
      // In the caller's transaction (a keyed command), or in one of our own whose after-commit work runs once it has.
      return context.session ? run(context) : inTransaction(store, (inside) => run({ ...context, ...inside }));
    };
    return context.retrying || context.session ? both() : retryOnConflict(both, retry);
  });
  return { bus, processBus, accounts, payments, transfers };
}
