import { createHash } from 'node:crypto';
import type { Command, CommandDefinition, CommandOf } from '../command.js';
import {
  DuplicateHandlerError,
  IdempotencyKeyReusedError,
  InvalidStreamIdError,
  safeQuote,
  UnknownCommandError,
  ValidationError,
} from '../errors.js';
import { isUuid } from '../ids.js';
import { jsonIssues } from '../json.js';
import { validateWithSchema } from '../schema.js';
import { assertStreamId } from '../stream-id.js';
import type { EventStore, EventStoreSession } from '../store/contract.js';
import type { CommandContext, CommandResult } from './repository.js';
import { retryOnConflict, type RetryOptions } from './retry.js';

/** Handles one command type. Exactly one per type. */
export type CommandHandler<C extends Command = Command> = (
  command: C,
  context: CommandContext,
) => Promise<CommandResult>;

/** What middleware sees: the context handlers get, plus the command's registered definition (if it has one). */
export interface MiddlewareContext extends CommandContext {
  readonly definition?: CommandDefinition | undefined;
  /** The command as it was given to `dispatch`, before any middleware changed it (validation may add defaults). */
  readonly dispatched?: Command | undefined;
}

/**
 * Runs around every dispatched command, outermost first: it may change the command or context, short-circuit with a
 * result, or call `next` and look at the result or error.
 */
export type Middleware = (
  command: Command,
  context: MiddlewareContext,
  next: (command: Command, context: MiddlewareContext) => Promise<CommandResult>,
) => Promise<CommandResult>;

export interface CommandBus {
  /** Registers the one handler of a command type. A second registration throws {@link DuplicateHandlerError}. */
  register<D extends CommandDefinition>(command: D, handler: CommandHandler<CommandOf<D>>): void;
  register(type: string, handler: CommandHandler): void;
  /** Runs the command through the middleware to its handler. An unregistered type throws {@link UnknownCommandError}. */
  dispatch(command: Command): Promise<CommandResult>;
  /** The registered command types. */
  types(): string[];
}

/**
 * A command bus: one handler per command type, and a middleware chain around every dispatch.
 *
 * ```ts
 * const bus = createCommandBus({ middleware: defaultMiddleware(store) });
 * bus.register(Deposit, accounts.handler((command) => command.data.accountId));
 * const result = await bus.dispatch(Deposit.create({ accountId: '42', amount: 10 }));
 * ```
 */
export function createCommandBus(options: { middleware?: readonly Middleware[] } = {}): CommandBus {
  const handlers = new Map<string, { handler: CommandHandler; definition?: CommandDefinition | undefined }>();
  const middleware = [...(options.middleware ?? [])];
  return {
    register(command: CommandDefinition | string, handler: CommandHandler<never>) {
      const definition = typeof command === 'string' ? undefined : command;
      const type = typeof command === 'string' ? command : command.type;
      if (handlers.has(type)) throw new DuplicateHandlerError(type);
      handlers.set(type, { handler: handler as CommandHandler, definition });
    },
    async dispatch(command) {
      const metadata = (command as { metadata?: unknown } | null)?.metadata;
      if (
        typeof command !== 'object' ||
        command === null ||
        typeof command.type !== 'string' ||
        !isUuid(command.id) ||
        typeof metadata !== 'object' ||
        metadata === null ||
        Array.isArray(metadata)
      ) {
        throw new ValidationError(
          `dispatch() expects a command { id (a UUID), type (a string), data, metadata (an object) }, got ${safeQuote(command)}; build one with defineCommand(...).create() or createCommand()`,
        );
      }
      const registration = handlers.get(command.type);
      if (!registration) throw new UnknownCommandError(command.type, [...handlers.keys()].sort());
      const run = (index: number, current: Command, context: MiddlewareContext): Promise<CommandResult> => {
        const layer = middleware[index];
        if (!layer) return registration.handler(current, context);
        return layer(current, context, (nextCommand, nextContext) => run(index + 1, nextCommand, nextContext));
      };
      return run(0, command, { definition: registration.definition, dispatched: command });
    },
    types: () => [...handlers.keys()].sort(),
  };
}

/** Validates command data against its definition's schema (commands registered by type only are passed through). */
export function validateCommands(): Middleware {
  return async (command, context, next) => {
    if (!context.definition) return next(command, context);
    const data = await validateWithSchema(
      context.definition.schema,
      command.data,
      `The data of command '${command.type}'`,
    );
    return next({ ...command, data }, context);
  };
}

/** Retries the rest of the chain on ConcurrencyError (reload + decide again), bounded, with jitter. */
export function retryOnConflicts(options: RetryOptions = {}): Middleware {
  return (command, context, next) => retryOnConflict(() => next(command, { ...context, retrying: true }), options);
}

/**
 * Commands with an `idempotencyKey` are handled once: a later command with the same key returns the first result
 * (`duplicate: true`) and appends nothing, also after a restart. The record is an event in the store itself
 * (stream `eventlineIdempotency-<key>`), appended in the same transaction as the command's events, so a command is
 * either handled and recorded, or neither. Two concurrent commands with one key: one commits, the other gets a
 * ConcurrencyError, and on retry (put {@link retryOnConflicts} before this middleware) finds the first result.
 *
 * A key stands for one command: the record keeps a fingerprint of the command as it was dispatched (its type and
 * data, which name its target). The same key with another command (another type, another amount, another account) is
 * refused with {@link IdempotencyKeyReusedError} and changes nothing; only the very same command gets the first
 * result again. Metadata (correlation ids, trace context) is not part of the fingerprint: a retry may carry new ones.
 */
export function idempotency(store: EventStore): Middleware {
  return async (command, context, next) => {
    const key = command.metadata.idempotencyKey;
    if (key === undefined) return next(command, context);
    const recordStream = idempotencyStreamId(key);
    const fingerprint = commandFingerprint(context.dispatched ?? command);
    return inTransaction(store, async ({ session, afterCommit }) => {
      for await (const record of session.readStream(recordStream, { limit: 1 })) {
        const stored = record.data as { commandType: string; fingerprint?: string; result: CommandResult };
        // Records written before fingerprints were kept can only be compared by type.
        if (
          stored.commandType !== command.type ||
          (stored.fingerprint !== undefined && stored.fingerprint !== fingerprint)
        ) {
          throw new IdempotencyKeyReusedError(key, stored.commandType, command.type);
        }
        return { ...stored.result, duplicate: true };
      }
      const handled = await next(command, { ...context, session, afterCommit });
      await session.append(
        recordStream,
        [
          {
            type: 'CommandHandled',
            data: { commandId: command.id, commandType: command.type, fingerprint, result: handled },
          },
        ],
        {
          expectedVersion: 'no_stream',
        },
      );
      return handled;
    });
  };
}

/**
 * What makes two commands the same for an idempotency key: a SHA-256 of the type and of the data as canonical JSON
 * (object keys sorted, so `{a, b}` and `{b, a}` are one command). The data must be JSON.
 */
export function commandFingerprint(command: Pick<Command, 'type' | 'data'>): string {
  const issues = jsonIssues(command.data, ['data']);
  if (issues.length > 0)
    throw new ValidationError(
      `The data of command '${command.type}', sent with an idempotency key, is not JSON`,
      issues,
    );
  return createHash('sha256')
    .update(canonicalJson([command.type, command.data]))
    .digest('base64url');
}

/** JSON with every object's keys in sorted order (the value is JSON, checked, so no deeper than MAX_JSON_DEPTH). */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value))
    return `[${value.map((item) => (item === undefined ? 'null' : canonicalJson(item))).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record)
      .filter((key) => record[key] !== undefined)
      .sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * Runs `work` in a transaction of `store`, with what a repository needs to take part in it: the `session`, and an
 * `afterCommit` whose work (snapshots, cached states) runs once the transaction has committed, and never if it rolls
 * back. For handlers that write several aggregates together:
 *
 * ```ts
 * await inTransaction(store, (inside) => Promise.all([accounts.handle('a', debit, inside), accounts.handle('b', credit, inside)]));
 * ```
 */
export async function inTransaction<T>(
  store: EventStore,
  work: (context: {
    readonly session: EventStoreSession;
    readonly afterCommit: (fn: () => Promise<void>) => void;
  }) => Promise<T>,
): Promise<T> {
  const committed: Array<() => Promise<void>> = [];
  const result = await store.transaction((session) => work({ session, afterCommit: (fn) => committed.push(fn) }));
  for (const fn of committed) await fn();
  return result;
}

/**
 * The stream that records an idempotency key's command. The key: 1 to 200 characters that a stream id's id part may
 * hold (visible, well-formed Unicode), told in the key's own terms rather than as a bad stream id.
 */
export function idempotencyStreamId(key: string): string {
  const refused = () =>
    new ValidationError(
      `Idempotency key ${safeQuote(key)} must be a string of 1 to 200 visible characters (no spaces, control characters or lone UTF-16 surrogates); a UUID is a good key`,
    );
  if (typeof key !== 'string' || key.length === 0 || key.length > 200) throw refused();
  try {
    return assertStreamId(`eventlineIdempotency-${key}`);
  } catch (error) {
    throw error instanceof InvalidStreamIdError ? refused() : error;
  }
}

/** Hooks for logging and tracing: called before each command, and after it with the result or error and the duration. */
export function commandHooks(hooks: {
  onStart?: (command: Command) => void;
  onSuccess?: (command: Command, result: CommandResult, durationMs: number) => void;
  onError?: (command: Command, error: unknown, durationMs: number) => void;
}): Middleware {
  return async (command, context, next) => {
    const started = performance.now();
    hooks.onStart?.(command);
    try {
      const result = await next(command, context);
      hooks.onSuccess?.(command, result, performance.now() - started);
      return result;
    } catch (error) {
      hooks.onError?.(command, error, performance.now() - started);
      throw error;
    }
  };
}

/** The usual chain: validate, retry on conflict, idempotency keys (persisted in `store`). */
export function defaultMiddleware(store: EventStore, options: { retry?: RetryOptions } = {}): Middleware[] {
  return [validateCommands(), retryOnConflicts(options.retry), idempotency(store)];
}
