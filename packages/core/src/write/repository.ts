import type { Command } from '../command.js';
import { ConcurrencyError, safeQuote, ValidationError } from '../errors.js';
import type { EventMetadata } from '../event.js';
import { newId } from '../ids.js';
import type { JsonValue } from '../json.js';
import type { Position } from '../position.js';
import { assertStreamId } from '../stream-id.js';
import type { AppendResult, EventStore, EventStoreSession } from '../store/contract.js';
import type { Aggregate, DomainEvent } from './aggregate.js';
import { retryOnConflict, type RetryOptions } from './retry.js';
import type { SnapshotStore } from './snapshots.js';

/** An event the command appended. */
export interface AppendedEvent {
  readonly id: string;
  readonly type: string;
  readonly streamId: string;
  readonly version: number;
  readonly data: unknown;
  readonly metadata: EventMetadata;
}

/** What handling a command did. JSON-serialisable (idempotency records keep it). */
export interface CommandResult {
  readonly streamId: string;
  /** The stream's version after the command (unchanged when it decided nothing). */
  readonly version: number;
  /** The global position of the last appended event (for read-your-writes); null when nothing was appended. */
  readonly position: Position | null;
  readonly events: readonly AppendedEvent[];
  /** True when this is the stored result of an earlier command with the same idempotency key: nothing was done now. */
  readonly duplicate?: boolean;
}

/** Handed to command handlers by the command bus. */
export interface CommandContext {
  /** When set, write through this transaction (the idempotency middleware owns it); the owner retries, not the handler. */
  readonly session?: EventStoreSession;
  /**
   * Registers work to run only after the surrounding transaction commits (snapshots). Outside a transaction the work
   * runs at once; inside a `session` given without `afterCommit`, snapshots are not taken (the next one is, outside).
   */
  readonly afterCommit?: (fn: () => Promise<void>) => void;
  /** True when a retry middleware already retries on conflict, so handlers should not retry themselves. */
  readonly retrying?: boolean;
}

export interface LoadedAggregate<State> {
  readonly streamId: string;
  readonly state: State;
  /** The version of the last event folded into the state; 0 for a new stream. */
  readonly version: number;
  /** How many events were read from the store (after the snapshot, if one was used). */
  readonly eventsRead: number;
  readonly fromSnapshot: boolean;
}

/** See {@link RepositoryOptions.cache}. */
export interface StateCacheOptions {
  /** Aggregates kept; the least recently used is dropped first. Default 10,000. */
  readonly maxEntries?: number;
}

export interface RepositoryOptions {
  snapshots?: SnapshotStore;
  /**
   * Keep each aggregate's state and version in memory after a command, so that the next command on it decides at once
   * instead of reading the stream again. Safe with other writers: the append still carries the version the state is
   * of, so a state that another process or another repository made stale is refused with a ConcurrencyError, dropped,
   * and the command is loaded from the store and decided again at once (that extra attempt does not count against
   * `retry`). A decision that appends nothing cannot be checked that way, so a refusal (`decide` throwing) or an empty
   * decision on a cached state is made again on the store's state before it is answered: the cache speeds up the
   * commands that append, and changes no answer. The state is treated as immutable: `decide` must not change it, and `evolve` must depend only on an
   * event's type, data and metadata (the events a command appended are folded in without reading them back). A command
   * inside a transaction (`session`) does not use it; what it appends replaces the entry once the transaction has
   * committed when the transaction's owner gives `afterCommit` (the idempotency middleware does), and drops it
   * otherwise. Off by default; `true` is `{ maxEntries: 10_000 }`.
   */
  cache?: boolean | StateCacheOptions;
  retry?: RetryOptions;
  /** Called when saving a snapshot fails; the command has succeeded regardless. Default: ignore. */
  onSnapshotError?: (error: unknown, streamId: string) => void;
}

export interface Repository<State, C extends Command, E extends DomainEvent> {
  readonly aggregate: Aggregate<State, C, E>;
  /** The stream id of an aggregate id: `<category>-<id>`. */
  streamIdOf(id: string): string;
  /** Snapshot (when there is a valid one) + the events after it, folded. */
  load(id: string, options?: { session?: EventStoreSession }): Promise<LoadedAggregate<State>>;
  /**
   * Loads, decides and appends with the loaded version as the expected version. On a ConcurrencyError it reloads and
   * decides again (bounded, with jitter), unless it runs inside a caller's transaction or a retry middleware.
   * A decision with no events appends nothing. Domain errors thrown by `decide` are not retried.
   * With `expectedVersion`, the command is refused with a ConcurrencyError when the aggregate is at another version.
   */
  handle(id: string, command: C, options?: CommandContext & { expectedVersion?: number }): Promise<CommandResult>;
  /** Takes a snapshot now (the on-demand policy). Returns null for a stream with no events. */
  snapshot(id: string): Promise<LoadedAggregate<State> | null>;
  /** A command-bus handler that sends each command to the aggregate whose id `idOf` returns. */
  handler(idOf: (command: C) => string): (command: C, context: CommandContext) => Promise<CommandResult>;
}

/** Events per round trip when loading an aggregate: the whole tail is read anyway, so fewer, larger pages. */
const LOAD_PAGE_SIZE = 5000;

export function createRepository<State, C extends Command, E extends DomainEvent>(
  store: EventStore,
  aggregate: Aggregate<State, C, E>,
  options: RepositoryOptions = {},
): Repository<State, C, E> {
  const policy = aggregate.snapshots;
  const snapshotStore = policy ? options.snapshots : undefined;
  const stateVersion = policy?.stateVersion ?? 1;
  const serialize = (state: State): JsonValue => (policy?.serialize ? policy.serialize(state) : (state as JsonValue));
  const deserialize = (json: JsonValue): State =>
    policy?.deserialize ? policy.deserialize(json) : (structuredClone(json) as State);
  const streamIdOf = (id: string) => assertStreamId(`${aggregate.category}-${id}`);
  const cache = options.cache ? new StateCache<State>(options.cache === true ? {} : options.cache) : null;

  const saveSnapshot = async (streamId: string, version: number, state: State) => {
    if (!snapshotStore) return;
    try {
      await snapshotStore.save({ streamId, version, stateVersion, state: serialize(state) });
    } catch (error) {
      options.onSnapshotError?.(error, streamId);
    }
  };
  /**
   * Work that must wait for the surrounding transaction to commit (snapshots, cached states). In a transaction with no
   * `afterCommit` (one the caller opened), it is not done at all: a snapshot saved on another connection before the
   * commit of a transaction that then rolls back would hold events the log does not, and every later command would
   * conflict with it.
   */
  const runsLater = (context: CommandContext) => context.afterCommit !== undefined || !context.session;
  const later = async (context: CommandContext, fn: () => Promise<void>) => {
    if (context.afterCommit) context.afterCommit(fn);
    else if (!context.session) await fn();
  };

  const load = async (streamId: string, context: CommandContext = {}): Promise<LoadedAggregate<State>> => {
    const reader = context.session ?? store;
    let state = aggregate.initialState();
    let version = 0;
    let fromSnapshot = false;
    let staleSnapshot = false;
    const snapshot = snapshotStore ? await snapshotStore.load(streamId, context.session) : null;
    if (snapshot && snapshot.stateVersion === stateVersion) {
      state = deserialize(snapshot.state);
      version = snapshot.version;
      fromSnapshot = true;
    } else if (snapshot) {
      staleSnapshot = true;
    }
    let eventsRead = 0;
    for await (const event of reader.readStream(streamId, { from: version + 1, pageSize: LOAD_PAGE_SIZE })) {
      state = aggregate.evolve(state, event as unknown as E);
      version = event.version;
      eventsRead++;
    }
    if (staleSnapshot && version > 0) {
      const replaced = state;
      const at = version;
      await later(context, () => saveSnapshot(streamId, at, replaced));
    }
    return { streamId, state, version, eventsRead, fromSnapshot };
  };

  const decideAndAppend = async (
    id: string,
    command: C,
    context: CommandContext & { expectedVersion?: number },
    fresh = false,
  ): Promise<CommandResult> => {
    const streamId = streamIdOf(id);
    // A command takes its aggregate's entry out of the cache while it runs, so two commands never share one state.
    // Inside a transaction the cache is not used (the state is read in the transaction); what the command appends
    // replaces the entry once the transaction has committed, when its owner says when that is (`afterCommit`), and
    // drops it otherwise.
    const entry = cache !== null && !context.session && !fresh ? cache.take(streamId) : undefined;
    const cached =
      entry !== undefined && (context.expectedVersion === undefined || context.expectedVersion === entry.version);
    const loaded: LoadedAggregate<State> = cached
      ? { streamId, state: entry.state, version: entry.version, eventsRead: 0, fromSnapshot: false }
      : await load(streamId, context);
    if (context.expectedVersion !== undefined && context.expectedVersion !== loaded.version) {
      throw new ConcurrencyError(
        streamId,
        context.expectedVersion,
        loaded.version === 0 ? 'no_stream' : loaded.version,
        loaded.version,
      );
    }
    let decided: E | readonly E[];
    try {
      decided = await aggregate.decide(command, loaded.state);
    } catch (error) {
      // A refusal must not rest on a state that may be stale (another writer may have made the command valid):
      // decide again on what the store holds, and answer with that.
      if (cached) return decideAndAppend(id, command, context, true);
      throw error;
    }
    const events: readonly E[] = Array.isArray(decided) ? decided : [decided as E];
    if (events.length === 0) {
      // Nothing to do, says the cached state: only the store can confirm it (no append will check it).
      if (cached) return decideAndAppend(id, command, context, true);
      if (cache !== null) await later(context, async () => cache.keep(streamId, loaded.version, loaded.state));
      return { streamId, version: loaded.version, position: null, events: [] };
    }
    const stamp: EventMetadata = {
      correlationId: command.metadata.correlationId ?? command.id,
      causationId: command.id,
      ...(command.metadata.traceparent === undefined ? {} : { traceparent: command.metadata.traceparent }),
      ...(command.metadata.tenant === undefined ? {} : { tenant: command.metadata.tenant }),
      ...(command.metadata.actor === undefined ? {} : { actor: command.metadata.actor }),
    };
    const inputs = events.map((event) => ({
      id: newId(),
      type: event.type,
      data: event.data,
      metadata: { ...event.metadata, ...stamp },
    }));
    const writer = context.session ?? store;
    let result: AppendResult;
    try {
      result = await writer.append(streamId, inputs, {
        expectedVersion: loaded.version === 0 ? 'no_stream' : loaded.version,
      });
    } catch (error) {
      // The cached state was stale (another writer moved the stream on): decide again on what the store holds.
      if (cached && error instanceof ConcurrencyError) return decideAndAppend(id, command, context, true);
      throw error;
    }
    const appended = inputs.map((input, index): AppendedEvent => ({
      ...input,
      streamId,
      version: result.firstVersion + index,
    }));
    const every = policy?.every;
    const snapshotDue =
      snapshotStore !== undefined &&
      every !== undefined &&
      Math.floor(result.version / every) > Math.floor(loaded.version / every);
    const keepNew = cache !== null && !result.duplicate && runsLater(context);
    if (snapshotDue || keepNew) {
      let state = loaded.state;
      for (const event of appended) state = aggregate.evolve(state, event as unknown as E);
      if (snapshotDue) await later(context, () => saveSnapshot(streamId, result.version, state));
      if (keepNew) await later(context, async () => cache.keep(streamId, result.version, state));
    }
    // Appended in a transaction of the caller's (or a duplicate): whatever is cached for the stream is stale now.
    if (cache !== null && !keepNew) cache.take(streamId);
    return {
      streamId,
      version: result.version,
      position: result.position,
      events: appended,
      ...(result.duplicate ? { duplicate: true } : {}),
    };
  };

  const handle: Repository<State, C, E>['handle'] = (id, command, context = {}) =>
    context.session || context.retrying || context.expectedVersion !== undefined
      ? decideAndAppend(id, command, context)
      : retryOnConflict(() => decideAndAppend(id, command, context), options.retry);

  return {
    aggregate,
    streamIdOf,
    load: (id, loadOptions) => load(streamIdOf(id), loadOptions ?? {}),
    handle,
    async snapshot(id) {
      const loaded = await load(streamIdOf(id));
      if (loaded.version === 0) return null;
      await saveSnapshot(loaded.streamId, loaded.version, loaded.state);
      return loaded;
    },
    handler: (idOf) => (command, context) => handle(idOf(command), command, context),
  };
}

/**
 * The states of recently used aggregates, least recently used first (a Map keeps insertion order). An entry is taken
 * out while a command runs on it and put back, newer, when the command succeeds.
 */
class StateCache<State> {
  private readonly entries = new Map<string, { readonly version: number; readonly state: State }>();
  private readonly maxEntries: number;

  constructor(options: StateCacheOptions) {
    const maxEntries = options.maxEntries ?? 10_000;
    if (!(Number.isSafeInteger(maxEntries) && maxEntries >= 1))
      throw new ValidationError(`cache.maxEntries must be a whole number of 1 or more; got ${safeQuote(maxEntries)}`);
    this.maxEntries = maxEntries;
  }

  take(streamId: string): { readonly version: number; readonly state: State } | undefined {
    const entry = this.entries.get(streamId);
    if (entry) this.entries.delete(streamId);
    return entry;
  }

  /** Keeps a state unless a newer one of the same stream is already kept (a command that finished first). */
  keep(streamId: string, version: number, state: State): void {
    const current = this.entries.get(streamId);
    if (current && current.version >= version) return;
    this.entries.delete(streamId);
    this.entries.set(streamId, { version, state });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }
}
