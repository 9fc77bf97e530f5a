import { systemClock } from '../clock.js';
import { UnknownCollectionError, ValidationError } from '../errors.js';
import type { RecordedEvent } from '../event.js';
import type { Position } from '../position.js';
import type { AppendOptions, EventStore, EventStoreSession, ReadAllFilter } from '../store/contract.js';
import type { EventInput } from '../event.js';
import {
  createSubscription,
  type Subscription,
  type SubscriptionOptions,
  type WaitForOptions,
} from '../subscriptions/engine.js';
import type { SubscriptionStore } from '../subscriptions/contract.js';
import {
  assertCollectionName,
  createInMemoryDocumentStore,
  type DocumentCollection,
  type DocumentStore,
  type StoredDocument,
} from './documents.js';

/** A projection's view of one collection while it handles an event: every write is versioned by that event's position. */
export interface ProjectionDocuments<T> {
  get(id: string): Promise<T | null>;
  /** Writes the document as of this event; false when it already reflects this event or a later one. */
  set(id: string, data: T): Promise<boolean>;
  /** Reads, changes and writes back (`null` deletes); skipped when the document already reflects this event or a later one. */
  update(id: string, change: (current: T | null) => T | null): Promise<boolean>;
  delete(id: string): Promise<boolean>;
}

export interface ProjectionContext<Tx> {
  readonly tx: Tx;
  documents<T = unknown>(collection: string): ProjectionDocuments<T>;
}

export type ProjectionHandler<Tx> = (event: RecordedEvent, context: ProjectionContext<Tx>) => Promise<void> | void;

/**
 * A read model built from events: a name, a version, and a handler per event type that writes documents.
 * Bump `version` when the handlers change: the new version is rebuilt from the start of the log into new collections
 * while the old one keeps serving, then reads switch to it (blue/green).
 */
export interface ProjectionDefinition<Tx = unknown> {
  readonly name: string;
  readonly version: number;
  readonly handlers: Readonly<Record<string, ProjectionHandler<Tx>>>;
  /** Only streams of these categories (the event types come from `handlers`). */
  readonly categories?: readonly string[];
  /**
   * The collections its handlers write (the names given to `documents(...)`). Declared, they are the only ones it
   * serves: a read of any other name is an {@link UnknownCollectionError} (an HTTP 404), and so is a handler's write to
   * one (a mistake in the projection). Undeclared, a read of a collection that does not exist yet is the error.
   */
  readonly collections?: readonly string[];
}

export function defineProjection<Tx = unknown>(projection: ProjectionDefinition<Tx>): ProjectionDefinition<Tx> {
  if (!/^[a-z][a-z0-9_]{0,30}$/.test(projection.name))
    throw new ValidationError(
      `Projection name '${projection.name}' must be a lowercase letter followed by up to 30 lowercase letters, digits or '_'`,
    );
  if (!Number.isInteger(projection.version) || projection.version < 1)
    throw new ValidationError(`Projection '${projection.name}': version must be a whole number of 1 or more`);
  if (Object.keys(projection.handlers).length === 0)
    throw new ValidationError(`Projection '${projection.name}' has no handlers`);
  if (projection.collections !== undefined) {
    if (!Array.isArray(projection.collections) || projection.collections.length === 0)
      throw new ValidationError(
        `Projection '${projection.name}': collections must be a list of one or more collection names`,
      );
    for (const name of projection.collections) assertCollectionName(name);
    if (new Set(projection.collections).size !== projection.collections.length)
      throw new ValidationError(`Projection '${projection.name}': collections names one collection twice`);
  }
  return projection;
}

/** The storage name of a projection version's collection: `<projection>_v<version>_<collection>`. */
export function collectionOf(projection: { name: string }, version: number, collection: string): string {
  return `${projection.name}_v${version}_${assertCollectionName(collection)}`;
}

/** The read filter of a projection: its handlers' event types, and its categories. */
export function filterOf(projection: ProjectionDefinition<never> | ProjectionDefinition): ReadAllFilter {
  return {
    types: Object.keys(projection.handlers),
    ...(projection.categories ? { categories: projection.categories } : {}),
  };
}

/** Applies one event to a projection version, writing through `tx`. */
export async function applyProjection<Tx>(
  projection: ProjectionDefinition<Tx>,
  version: number,
  documents: DocumentStore<Tx>,
  event: RecordedEvent,
  tx: Tx,
): Promise<void> {
  const handler = projection.handlers[event.type];
  if (!handler) return;
  if (projection.categories && !projection.categories.some((category) => event.streamId.startsWith(`${category}-`)))
    return;
  await handler(event, {
    tx,
    documents<T>(name: string): ProjectionDocuments<T> {
      assertDeclared(projection, name);
      const collection = documents.collection<T>(collectionOf(projection, version, name), tx);
      const position: Position = event.position;
      return {
        get: async (id) => (await collection.get(id))?.data ?? null,
        set: (id, data) => collection.put(id, data, position),
        delete: (id) => collection.delete(id, position),
        async update(id, change) {
          const current = await collection.get(id);
          if (current && current.version >= position) return false;
          const next = change(current?.data ?? null);
          return next === null ? collection.delete(id, position) : collection.put(id, next, position);
        },
      };
    },
  });
}

/** A projection that declares its collections serves (and writes) those only. @throws {UnknownCollectionError} */
function assertDeclared(projection: Pick<ProjectionDefinition<never>, 'name' | 'collections'>, name: string): void {
  assertCollectionName(name);
  if (projection.collections && !projection.collections.includes(name))
    throw new UnknownCollectionError(projection.name, name, projection.collections);
}

/** Which version of each projection serves reads. In memory: {@link createInMemoryProjectionCatalog}. */
export interface ProjectionCatalog {
  active(name: string): Promise<number | null>;
  /** Makes `version` the serving version, atomically for every reader. */
  activate(name: string, version: number): Promise<void>;
}

export function createInMemoryProjectionCatalog(): ProjectionCatalog {
  const active = new Map<string, number>();
  return {
    active: async (name) => active.get(name) ?? null,
    activate: async (name, version) => void active.set(name, version),
  };
}

export interface RebuildProgress {
  readonly projection: string;
  readonly version: number;
  readonly done: number;
  readonly total: number;
  readonly eventsPerSecond: number;
  /** Seconds left at the current rate; null until there is a rate. */
  readonly etaSeconds: number | null;
}

export interface AsyncProjectionOptions<Tx> extends Omit<
  SubscriptionOptions<Tx>,
  'name' | 'handle' | 'filter' | 'subscriptions'
> {
  projection: ProjectionDefinition<Tx>;
  subscriptions: SubscriptionStore<Tx>;
  documents: DocumentStore<Tx>;
  catalog: ProjectionCatalog;
  /** Called while a new version is being built. */
  onProgress?: (progress: RebuildProgress) => void;
}

/** A running asynchronous projection: a subscription whose document writes commit with its checkpoint. */
export interface AsyncProjection<Tx> {
  readonly subscription: Subscription;
  /**
   * Starts processing. A version newer than the serving one is built from the start of the log first (the old version
   * keeps serving), then made the serving version, and the old version's collections are dropped.
   */
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * A collection of the serving version, for queries. Reads never create it. A name the projection does not declare
   * (see {@link ProjectionDefinition.collections}), or, when it declares none, one that does not exist, is an
   * {@link UnknownCollectionError}; a name that is not a collection name is a ValidationError.
   */
  collection<T = unknown>(name: string): Promise<ReadCollection<T>>;
  /**
   * Read-your-writes: resolves when this projection has processed the event at `position` (see Subscription.waitFor:
   * `timeoutMs`, and a `signal` that ends the wait at once).
   */
  waitFor(position: Position, options?: WaitForOptions): Promise<void>;
  readonly documents: DocumentStore<Tx>;
}

export interface ReadCollection<T> {
  get(id: string): Promise<T | null>;
  list(options?: { after?: string; limit?: number }): Promise<StoredDocument<T>[]>;
  count(): Promise<number>;
}

export function createAsyncProjection<Tx>(options: AsyncProjectionOptions<Tx>): AsyncProjection<Tx> {
  const { projection, documents, catalog } = options;
  const subscription = createSubscription<Tx>({
    ...options,
    name: `projection-${projection.name}-v${projection.version}`,
    filter: filterOf(projection),
    handle: (event, { tx }) => applyProjection(projection, projection.version, documents, event, tx),
  });
  const servingVersion = async () => (await catalog.active(projection.name)) ?? projection.version;

  return {
    subscription,
    documents,
    async start() {
      const active = await catalog.active(projection.name);
      if (active !== null && active > projection.version) {
        throw new ValidationError(
          `Projection '${projection.name}' v${projection.version} is older than the serving v${active}; deploy v${active} or newer`,
        );
      }
      if (active !== null && active < projection.version) {
        await rebuild(subscription, options);
        await catalog.activate(projection.name, projection.version);
        for (let old = active; old < projection.version; old++)
          await documents.dropCollections(`${projection.name}_v${old}_`);
      } else if (active === null) {
        await catalog.activate(projection.name, projection.version);
      }
      subscription.start();
    },
    stop: () => subscription.stop(),
    async collection<T>(name: string): Promise<ReadCollection<T>> {
      assertDeclared(projection, name);
      const version = await servingVersion();
      const stored = collectionOf(projection, version, name);
      if (!projection.collections && !(await documents.has(stored))) {
        const prefix = `${projection.name}_v${version}_`;
        const known = (await documents.collections(prefix)).map((found) => found.slice(prefix.length));
        throw new UnknownCollectionError(projection.name, name, known);
      }
      return readCollection(documents.collection<T>(stored));
    },
    waitFor: (position, waitOptions) => subscription.waitFor(position, waitOptions),
  };
}

/** How often a rebuild reports its progress. */
const REBUILD_REPORT_MS = 1000;

/** Builds a new projection version from the start of the log, in batches, reporting progress. */
async function rebuild<Tx>(subscription: Subscription, options: AsyncProjectionOptions<Tx>): Promise<void> {
  const clock = options.clock ?? systemClock;
  const started = clock.now();
  const total = (await subscription.status()).lag.events;
  let done = 0;
  const report = async () => {
    const lag = (await subscription.status()).lag.events;
    done = Math.max(done, total - lag);
    const seconds = (clock.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    options.onProgress?.({
      projection: options.projection.name,
      version: options.projection.version,
      done,
      total,
      eventsPerSecond: Math.round(rate),
      etaSeconds: rate > 0 ? Math.max(0, (total - done) / rate) : null,
    });
  };
  const finished = new AbortController();
  const reports = (async () => {
    for (;;) {
      await clock.sleep(REBUILD_REPORT_MS, finished.signal);
      if (finished.signal.aborted) return;
      await report().catch(() => undefined);
    }
  })();
  try {
    await subscription.catchUp();
  } finally {
    finished.abort();
    await reports;
  }
  await report();
}

/**
 * Inline projections: the decorated store runs them in the append's transaction, so the read model and the events
 * commit together, and a failing projection fails the append (nothing is stored).
 */
export function withInlineProjections<Tx>(
  store: EventStore,
  projections: ReadonlyArray<ProjectionDefinition<Tx>>,
  documents: DocumentStore<Tx>,
  transactionOf: (session: EventStoreSession) => Tx,
): EventStore {
  const project = async (
    session: EventStoreSession,
    streamId: string,
    events: readonly EventInput[],
    appendOptions?: AppendOptions,
  ) => {
    const result = await session.append(streamId, events, appendOptions);
    if (result.duplicate) return result;
    for await (const event of session.readStream(streamId, { from: result.firstVersion })) {
      for (const projection of projections)
        await applyProjection(projection, projection.version, documents, event, transactionOf(session));
    }
    return result;
  };
  const wrapSession = (session: EventStoreSession): EventStoreSession => ({
    ...bindAll(session),
    append: (streamId, events, appendOptions) => project(session, streamId, events, appendOptions),
  });
  return {
    ...bindAll(store),
    append: (streamId, events, appendOptions) =>
      store.transaction((session) => project(session, streamId, events, appendOptions)),
    transaction: (fn) => store.transaction((session) => fn(wrapSession(session))),
  };
}

/** Live projection: folds the events matching the projection into fresh in-memory documents now, on read. */
export async function projectLive(
  store: EventStore,
  projection: ProjectionDefinition<unknown>,
  options: { after?: Position } = {},
) {
  const documents = createInMemoryDocumentStore();
  for await (const event of store.readAll({
    filter: filterOf(projection),
    ...(options.after ? { after: options.after } : {}),
  })) {
    await applyProjection(projection, projection.version, documents, event, undefined);
  }
  return {
    collection<T>(name: string): ReadCollection<T> {
      assertDeclared(projection, name);
      return readCollection(documents.collection<T>(collectionOf(projection, projection.version, name)));
    },
  };
}

function readCollection<T>(collection: DocumentCollection<T>): ReadCollection<T> {
  return {
    get: async (id) => (await collection.get(id))?.data ?? null,
    list: (o) => collection.list(o),
    count: () => collection.count(),
  };
}

function bindAll<T extends object>(target: T): T {
  const bound: Record<string, unknown> = {};
  let proto: object | null = target;
  while (proto && proto !== Object.prototype) {
    for (const key of Object.getOwnPropertyNames(proto)) {
      const value = (target as Record<string, unknown>)[key];
      if (key !== 'constructor' && typeof value === 'function' && !(key in bound))
        bound[key] = (value as (...args: unknown[]) => unknown).bind(target);
    }
    proto = Object.getPrototypeOf(proto) as object | null;
  }
  return bound as T;
}
