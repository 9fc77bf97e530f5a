import type { Command } from '../command.js';
import { ConcurrencyError } from '../errors.js';
import type { EventMetadata } from '../event.js';
import { newId } from '../ids.js';
import type { JsonValue } from '../json.js';
import type { Position } from '../position.js';
import { assertStreamId } from '../stream-id.js';
import type { EventStore, EventStoreSession } from '../store/contract.js';
import type { Aggregate, DomainEvent } from './aggregate.js';
import { retryOnConflict, type RetryOptions } from './retry.js';
import type { SnapshotStore } from './snapshots.js';
import { afterCommit } from './after-commit.js';
import { withStateCache } from './state-cache.js';

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

/** What one decision appended, and the state after it. */
export interface Decided<State> {
  readonly result: CommandResult;
  /** The state after the appended events (folded on the first call only). */
  readonly state: () => State;
}

/**
 * The steps of a command, for decorators of the repository (the state cache): each step is what the repository does
 * itself, so a decorator changes where a state comes from or where it goes, and nothing of how a command is decided.
 */
export interface RepositorySteps<State, C extends Command, E extends DomainEvent> {
  /** Snapshot (when there is a valid one) + the events after it, folded, in the context's transaction if any. */
  load(streamId: string, context?: CommandContext): Promise<LoadedAggregate<State>>;
  /** Refuses a command whose `expectedVersion` is not the loaded version, then runs `decide`: its refusals throw. */
  decide(
    command: C,
    loaded: LoadedAggregate<State>,
    context: CommandContext & { expectedVersion?: number },
  ): Promise<readonly E[]>;
  /** Appends the decided events at the loaded version (a ConcurrencyError when the stream moved on); none: nothing. */
  append(
    command: C,
    loaded: LoadedAggregate<State>,
    events: readonly E[],
    context: CommandContext,
  ): Promise<Decided<State>>;
  /** Runs `attempt` again on a conflict, unless the context says someone else retries (see `Repository.handle`). */
  retry<T>(context: CommandContext & { expectedVersion?: number }, attempt: () => Promise<T>): Promise<T>;
}

/** A repository that shows its steps to a decorator. */
export interface SteppedRepository<State, C extends Command, E extends DomainEvent> extends Repository<State, C, E> {
  readonly steps: RepositorySteps<State, C, E>;
}

export function createRepository<State, C extends Command, E extends DomainEvent>(
  store: EventStore,
  aggregate: Aggregate<State, C, E>,
  options: RepositoryOptions = {},
): Repository<State, C, E> {
  const repository = createSteppedRepository(store, aggregate, options);
  return options.cache ? withStateCache(repository, options.cache === true ? {} : options.cache) : repository;
}

/** The repository itself: load → decide → append, retried on conflict. */
function createSteppedRepository<State, C extends Command, E extends DomainEvent>(
  store: EventStore,
  aggregate: Aggregate<State, C, E>,
  options: RepositoryOptions,
): SteppedRepository<State, C, E> {
  const policy = aggregate.snapshots;
  const snapshotStore = policy ? options.snapshots : undefined;
  const stateVersion = policy?.stateVersion ?? 1;
  const serialize = (state: State): JsonValue => (policy?.serialize ? policy.serialize(state) : (state as JsonValue));
  const deserialize = (json: JsonValue): State =>
    policy?.deserialize ? policy.deserialize(json) : (structuredClone(json) as State);
  const streamIdOf = (id: string) => assertStreamId(`${aggregate.category}-${id}`);

  const saveSnapshot = async (streamId: string, version: number, state: State) => {
    if (!snapshotStore) return;
    try {
      await snapshotStore.save({ streamId, version, stateVersion, state: serialize(state) });
    } catch (error) {
      options.onSnapshotError?.(error, streamId);
    }
  };

  const steps: RepositorySteps<State, C, E> = {
    async load(streamId, context = {}) {
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
        await afterCommit(context, () => saveSnapshot(streamId, at, replaced));
      }
      return { streamId, state, version, eventsRead, fromSnapshot };
    },

    async decide(command, loaded, context) {
      if (context.expectedVersion !== undefined && context.expectedVersion !== loaded.version) {
        throw new ConcurrencyError(
          loaded.streamId,
          context.expectedVersion,
          loaded.version === 0 ? 'no_stream' : loaded.version,
          loaded.version,
        );
      }
      const decided = await aggregate.decide(command, loaded.state);
      return Array.isArray(decided) ? decided : [decided as E];
    },

    async append(command, loaded, events, context) {
      const { streamId } = loaded;
      if (events.length === 0) {
        return {
          result: { streamId, version: loaded.version, position: null, events: [] },
          state: () => loaded.state,
        };
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
      const appendResult = await writer.append(streamId, inputs, {
        expectedVersion: loaded.version === 0 ? 'no_stream' : loaded.version,
      });
      const appended = inputs.map((input, index): AppendedEvent => ({
        ...input,
        streamId,
        version: appendResult.firstVersion + index,
      }));
      let after: { state: State } | undefined;
      const state = () => {
        if (!after) {
          let folded = loaded.state;
          for (const event of appended) folded = aggregate.evolve(folded, event as unknown as E);
          after = { state: folded };
        }
        return after.state;
      };
      const every = policy?.every;
      if (
        snapshotStore !== undefined &&
        every !== undefined &&
        Math.floor(appendResult.version / every) > Math.floor(loaded.version / every)
      ) {
        const snapshotted = state();
        await afterCommit(context, () => saveSnapshot(streamId, appendResult.version, snapshotted));
      }
      const result: CommandResult = {
        streamId,
        version: appendResult.version,
        position: appendResult.position,
        events: appended,
        ...(appendResult.duplicate ? { duplicate: true } : {}),
      };
      return { result, state };
    },

    retry: (context, attempt) =>
      context.session || context.retrying || context.expectedVersion !== undefined
        ? attempt()
        : retryOnConflict(attempt, options.retry),
  };

  const handle: Repository<State, C, E>['handle'] = (id, command, context = {}) =>
    steps.retry(context, async () => {
      const loaded = await steps.load(streamIdOf(id), context);
      const events = await steps.decide(command, loaded, context);
      return (await steps.append(command, loaded, events, context)).result;
    });

  return {
    aggregate,
    streamIdOf,
    steps,
    load: (id, loadOptions) => steps.load(streamIdOf(id), loadOptions ?? {}),
    handle,
    async snapshot(id) {
      const loaded = await steps.load(streamIdOf(id));
      if (loaded.version === 0) return null;
      await saveSnapshot(loaded.streamId, loaded.version, loaded.state);
      return loaded;
    },
    handler: (idOf) => (command, context) => handle(idOf(command), command, context),
  };
}
