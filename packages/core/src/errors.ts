import type { ExpectedVersion } from './store/contract.js';
/**
 * Typed errors. Every error eventline throws on purpose is an {@link EventlineError} with a stable `code`, the input
 * that caused it, and a message that says what to do about it. Catch by class (`instanceof ConcurrencyError`) or by
 * `code` (`error.code === 'CONCURRENCY'`), which also survives serialisation (HTTP, logs).
 */

export type EventlineErrorCode =
  | 'CONCURRENCY'
  | 'STREAM_DELETED'
  | 'VALIDATION'
  | 'INVALID_STREAM_ID'
  | 'PAYLOAD_TOO_LARGE'
  | 'EVENT_ID_CONFLICT'
  | 'UNKNOWN_EVENT_TYPE'
  | 'STORE_UNAVAILABLE'
  | 'STORE_CLOSED'
  | 'DOMAIN_RULE'
  | 'UNKNOWN_COMMAND'
  | 'DUPLICATE_HANDLER'
  | 'UPCASTER_CONFIGURATION'
  | 'LEASE_LOST'
  | 'WAIT_TIMEOUT'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'TRANSACTION_CONFLICT'
  | 'DATA_DIR_LOCKED'
  | 'UNKNOWN_COLLECTION'
  | 'TRANSPORT_FAILED'
  | 'TRANSPORT_UNAVAILABLE'
  | 'TRANSPORT_CONFIGURATION'
  | 'TRANSPORT_CLOSED'
  | 'UNIQUENESS_VIOLATION'
  | 'UNIQUENESS_CONFIGURATION'
  | 'PROCESS_DECISION'
  | 'PROCESS_STORE_CLOSED';

export abstract class EventlineError extends Error {
  abstract readonly code: EventlineErrorCode;
  override get name(): string {
    return this.constructor.name;
  }
  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message };
  }
}

/** What the stream actually was: its version, or `'no_stream'` when it does not exist (never written, or soft-deleted). */
export type ActualVersion = number | 'no_stream';

/** The stream was not at the version the caller expected: someone else wrote first. Reload, decide again, retry. */
export class ConcurrencyError extends EventlineError {
  readonly code = 'CONCURRENCY' as const;
  constructor(
    readonly streamId: string,
    readonly expected: ExpectedVersion,
    readonly actual: ActualVersion,
    readonly actualVersion: number = typeof actual === 'number' ? actual : 0,
  ) {
    super(
      `Stream '${streamId}' was expected to be at ${describeExpected(expected)} but is at ${describeActual(actual, actualVersion)}: ` +
        `another writer appended first. Reload the stream, decide again and retry with the new version.`,
    );
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), streamId: this.streamId, expected: this.expected, actual: this.actual };
  }
}

function describeExpected(expected: ExpectedVersion): string {
  if (expected === 'no_stream') return 'no stream (it must not exist yet)';
  if (expected === 'stream_exists') return 'an existing stream';
  if (expected === 'any') return 'any version';
  return `version ${expected}`;
}

function describeActual(actual: ActualVersion, actualVersion: number): string {
  if (actual !== 'no_stream') return `version ${actual}`;
  return actualVersion > 0 ? `no stream (soft-deleted at version ${actualVersion})` : 'no stream (it does not exist)';
}

/** The stream was hard-deleted (tombstoned): it can never be read or written again. Use a new stream id. */
export class StreamDeletedError extends EventlineError {
  readonly code = 'STREAM_DELETED' as const;
  constructor(readonly streamId: string) {
    super(
      `Stream '${streamId}' was hard-deleted (tombstoned) and can never be read or written again; use another stream id.`,
    );
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), streamId: this.streamId };
  }
}

/** One problem found in an input: where it is (a path into the value) and what is wrong. */
export interface ValidationIssue {
  readonly path: ReadonlyArray<string | number>;
  readonly message: string;
}

/** An input is not acceptable (bad shape, not JSON, failed its schema...). Nothing was stored. Fix the input. */
export class ValidationError extends EventlineError {
  readonly code: EventlineErrorCode = 'VALIDATION';
  constructor(
    message: string,
    readonly issues: readonly ValidationIssue[] = [],
    readonly input?: unknown,
  ) {
    super(issues.length === 0 ? message : `${message}: ${issues.map(formatIssue).join('; ')}`);
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), issues: this.issues };
  }
}

function formatIssue(issue: ValidationIssue): string {
  return issue.path.length === 0 ? issue.message : `${issue.path.join('.')}: ${issue.message}`;
}

/** A stream id does not follow the `category-id` rule. */
export class InvalidStreamIdError extends ValidationError {
  override readonly code = 'INVALID_STREAM_ID' as const;
  constructor(
    readonly streamId: unknown,
    reason: string,
  ) {
    super(
      `Invalid stream id ${safeQuote(streamId)}: ${reason}. A stream id is '<category>-<id>', e.g. 'account-42': ` +
        `the category is a letter followed by letters, digits or '_', the id is 1 or more visible characters, 255 characters in all`,
    );
  }
}

/** An event's data + metadata, serialised as JSON, is larger than the store's `maxEventBytes`. */
export class PayloadTooLargeError extends ValidationError {
  override readonly code = 'PAYLOAD_TOO_LARGE' as const;
  constructor(
    readonly streamId: string,
    readonly eventType: string,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(
      `Event '${eventType}' for stream '${streamId}' is ${bytes} bytes as JSON, over the limit of ${limit} bytes. ` +
        `Store large payloads elsewhere (object storage) and put a reference in the event, or raise maxEventBytes`,
    );
  }
}

/** Event ids are unique across the whole store. These ids are already stored, but not as this same batch at this same place. */
export class EventIdConflictError extends EventlineError {
  readonly code = 'EVENT_ID_CONFLICT' as const;
  constructor(
    readonly streamId: string,
    readonly eventIds: readonly string[],
  ) {
    super(
      `Event id(s) ${eventIds.join(', ')} appended to stream '${streamId}' are already stored, but not as this exact batch ` +
        `of this stream: a retry must resend the same events with the same ids to the same stream; new events need new ids.`,
    );
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), streamId: this.streamId, eventIds: this.eventIds };
  }
}

/** An event type is not registered with the store's event registry (in strict mode). */
export class UnknownEventTypeError extends ValidationError {
  override readonly code = 'UNKNOWN_EVENT_TYPE' as const;
  constructor(
    readonly eventType: string,
    readonly known: readonly string[],
  ) {
    super(
      `Unknown event type '${eventType}': register it with defineEvent() in the store's events registry ` +
        `(known: ${known.length === 0 ? 'none' : known.join(', ')})`,
    );
  }
}

/**
 * The store could not be reached, or the connection broke during an operation. For an append, the outcome is unknown:
 * it either committed whole or not at all. Retrying the same append with the same event ids is always safe: if it had
 * committed, the retry returns the original result and stores nothing twice.
 */
export class StoreUnavailableError extends EventlineError {
  readonly code = 'STORE_UNAVAILABLE' as const;
  constructor(
    readonly operation: string,
    override readonly cause: unknown,
  ) {
    super(
      `The event store was unreachable or the connection was lost during ${operation}` +
        `${cause instanceof Error ? ` (${cause.message})` : ''}. ` +
        `An append is all or nothing; retry it with the same event ids, which is safe: a committed batch is not stored twice.`,
    );
  }
}

/** The store was closed; create a new one. */
export class StoreClosedError extends EventlineError {
  readonly code = 'STORE_CLOSED' as const;
  constructor(readonly operation: string) {
    super(`Cannot ${operation}: the event store was closed. Create a new store instance.`);
  }
}

/**
 * A value as error messages show it, whatever it is: strings quoted and cut at 80 characters, bigints with their `n`,
 * JSON for the rest (cut too), and the type's name for what JSON cannot show (symbols, functions, cycles, deep values).
 * Never throws: an error message must not fail to build because of the input it reports.
 */
export function safeQuote(value: unknown): string {
  const cut = (text: string) => (text.length > 80 ? `${text.slice(0, 80)}…` : text);
  switch (typeof value) {
    case 'string':
      return `'${cut(value)}'`;
    case 'bigint':
      return cut(`${value}n`);
    case 'undefined':
      return 'undefined';
    case 'symbol':
    case 'function':
      return `a ${typeof value}`;
    case 'number':
      return String(value);
  }
  try {
    return cut(String(JSON.stringify(value)));
  } catch {
    return value === null ? 'null' : Array.isArray(value) ? 'an array' : 'an object';
  }
}

/**
 * What was thrown, as an Error: an Error as it is, anything else as a new Error with its text. With `context`, that
 * text says what failed (`context: value`, or just `context` when nothing, undefined or null, was thrown).
 */
export function toError(value: unknown, context?: string): Error {
  if (value instanceof Error) return value;
  if (context === undefined) return new Error(String(value));
  return new Error(value === undefined || value === null ? context : `${context}: ${String(value)}`);
}

/**
 * A domain rule refused a command (no overdraft, no accept after decline...). Thrown by your `decide`/`handle` code; never
 * retried and never an infrastructure problem. `rule` is a stable name for the rule, for callers and HTTP mapping.
 */
export class DomainError extends EventlineError {
  readonly code = 'DOMAIN_RULE' as const;
  constructor(
    message: string,
    readonly rule: string = 'DOMAIN_RULE',
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), rule: this.rule, details: this.details };
  }
}

/** No handler is registered for a command type. */
export class UnknownCommandError extends EventlineError {
  readonly code = 'UNKNOWN_COMMAND' as const;
  constructor(
    readonly commandType: unknown,
    readonly known: readonly string[],
  ) {
    super(
      `No handler is registered for command type ${safeQuote(commandType)}; register one with bus.register() (known: ${known.length === 0 ? 'none' : known.join(', ')})`,
    );
  }
}

/** A second handler was registered for a command type: each command type has exactly one handler. */
export class DuplicateHandlerError extends EventlineError {
  readonly code = 'DUPLICATE_HANDLER' as const;
  constructor(readonly commandType: string) {
    super(
      `Command type '${commandType}' already has a handler; a command has exactly one handler, so remove one of the registrations`,
    );
  }
}

/** The upcasters or renames registered for event types do not form straight chains (gap, cycle or duplicate). */
export class UpcasterConfigurationError extends EventlineError {
  readonly code = 'UPCASTER_CONFIGURATION' as const;
  constructor(
    readonly eventType: string,
    problem: string,
  ) {
    super(`Upcasting of event type '${eventType}': ${problem}`);
  }
}

/**
 * An idempotency key came again with a different command (another type, other data) than the one it was first used
 * for. The first command's result stays; this one was not handled. Use a new key for a new command.
 */
export class IdempotencyKeyReusedError extends EventlineError {
  readonly code = 'IDEMPOTENCY_KEY_REUSED' as const;
  constructor(
    readonly idempotencyKey: string,
    readonly firstCommandType: string,
    readonly commandType: string,
  ) {
    super(
      `Idempotency key ${safeQuote(idempotencyKey)} was already used for a different command (a '${firstCommandType}' ` +
        `with other data); this '${commandType}' command was not handled. Send a new key with each new command, and the ` +
        `same key only to retry the very same command.`,
    );
  }
  override toJSON(): Record<string, unknown> {
    return {
      ...super.toJSON(),
      idempotencyKey: this.idempotencyKey,
      firstCommandType: this.firstCommandType,
      commandType: this.commandType,
    };
  }
}

/**
 * The database broke a transaction off to resolve a conflict with another one (a deadlock, or a serialization
 * failure): nothing of it was stored. Like a {@link ConcurrencyError} it is safe to run the whole transaction again,
 * and {@link retryOnConflict} does.
 */
export class TransactionConflictError extends EventlineError {
  readonly code = 'TRANSACTION_CONFLICT' as const;
  constructor(
    readonly operation: string,
    readonly reason: 'deadlock' | 'serialization',
    override readonly cause?: unknown,
  ) {
    super(
      `${operation} was rolled back by the database to resolve a ${reason === 'deadlock' ? 'deadlock' : 'serialization conflict'} ` +
        `with a concurrent transaction; nothing of it was stored. Run it again (the retry middleware does); to avoid ` +
        `deadlocks, lock the streams a transaction writes first, in one order (session.lockStreams).`,
    );
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), operation: this.operation, reason: this.reason };
  }
}

/** A read model has no collection of that name (reads never create one). */
export class UnknownCollectionError extends EventlineError {
  readonly code = 'UNKNOWN_COLLECTION' as const;
  constructor(
    readonly projection: string,
    readonly collection: string,
    readonly known: readonly string[],
  ) {
    super(
      `Read model '${projection}' has no collection ${safeQuote(collection)} ` +
        `(known: ${known.length === 0 ? 'none yet' : known.join(', ')})`,
    );
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), projection: this.projection, collection: this.collection, known: this.known };
  }
}

/** The transports eventline ships; another transport names itself. */
export type TransportName = 'nats' | 'rabbitmq' | 'redis' | (string & {});

const TRANSPORT_LABELS: Readonly<Record<string, string>> = { nats: 'NATS', rabbitmq: 'RabbitMQ', redis: 'Redis' };

/**
 * A transport (a message broker) failed an operation: `transport` names it, `operation` says what it was doing
 * (`connect`, `publish`, `consume`, `ack`...), `cause` is the broker client's own error when there is one. This class
 * itself (`TRANSPORT_FAILED`) is a refusal by the broker or a message it cannot carry; the subclasses say what to do
 * instead: wait and retry ({@link TransportUnavailableError}), fix the set-up ({@link TransportConfigurationError}),
 * make a new transport ({@link TransportClosedError}). `retryable` is true when the same call may succeed later.
 */
export class TransportError extends EventlineError {
  readonly code: EventlineErrorCode = 'TRANSPORT_FAILED';
  readonly retryable: boolean = false;
  constructor(
    readonly transport: TransportName,
    readonly operation: string,
    detail: string,
    override readonly cause?: unknown,
  ) {
    super(`${TRANSPORT_LABELS[transport] ?? transport} transport: ${operation}: ${detail}`);
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), transport: this.transport, operation: this.operation, retryable: this.retryable };
  }
}

/**
 * The broker cannot be reached, the connection was lost, or it did not answer in time. Retry later: a publish is
 * safe to repeat (messages carry their ids, and consumers de-duplicate); a consumer reconnects by itself.
 */
export class TransportUnavailableError extends TransportError {
  override readonly code = 'TRANSPORT_UNAVAILABLE' as const;
  override readonly retryable = true;
}

/**
 * The transport's options, or what the broker already holds under its names (a stream, a durable consumer, a queue
 * declared differently), do not fit. Nothing will change by retrying: fix the options or the broker's set-up.
 */
export class TransportConfigurationError extends TransportError {
  override readonly code = 'TRANSPORT_CONFIGURATION' as const;
}

/** The transport was closed (or failed for good) and cannot be used again: create a new transport. */
export class TransportClosedError extends TransportError {
  override readonly code = 'TRANSPORT_CLOSED' as const;
}

/**
 * An append would claim a value (a tax id, an e-mail address...) that another stream already holds in a uniqueness
 * scope (see `defineUniqueness`): nothing of the append was stored or claimed. `owner` is the stream that holds the
 * value; `streamId` the stream the append was for.
 */
export class UniquenessError extends EventlineError {
  readonly code = 'UNIQUENESS_VIOLATION' as const;
  constructor(
    readonly scope: string,
    readonly owner: string,
    readonly streamId: string,
  ) {
    super(
      `The append to stream '${streamId}' claims a value of '${scope}' that stream '${owner}' already holds: nothing ` +
        `was stored. Use another value, or release it from '${owner}' first (an event of the rule's releasedBy).`,
    );
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), scope: this.scope, owner: this.owner, streamId: this.streamId };
  }
}

/** The uniqueness rules or options given to a store do not fit (a bad scope name, a scope twice, an unknown event...). */
export class UniquenessConfigurationError extends EventlineError {
  readonly code = 'UNIQUENESS_CONFIGURATION' as const;
  constructor(
    readonly scope: unknown,
    problem: string,
  ) {
    super(`Uniqueness rule${scope === undefined ? 's' : ` ${safeQuote(scope)}`}: ${problem}`);
  }
}
