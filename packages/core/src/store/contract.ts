import type { EventInput, RecordedEvent } from '../event.js';
import type { JsonObject } from '../json.js';
import type { Position } from '../position.js';
import type { EventRegistry } from '../schema.js';
import type { TransportMessage } from '../transport/contract.js';
import type { RebuildClaimsResult, UniquenessOptions } from './claims.js';

/**
 * What an append expects of its stream: an exact version (the number of the stream's last event), `'no_stream'`
 * (it must not exist), `'stream_exists'` (it must) or `'any'`.
 */
export type ExpectedVersion = number | 'no_stream' | 'stream_exists' | 'any';

/**
 * The event store: an append-only log of events grouped in streams, and the single source of truth.
 * Every backend (in-memory, PostgreSQL, PGlite) implements this contract and passes the conformance suite in
 * `@eventline/core/testing`; nothing here is backend-specific.
 */
export interface EventStore extends EventStoreSession {
  /**
   * Reads the global log: every event of every stream, in commit order, after `options.after` (exclusive).
   * Gap-safe: it never yields a position and later yields a smaller one, however writers interleave, so a reader that
   * resumes from the last position it saw never misses a committed event. Pages from the database.
   * Events of soft-deleted or truncated streams stay in the global log; hard-deleted ones are gone.
   */
  readAll(options?: ReadAllOptions): AsyncIterable<RecordedEvent>;

  /**
   * One page of the global log, for readers that keep a checkpoint (subscriptions). `next` is where to resume: the last
   * event's position, or further when the page was not full (past everything committed so far, including events the
   * filter skipped), so a filtered reader moves on even when nothing matches.
   */
  readAllPage(options?: ReadAllOptions): Promise<ReadAllPage>;

  /**
   * Optional: {@link readAllPage} with each event as the message a transport carries (what `encodeEvent` makes of it),
   * built from the JSON the backend stores without parsing and serialising it again. Publishers use it when the store
   * has it. Events that the store's registry renames or upcasts are upcast first, as on every read path. Optional for
   * stores written outside eventline (publishers then encode `readAllPage`'s events); every eventline backend has it,
   * and the conformance suite checks it.
   */
  readAllPageEncoded?(options?: ReadAllOptions): Promise<EncodedReadAllPage>;

  /**
   * Where the readable log ends now (a reader "starting at the end"): reading after it misses nothing committed later.
   * On the SQL stores it stops before the oldest transaction open on the server, so a reader starting there may also
   * get events committed just before; it is not the last event's position while any transaction is open.
   */
  headPosition(): Promise<Position>;

  /**
   * A position after every position this store has returned so far: appends not yet made get it or a later one. A
   * position at or after it was never returned by this store (an API uses it to refuse a read-your-writes wait for a
   * position no command returned, which would otherwise wait until its timeout).
   */
  nextPosition(): Promise<Position>;

  /**
   * How far `readAll` readers are held back by transactions still open: committed events they cannot see yet because an
   * older transaction has not finished, and the age of the oldest open transaction. A long-open transaction delays every
   * reader; set PostgreSQL's `idle_in_transaction_session_timeout` to bound it.
   */
  readAllHoldback(): Promise<ReadAllHoldback>;

  /**
   * Recomputes every uniqueness claim from the log by the store's rules, in one transaction (appends that claim or
   * release wait for it): after a rule was added or changed, or the key. Resolves with the number of claims and the
   * conflicts found (two streams claiming one value; the first in log order keeps it). Without rules, it removes
   * every claim.
   */
  rebuildClaims(): Promise<RebuildClaimsResult>;

  /**
   * Runs `fn` with a session whose appends, deletes and metadata changes commit together when `fn` resolves, or not at
   * all when it throws (the error is rethrown). Reads inside see the session's own writes.
   */
  transaction<T>(fn: (session: EventStoreSession) => Promise<T>): Promise<T>;

  /** Releases connections. Further calls throw {@link StoreClosedError}. */
  close(): Promise<void>;
}

/** What can be done inside and outside a transaction. */
export interface EventStoreSession {
  /**
   * Appends events to a stream, atomically: all of them or none. Versions continue from the stream's current version.
   * - `expectedVersion` (default `'any'`): an exact version, `'no_stream'` (must not exist, or be soft-deleted),
   *   `'stream_exists'`, or `'any'`; a mismatch throws {@link ConcurrencyError} with expected and actual.
   * - Retry-safe: appending a batch whose event ids are already stored as this same batch in this stream returns the
   *   original result (`duplicate: true`) and stores nothing; the same ids in any other arrangement throw
   *   {@link EventIdConflictError}.
   * - Bad input ({@link ValidationError} and its kinds: empty batch, invalid stream id, event id not a UUID, data not
   *   JSON, payload over `maxEventBytes`, schema failure, unknown type) is rejected before anything is stored.
   * - A hard-deleted stream throws {@link StreamDeletedError}.
   * - Uniqueness (the store's `uniqueness` rules): the values the events claim are claimed for this stream in the same
   *   transaction; a value another stream holds throws {@link UniquenessError} and nothing is stored or claimed.
   *   `options.releases` releases the stream's claims in those scopes first (recorded in the first event's metadata
   *   as `releasesClaims`, so that a rebuild from the log does the same).
   */
  append(streamId: string, events: readonly EventInput[], options?: AppendOptions): Promise<AppendResult>;

  /**
   * Reads one stream's visible events (not deleted or truncated), forwards from version `from` (default 1) or backwards
   * from `from` (default the last), paging from the database. A stream that does not exist, or was soft-deleted, yields
   * nothing; a hard-deleted stream throws {@link StreamDeletedError}.
   */
  readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<RecordedEvent>;

  /** Whether a stream exists, its version, and whether it was deleted. Never throws for a missing or deleted stream. */
  streamInfo(streamId: string): Promise<StreamInfo>;

  /** Replaces the stream's metadata (retention rules and custom fields). Allowed before the stream exists. */
  setStreamMetadata(
    streamId: string,
    metadata: StreamMetadata,
    options?: { expectedVersion?: ExpectedVersion },
  ): Promise<void>;

  /** The stream's metadata, `{}` when none was set. */
  getStreamMetadata(streamId: string): Promise<StreamMetadata>;

  /**
   * Deletes a stream.
   * - Soft (default): its events vanish from stream reads; appending again re-creates it and versions continue after the
   *   old ones. Deleting a missing or already soft-deleted stream does nothing.
   * - `hard: true`: a tombstone. The events are removed from the store, including the global log, and the stream id can
   *   never be read or written again ({@link StreamDeletedError}).
   * `expectedVersion` is checked as for an append.
   */
  deleteStream(streamId: string, options?: { expectedVersion?: ExpectedVersion; hard?: boolean }): Promise<void>;

  /**
   * Inside `transaction()`: takes a lock on each of these streams now, in one order that every caller shares, and
   * keeps them to the end of the transaction, so that transactions writing the same streams in different orders (two
   * opposite transfers) queue one behind the other instead of deadlocking. Writers that do not take them (a plain
   * append) are not held; what one writes first is caught by the transaction's expected versions, as any conflict. Call it first, with every stream the
   * transaction will write. The streams need not exist. Outside a transaction each statement is its own transaction,
   * so it only checks the ids. A deadlock that still happens is a `TransactionConflictError`, which `retryOnConflict`
   * (and so the retry middleware) retries.
   */
  lockStreams(streamIds: readonly string[]): Promise<void>;

  /**
   * The stream that holds `value` in a uniqueness scope (normalised and hashed as the rule does), or null. Inside
   * `transaction()`, the transaction's own claims and releases count. A scope the store has no rule for, or a value
   * that could not be claimed (not a string, empty, too long, NUL, lone surrogate), is a `ValidationError`.
   */
  claimOwner(scope: string, value: string): Promise<string | null>;
}

export interface AppendOptions {
  expectedVersion?: ExpectedVersion;
  /** Uniqueness scopes whose claims held by this stream are released by this append, before its events claim. */
  releases?: readonly string[];
}

export interface AppendResult {
  readonly streamId: string;
  /** The stream's version after the append: the last event's version. */
  readonly version: number;
  /** The version of the batch's first event. */
  readonly firstVersion: number;
  /** The last event's position in the global log (compare it with a reader's checkpoint for read-your-writes). */
  readonly position: Position;
  /** True when this exact batch was already stored and nothing was written (a retried append). */
  readonly duplicate: boolean;
}

export interface ReadStreamOptions {
  /** First version to read, inclusive. Forwards: default 1. Backwards: default the stream's last version. */
  from?: number;
  direction?: 'forwards' | 'backwards';
  /** Most events to yield in all. */
  limit?: number;
  /** Events fetched per round trip (default 500). */
  pageSize?: number;
}

export interface ReadAllFilter {
  /** Only events of these types. */
  types?: readonly string[];
  /** Only events of streams in these categories (`account` for `account-42`). */
  categories?: readonly string[];
}

export interface ReadAllOptions {
  /** Read after this position (exclusive); default the start of the log. */
  after?: Position;
  /** Most events to yield in all (`readAll`) or in the page (`readAllPage`, default 1000). */
  limit?: number;
  filter?: ReadAllFilter;
  /** Events fetched per round trip by `readAll` (default 1000). */
  pageSize?: number;
}

export interface ReadAllPage {
  readonly events: RecordedEvent[];
  /** Resume here. Never smaller than `after`. */
  readonly next: Position;
  /** True when the page reached everything currently readable (a reader is caught up). */
  readonly atEnd: boolean;
}

/** An event of the log as a transport message (see {@link EventStore.readAllPageEncoded}). */
export interface EncodedEvent {
  readonly id: string;
  readonly streamId: string;
  readonly position: Position;
  readonly message: TransportMessage;
}

export interface EncodedReadAllPage {
  readonly events: EncodedEvent[];
  readonly next: Position;
  readonly atEnd: boolean;
}

export interface ReadAllHoldback {
  /** Committed events that `readAll` does not show yet because an older transaction is still open. */
  readonly heldBackEvents: number;
  /** Age of the oldest open transaction that holds readers back, in ms; null when none. */
  readonly oldestOpenTransactionMs: number | null;
}

export interface StreamMetadata {
  /** Keep only the last `maxCount` events visible. */
  maxCount?: number;
  /** Keep only events recorded in the last `maxAge` seconds visible. */
  maxAge?: number;
  /** Hide events with a version below this one. */
  truncateBefore?: number;
  /** Anything else the application wants to keep with the stream. */
  custom?: JsonObject;
}

export interface StreamInfo {
  readonly streamId: string;
  /** True when the stream has events and is not deleted. */
  readonly exists: boolean;
  /** The last version written (kept after a soft delete, since numbering continues); 0 when never written. */
  readonly version: number;
  /** `'soft'` after a soft delete (until the next append), `'hard'` after a tombstone, otherwise null. */
  readonly deleted: 'soft' | 'hard' | null;
}

/** Options every store backend accepts. */
export interface EventStoreOptions {
  /** Largest event accepted, as UTF-8 bytes of its data and metadata in JSON. Default 1 MiB. */
  maxEventBytes?: number;
  /** Event definitions to validate appended data against (see `defineEvent`, `eventRegistry`). */
  events?: EventRegistry;
  /** Values unique across streams: `{ rules: [defineUniqueness({...})], key }` (see `defineUniqueness`). */
  uniqueness?: UniquenessOptions;
}

export const DEFAULT_MAX_EVENT_BYTES = 1024 * 1024;
export const DEFAULT_STREAM_PAGE_SIZE = 500;
export const DEFAULT_ALL_PAGE_SIZE = 1000;
