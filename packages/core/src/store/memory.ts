import { systemClock, type Clock } from '../clock.js';
import {
  EventIdConflictError,
  safeQuote,
  StoreClosedError,
  StreamDeletedError,
  UniquenessError,
  ValidationError,
} from '../errors.js';
import type { EventInput, PreparedEvent, RecordedEvent } from '../event.js';
import { formatPosition, positionBeforeTransaction, type Position } from '../position.js';
import { assertStreamId, categoryOf } from '../stream-id.js';
import { encodedEvent } from '../transport/codec.js';
import { assertNoReleases, ClaimsRebuild, compileUniqueness, type Uniqueness } from './claims.js';
import type {
  AppendOptions,
  AppendResult,
  EncodedReadAllPage,
  EventStore,
  EventStoreOptions,
  EventStoreSession,
  ReadAllOptions,
  ReadAllPage,
  ReadStreamOptions,
  StreamInfo,
  StreamMetadata,
  ExpectedVersion,
} from './contract.js';
import {
  assertExpectedVersion,
  assertStreamIds,
  assertStreamMetadata,
  checkExpectedVersion,
  firstVisibleVersion,
  normaliseReadAllOptions,
  normaliseReadStreamOptions,
  prepareAppend,
} from './validate.js';

export interface InMemoryStoreOptions extends EventStoreOptions {
  /** What `recordedAt`, `maxAge` and the age of an open transaction are read from. Default `systemClock`. */
  clock?: Clock;
}

interface StoredEvent {
  readonly id: string;
  readonly type: string;
  readonly streamId: string;
  readonly category: string;
  readonly version: number;
  readonly position: Position;
  readonly recordedAt: Date;
  readonly dataJson: string;
  readonly metadataJson: string;
}

interface StreamState {
  version: number;
  /** Versions below this were hidden by a soft delete. */
  hiddenBefore: number;
  deleted: 'soft' | 'hard' | null;
  metadata: StreamMetadata;
}

/** The committed state, or a transaction's pending changes layered over it. */
interface State {
  stream(id: string): StreamState | undefined;
  setStream(id: string, state: StreamState): void;
  streamEvents(id: string): readonly StoredEvent[];
  eventById(id: string): StoredEvent | undefined;
  addEvents(streamId: string, events: StoredEvent[]): void;
  removeStreamEvents(id: string): void;
  /** The owner of a claim (`scope NUL hash`), if any. */
  claimOwner(key: string): string | undefined;
  /** Claims (`owner`) or releases (null) a key. */
  setClaim(key: string, owner: string | null): void;
  /** The keys a stream holds. */
  claimsOf(owner: string): string[];
}

class CommittedState implements State {
  readonly streams = new Map<string, StreamState>();
  readonly byStream = new Map<string, StoredEvent[]>();
  readonly ids = new Map<string, StoredEvent>();
  /** The global log, sorted by position. */
  log: StoredEvent[] = [];
  /** Uniqueness claims: `scope NUL hash` → owner stream, and each owner's keys. */
  readonly claims = new Map<string, string>();
  readonly owned = new Map<string, Set<string>>();

  stream(id: string) {
    return this.streams.get(id);
  }
  setStream(id: string, state: StreamState) {
    this.streams.set(id, state);
  }
  streamEvents(id: string) {
    return this.byStream.get(id) ?? [];
  }
  eventById(id: string) {
    return this.ids.get(id);
  }
  addEvents(streamId: string, events: StoredEvent[]) {
    let list = this.byStream.get(streamId);
    if (!list) this.byStream.set(streamId, (list = []));
    for (const event of events) {
      list.push(event);
      this.ids.set(event.id, event);
      this.log.push(event);
    }
  }
  removeStreamEvents(id: string) {
    const removed = this.byStream.get(id);
    if (!removed || removed.length === 0) return;
    this.byStream.delete(id);
    for (const event of removed) this.ids.delete(event.id);
    this.log = this.log.filter((event) => event.streamId !== id);
  }
  claimOwner(key: string) {
    return this.claims.get(key);
  }
  setClaim(key: string, owner: string | null) {
    const previous = this.claims.get(key);
    if (previous !== undefined) this.owned.get(previous)?.delete(key);
    if (owner === null) {
      this.claims.delete(key);
      return;
    }
    this.claims.set(key, owner);
    let keys = this.owned.get(owner);
    if (!keys) this.owned.set(owner, (keys = new Set()));
    keys.add(key);
  }
  claimsOf(owner: string) {
    return [...(this.owned.get(owner) ?? [])];
  }
  /** Replaces every claim (a rebuild). */
  replaceClaims(claims: Iterable<[key: string, owner: string]>) {
    this.claims.clear();
    this.owned.clear();
    for (const [key, owner] of claims) this.setClaim(key, owner);
  }
}

class PendingState implements State {
  private readonly streams = new Map<string, StreamState>();
  private readonly added = new Map<string, StoredEvent[]>();
  private readonly removed = new Set<string>();
  private readonly claims = new Map<string, string | null>();
  constructor(private readonly base: CommittedState) {}

  stream(id: string) {
    return this.streams.get(id) ?? this.base.stream(id);
  }
  setStream(id: string, state: StreamState) {
    this.streams.set(id, state);
  }
  streamEvents(id: string) {
    const base = this.removed.has(id) ? [] : this.base.streamEvents(id);
    const added = this.added.get(id) ?? [];
    return added.length === 0 ? base : [...base, ...added];
  }
  eventById(id: string) {
    for (const events of this.added.values()) {
      const found = events.find((event) => event.id === id);
      if (found) return found;
    }
    const found = this.base.eventById(id);
    return found && !this.removed.has(found.streamId) ? found : undefined;
  }
  addEvents(streamId: string, events: StoredEvent[]) {
    const list = this.added.get(streamId) ?? [];
    this.added.set(streamId, [...list, ...events]);
  }
  removeStreamEvents(id: string) {
    this.removed.add(id);
    this.added.delete(id);
  }
  claimOwner(key: string) {
    return this.claims.has(key) ? (this.claims.get(key) ?? undefined) : this.base.claimOwner(key);
  }
  setClaim(key: string, owner: string | null) {
    this.claims.set(key, owner);
  }
  claimsOf(owner: string) {
    const keys = this.base.claimsOf(owner).filter((key) => !this.claims.has(key));
    for (const [key, holder] of this.claims) if (holder === owner) keys.push(key);
    return keys;
  }
  commit() {
    for (const [key, owner] of this.claims) this.base.setClaim(key, owner);
    for (const id of this.removed) this.base.removeStreamEvents(id);
    for (const [id, state] of this.streams) this.base.setStream(id, state);
    const added = [...this.added.entries()].flatMap(([streamId, events]) =>
      events.map((event) => ({ streamId, event })),
    );
    added.sort((a, b) => (a.event.position < b.event.position ? -1 : 1));
    for (const { streamId, event } of added) this.base.addEvents(streamId, [event]);
  }
}

/**
 * An event store in process memory: the full contract, for unit tests, prototypes and single-process apps that can
 * afford to lose everything on exit. Writers are serialised (one at a time, transactions included), readers never wait.
 */
export function createInMemoryStore(options: InMemoryStoreOptions = {}): InMemoryEventStore {
  return new MemoryStore(options);
}

/** The in-memory store also tells listeners when events were committed (subscriptions use it to wake up). */
export interface InMemoryEventStore extends EventStore {
  onAppended(listener: () => void): () => void;
}

class MemoryStore implements InMemoryEventStore {
  private readonly committed = new CommittedState();
  private readonly clock: Clock;
  private writeLock: Promise<void> = Promise.resolve();
  private nextTransaction = 1n;
  private nextSequence = 1n;
  private openTransaction: { id: bigint; startedAt: number } | null = null;
  private closed = false;
  private readonly listeners = new Set<() => void>();
  private readonly uniqueness: Uniqueness | null;

  constructor(private readonly options: InMemoryStoreOptions) {
    this.clock = options.clock ?? systemClock;
    this.uniqueness = compileUniqueness(options.uniqueness, options.events);
  }

  async append(streamId: string, events: readonly EventInput[], options?: AppendOptions): Promise<AppendResult> {
    this.assertOpen('append');
    const prepared = await this.prepare(streamId, events, options);
    const result = await this.write((transaction) => this.appendTo(this.committed, transaction, prepared));
    if (!result.duplicate) this.notify();
    return result;
  }

  readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<RecordedEvent> {
    return this.readStreamFrom(() => this.committed, streamId, options);
  }

  async streamInfo(streamId: string): Promise<StreamInfo> {
    this.assertOpen('read stream info');
    return infoOf(this.committed, assertStreamId(streamId));
  }

  async setStreamMetadata(
    streamId: string,
    metadata: StreamMetadata,
    options?: { expectedVersion?: ExpectedVersion },
  ): Promise<void> {
    this.assertOpen('set stream metadata');
    const id = assertStreamId(streamId);
    const checked = assertStreamMetadata(metadata);
    const expected = assertExpectedVersion(options?.expectedVersion);
    await this.write(() => setMetadataIn(this.committed, id, checked, expected));
  }

  async getStreamMetadata(streamId: string): Promise<StreamMetadata> {
    this.assertOpen('get stream metadata');
    return structuredClone(this.committed.stream(assertStreamId(streamId))?.metadata ?? {});
  }

  async deleteStream(streamId: string, options?: { expectedVersion?: ExpectedVersion; hard?: boolean }): Promise<void> {
    this.assertOpen('delete a stream');
    const id = assertStreamId(streamId);
    const expected = assertExpectedVersion(options?.expectedVersion);
    await this.write(() => deleteIn(this.committed, id, expected, options?.hard === true));
  }

  async *readAll(options?: ReadAllOptions): AsyncIterable<RecordedEvent> {
    const normalised = normaliseReadAllOptions(options);
    let after = normalised.after;
    let remaining = normalised.limit;
    while (remaining > 0) {
      const page = await this.readAllPage({ ...options, after, limit: Math.min(remaining, normalised.pageSize) });
      for (const event of page.events) yield event;
      remaining -= page.events.length;
      if (page.atEnd) return;
      after = page.next;
    }
  }

  async readAllPage(options?: ReadAllOptions): Promise<ReadAllPage> {
    this.assertOpen('read all');
    const { after, limit, types: filterTypes, categories } = normaliseReadAllOptions(options, 1000);
    const types = filterTypes && this.options.events ? this.options.events.storedNames(filterTypes) : filterTypes;
    const boundary = this.boundary();
    const log = this.committed.log;
    const events: RecordedEvent[] = [];
    for (let index = firstAfter(log, after); index < log.length && events.length < limit; index++) {
      const stored = log[index]!;
      if (types && !types.includes(stored.type)) continue;
      if (categories && !categories.includes(stored.category)) continue;
      events.push(this.toRecorded(stored));
    }
    if (events.length === limit) return { events, next: events[events.length - 1]!.position, atEnd: false };
    return { events, next: boundary > after ? boundary : after, atEnd: true };
  }

  async claimOwner(scope: string, value: string): Promise<string | null> {
    this.assertOpen('look up a claim');
    return this.claimOwnerIn(this.committed, scope, value);
  }

  async rebuildClaims() {
    this.assertOpen('rebuild the claims');
    return this.write(() => {
      if (!this.uniqueness) {
        this.committed.replaceClaims([]);
        return { claims: 0, conflicts: [] };
      }
      const rebuild = new ClaimsRebuild(this.uniqueness);
      for (const stored of this.committed.log) rebuild.apply(this.toRecorded(stored));
      this.committed.replaceClaims([...rebuild.claims].map(([key, { owner }]) => [key, owner]));
      return rebuild.result();
    });
  }

  private claimOwnerIn(state: State, scope: string, value: string): string | null {
    if (!this.uniqueness) this.noRules('claimOwner', scope);
    const uniqueness = this.uniqueness!;
    const hash = uniqueness.hashOf(uniqueness.assertScope(scope, 'claimOwner'), value, 'claimOwner');
    return state.claimOwner(`${scope}\u0000${hash}`) ?? null;
  }

  private noRules(operation: string, scope: unknown): never {
    throw new ValidationError(
      `${operation}: ${safeQuote(scope)} is not a uniqueness scope: this store has no uniqueness rules`,
    );
  }

  async readAllPageEncoded(options?: ReadAllOptions): Promise<EncodedReadAllPage> {
    const { events, next, atEnd } = await this.readAllPage(options);
    return { events: events.map(encodedEvent), next, atEnd };
  }

  async headPosition(): Promise<Position> {
    this.assertOpen('read the head position');
    return this.boundary();
  }

  async nextPosition(): Promise<Position> {
    this.assertOpen('read the next position');
    // Every position given so far belongs to a transaction numbered below the next one.
    return formatPosition(this.nextTransaction, 0n);
  }

  /** Writers run one at a time here, so a transaction holds every stream already: only the ids are checked. */
  async lockStreams(streamIds: readonly string[]): Promise<void> {
    this.assertOpen('lock streams');
    assertStreamIds(streamIds);
  }

  async readAllHoldback() {
    this.assertOpen('read the holdback');
    // Pending transactions are invisible until they commit whole, so nothing committed is ever held back here.
    return {
      heldBackEvents: 0,
      oldestOpenTransactionMs: this.openTransaction ? this.clock.now() - this.openTransaction.startedAt : null,
    };
  }

  async transaction<T>(fn: (session: EventStoreSession) => Promise<T>): Promise<T> {
    this.assertOpen('start a transaction');
    return this.write(async (transaction) => {
      const pending = new PendingState(this.committed);
      let active = true;
      const guard = (operation: string) => {
        if (!active) throw new StoreClosedError(`${operation} (the transaction already ended)`);
      };
      const session: EventStoreSession = {
        append: async (streamId, events, options) => {
          guard('append');
          const prepared = await this.prepare(streamId, events, options);
          guard('append');
          return this.appendTo(pending, transaction, prepared);
        },
        readStream: (streamId, options) => this.readStreamFrom(() => pending, streamId, options),
        streamInfo: async (streamId) => infoOf(pending, assertStreamId(streamId)),
        setStreamMetadata: async (streamId, metadata, options) => {
          guard('set stream metadata');
          setMetadataIn(
            pending,
            assertStreamId(streamId),
            assertStreamMetadata(metadata),
            assertExpectedVersion(options?.expectedVersion),
          );
        },
        getStreamMetadata: async (streamId) =>
          structuredClone(pending.stream(assertStreamId(streamId))?.metadata ?? {}),
        deleteStream: async (streamId, options) => {
          guard('delete a stream');
          deleteIn(
            pending,
            assertStreamId(streamId),
            assertExpectedVersion(options?.expectedVersion),
            options?.hard === true,
          );
        },
        lockStreams: async (streamIds) => {
          guard('lock streams');
          assertStreamIds(streamIds);
        },
        claimOwner: async (scope, value) => {
          guard('look up a claim');
          return this.claimOwnerIn(pending, scope, value);
        },
      };
      try {
        const result = await fn(session);
        active = false;
        pending.commit();
        this.notify();
        return result;
      } finally {
        active = false;
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
  }

  onAppended(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify() {
    for (const listener of this.listeners) queueMicrotask(listener);
  }

  /** Stored event to recorded event, upcast by the registry: every read path goes through here. */
  private toRecorded(stored: StoredEvent): RecordedEvent {
    const event = toRecorded(stored);
    return this.options.events ? this.options.events.upcast(event) : event;
  }

  private assertOpen(operation: string) {
    if (this.closed) throw new StoreClosedError(operation);
  }

  private prepare(streamId: string, events: readonly EventInput[], options?: AppendOptions) {
    const releases = options?.releases;
    if (releases !== undefined) {
      if (!this.uniqueness) assertNoReleases(String(streamId), releases);
      else events = this.uniqueness.withReleases(String(streamId), events, releases);
    }
    return prepareAppend(streamId, events, options, {
      registry: this.options.events,
      maxEventBytes: this.options.maxEventBytes,
    });
  }

  /** Runs a write alone: one writer at a time, each with its own transaction number, so positions follow commit order. */
  private write<T>(fn: (transaction: bigint) => T | Promise<T>): Promise<T> {
    const run = this.writeLock.then(async () => {
      this.assertOpen('write');
      const transaction = this.nextTransaction++;
      this.openTransaction = { id: transaction, startedAt: this.clock.now() };
      try {
        return await fn(transaction);
      } finally {
        this.openTransaction = null;
      }
    });
    this.writeLock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private boundary(): Position {
    return positionBeforeTransaction(this.openTransaction?.id ?? this.nextTransaction);
  }

  private appendTo(
    state: State,
    transaction: bigint,
    prepared: Awaited<ReturnType<typeof prepareAppend>>,
  ): AppendResult {
    const { streamId, expectedVersion, events } = prepared;
    const stream = state.stream(streamId) ?? { version: 0, hiddenBefore: 0, deleted: null, metadata: {} };
    if (stream.deleted === 'hard') throw new StreamDeletedError(streamId);
    const duplicate = findDuplicate(state, streamId, events);
    if (duplicate) return duplicate;
    checkExpectedVersion(streamId, expectedVersion, { version: stream.version, exists: exists(stream) });
    const claims = this.uniqueness ? claimChanges(state, this.uniqueness, streamId, events) : null;
    const recordedAt = new Date(this.clock.now());
    const stored = events.map((event, index): StoredEvent => ({
      id: event.id,
      type: event.type,
      streamId,
      category: categoryOf(streamId),
      version: stream.version + index + 1,
      position: formatPosition(transaction, this.nextSequence++),
      recordedAt,
      dataJson: event.dataJson,
      metadataJson: event.metadataJson,
    }));
    state.addEvents(streamId, stored);
    state.setStream(streamId, { ...stream, version: stream.version + events.length, deleted: null });
    if (claims) for (const [key, owner] of claims) state.setClaim(key, owner);
    const last = stored[stored.length - 1]!;
    return {
      streamId,
      version: last.version,
      firstVersion: stored[0]!.version,
      position: last.position,
      duplicate: false,
    };
  }

  private async *readStreamFrom(
    state: () => State,
    streamId: string,
    options?: ReadStreamOptions,
  ): AsyncIterable<RecordedEvent> {
    this.assertOpen('read a stream');
    const id = assertStreamId(streamId);
    const { direction, from, limit } = normaliseReadStreamOptions(options);
    const current = state();
    const stream = current.stream(id);
    if (stream?.deleted === 'hard') throw new StreamDeletedError(id);
    if (!stream || stream.version === 0) return;
    const events = current.streamEvents(id);
    const first = firstVisibleVersion(stream, stream.metadata);
    const minRecordedAt =
      stream.metadata.maxAge === undefined ? null : this.clock.now() - stream.metadata.maxAge * 1000;
    const visible = (event: StoredEvent) =>
      event.version >= first && (minRecordedAt === null || event.recordedAt.getTime() >= minRecordedAt);
    let yielded = 0;
    if (direction === 'forwards') {
      for (let version = Math.max(from ?? 1, first); version <= events.length && yielded < limit; version++) {
        const event = events[version - 1]!;
        if (!visible(event)) continue;
        yielded++;
        yield this.toRecorded(event);
      }
    } else {
      for (
        let version = Math.min(from ?? stream.version, events.length);
        version >= first && yielded < limit;
        version--
      ) {
        const event = events[version - 1]!;
        if (!visible(event)) continue;
        yielded++;
        yield this.toRecorded(event);
      }
    }
  }
}

function exists(stream: StreamState): boolean {
  return stream.version > 0 && stream.deleted === null;
}

function infoOf(state: State, streamId: string): StreamInfo {
  const stream = state.stream(streamId);
  if (!stream) return { streamId, exists: false, version: 0, deleted: null };
  return { streamId, exists: exists(stream), version: stream.version, deleted: stream.deleted };
}

function setMetadataIn(state: State, streamId: string, metadata: StreamMetadata, expected: ExpectedVersion) {
  const stream = state.stream(streamId) ?? { version: 0, hiddenBefore: 0, deleted: null, metadata: {} };
  if (stream.deleted === 'hard') throw new StreamDeletedError(streamId);
  checkExpectedVersion(streamId, expected, { version: stream.version, exists: exists(stream) });
  state.setStream(streamId, { ...stream, metadata });
}

function deleteIn(state: State, streamId: string, expected: ExpectedVersion, hard: boolean) {
  const stream = state.stream(streamId);
  if (stream?.deleted === 'hard') throw new StreamDeletedError(streamId);
  const current = stream ?? { version: 0, hiddenBefore: 0, deleted: null, metadata: {} };
  checkExpectedVersion(streamId, expected, { version: current.version, exists: exists(current) });
  if (hard) {
    state.removeStreamEvents(streamId);
    // The events are gone from the log, so are the claims they made (a rebuild from the log agrees).
    for (const key of state.claimsOf(streamId)) state.setClaim(key, null);
    state.setStream(streamId, { ...current, deleted: 'hard' });
  } else if (exists(current)) {
    state.setStream(streamId, { ...current, deleted: 'soft', hiddenBefore: current.version + 1 });
  }
}

/** The original result when this exact batch is already stored in this stream; a conflict when its ids are stored otherwise. */
function findDuplicate(state: State, streamId: string, events: readonly PreparedEvent[]): AppendResult | null {
  const found = events.map((event) => state.eventById(event.id));
  if (found.every((event) => event === undefined)) return null;
  const first = found[0];
  const sameBatch =
    first !== undefined &&
    found.every(
      (event, index) => event !== undefined && event.streamId === streamId && event.version === first.version + index,
    );
  if (!sameBatch)
    throw new EventIdConflictError(
      streamId,
      found.flatMap((event, index) => (event ? [events[index]!.id] : [])),
    );
  const last = found[found.length - 1]!;
  return { streamId, version: last.version, firstVersion: first.version, position: last.position, duplicate: true };
}

/**
 * The claims an append makes and releases (key → owner, or null), checked against `state` before anything is
 * written: a value another stream holds is a {@link UniquenessError}.
 */
function claimChanges(
  state: State,
  uniqueness: Uniqueness,
  streamId: string,
  events: readonly PreparedEvent[],
): Map<string, string | null> | null {
  const operations = uniqueness.operationsOfAppend(streamId, events);
  if (!operations) return null;
  const changes = new Map<string, string | null>();
  const ownerOf = (key: string) => (changes.has(key) ? changes.get(key) : state.claimOwner(key)) ?? null;
  for (const operation of operations) {
    if (operation.op === 'release') {
      const prefix = `${operation.scope}\u0000`;
      const held = new Set([...state.claimsOf(streamId), ...changes.keys()]);
      for (const key of held) if (key.startsWith(prefix) && ownerOf(key) === streamId) changes.set(key, null);
      continue;
    }
    const key = `${operation.scope}\u0000${operation.hash}`;
    const owner = ownerOf(key);
    if (owner !== null && owner !== streamId) throw new UniquenessError(operation.scope, owner, streamId);
    changes.set(key, streamId);
  }
  return changes;
}

function firstAfter(log: readonly StoredEvent[], after: Position): number {
  let low = 0;
  let high = log.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (log[middle]!.position <= after) low = middle + 1;
    else high = middle;
  }
  return low;
}

function toRecorded(event: StoredEvent): RecordedEvent {
  return {
    id: event.id,
    type: event.type,
    streamId: event.streamId,
    version: event.version,
    position: event.position,
    recordedAt: new Date(event.recordedAt.getTime()),
    data: JSON.parse(event.dataJson),
    metadata: JSON.parse(event.metadataJson),
  };
}
