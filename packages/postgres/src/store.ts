/**
 * The SQL event store: one implementation, composed over a {@link SqlDriver} (driver.ts), for every SQL database the
 * package supports. It owns what does not depend on the driver: the lifecycle (migrate on first use, close), the
 * global log (readAll, positions, holdback), transactions' bookkeeping (ended, aborted by an error, whether they
 * appended), and wake-ups; the stream operations are those of a {@link SqlSession} on the driver.
 */
import {
  StoreClosedError,
  StoreUnavailableError,
  formatPosition,
  parsePosition,
  type AppendOptions,
  type AppendResult,
  type EventInput,
  type EventMetadata,
  type EventStore,
  type EventStoreSession,
  type ExpectedVersion,
  type Position,
  type ReadAllHoldback,
  type ReadAllOptions,
  type ReadAllPage,
  type ReadStreamOptions,
  type RebuildClaimsResult,
  type RecordedEvent,
  type StreamInfo,
  type StreamMetadata,
} from '@eventline/core';
import {
  ClaimsRebuild,
  encodedEvent,
  encodeStoredEvent,
  normaliseReadAllOptions,
  positionBeforeTransaction,
  type EncodedEvent,
  type EncodedReadAllPage,
} from '@eventline/core/backend';
import type { SqlConnection, SqlDriver } from './driver.js';
import { DatabaseOperationError } from './errors.js';
import { runMigrations } from './migrations.js';
import { SqlSession, eventsOf, toRecorded, type EventRow, type SqlClient, type StoreConfig } from './session.js';

/**
 * The SQL event store: the {@link EventStore} contract, plus migrations, raw SQL and wake-ups. What the read side needs
 * of a store; `createPostgresStore` and `createPGliteStore` give one (their types add what each driver has).
 */
export interface SqlEventStore extends EventStore {
  /** The schema the store uses. */
  readonly schema: string;
  /** Raw SQL on the store's connections (each statement its own transaction); inside `transaction()`, use the session's `sql`. */
  readonly sql: SqlClient;
  /**
   * Applies the schema migrations now and resolves with the versions applied (empty when up to date). Optional: the
   * first operation of the store migrates too. Safe to call from several processes at once.
   */
  migrate(): Promise<number[]>;
  /** A wake-up after events are committed (in this process, and from other processes on a PostgreSQL server). */
  onAppended(listener: () => void): () => void;
}

/** A row of the encoded readAll statement (readAllPageEncoded in sql/statements.ts): data and metadata as text, then header fields. */
type EncodedRow = [
  id: string,
  streamId: string,
  type: string,
  version: string | number,
  position: Position,
  recordedMs: string | number,
  data: string,
  metadata: string,
  snapshotXmin: null,
  correlationId: string | null,
  causationId: string | null,
  traceparent: string | null,
  schemaVersion: string | null,
];

const INT8_MAX = 0x7fffffffffffffffn;
/** Events read per page by rebuildClaims (and claims inserted per statement: five times as many). */
const CLAIM_PAGE = 1000;

/** The event store on a {@link SqlDriver} (see the top of the file). */
export class SqlStore implements SqlEventStore {
  private closed = false;
  private migrated = false;
  private migrating: Promise<number[]> | null = null;
  /** The stream operations outside transactions: on the driver, with its fast paths, after {@link ready}. */
  private readonly session: SqlSession;
  private readonly appendListeners = new Set<() => void>();
  readonly sql: SqlClient;

  constructor(
    private readonly config: StoreConfig,
    private readonly driver: SqlDriver,
  ) {
    this.session = new SqlSession(config, driver, (operation) => this.ready(operation), false);
    this.sql = this.session.sql;
  }

  /** The schema the store uses. */
  get schema(): string {
    return this.config.statements.schema;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Applies the schema migrations now (otherwise the first operation does) and resolves with the versions it applied:
   * empty when the schema was up to date, or when this store already migrated it. Safe from several processes at once.
   */
  migrate(): Promise<number[]> {
    if (this.closed) return Promise.reject(new StoreClosedError('migrate'));
    if (this.migrated) return Promise.resolve([]);
    this.migrating ??= this.driver
      .migrationTransaction(`migrate schema '${this.schema}'`, (connection) => runMigrations(connection, this.schema))
      .then(
        (applied) => {
          this.migrated = true;
          return applied;
        },
        (error: unknown) => {
          this.migrating = null;
          throw error;
        },
      );
    return this.migrating;
  }

  /** Checked before each operation: the store is open, and migrated (waiting for it the first time). */
  private ready(operation: string): void | Promise<void> {
    if (this.closed) throw new StoreClosedError(operation);
    if (!this.migrated) {
      return this.migrate().then(
        () => undefined,
        (error: unknown) => {
          // Name the caller's operation: "append to 'x' (migrating schema 'y' first)".
          if (error instanceof StoreUnavailableError)
            throw new StoreUnavailableError(`${operation} (migrating schema '${this.schema}' first)`, error.cause);
          throw error;
        },
      );
    }
  }

  async append(streamId: string, events: readonly EventInput[], options?: AppendOptions): Promise<AppendResult> {
    const result = await this.session.append(streamId, events, options);
    if (!result.duplicate) this.appended();
    return result;
  }

  readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<RecordedEvent> {
    return this.session.readStream(streamId, options);
  }

  streamInfo(streamId: string): Promise<StreamInfo> {
    return this.session.streamInfo(streamId);
  }

  setStreamMetadata(
    streamId: string,
    metadata: StreamMetadata,
    options?: { expectedVersion?: ExpectedVersion },
  ): Promise<void> {
    return this.session.setStreamMetadata(streamId, metadata, options);
  }

  getStreamMetadata(streamId: string): Promise<StreamMetadata> {
    return this.session.getStreamMetadata(streamId);
  }

  deleteStream(streamId: string, options?: { expectedVersion?: ExpectedVersion; hard?: boolean }): Promise<void> {
    return this.session.deleteStream(streamId, options);
  }

  lockStreams(streamIds: readonly string[]): Promise<void> {
    return this.session.lockStreams(streamIds);
  }

  claimOwner(scope: string, value: string): Promise<string | null> {
    return this.session.claimOwner(scope, value);
  }

  /**
   * In one transaction: lock the claims (waiting for the transactions that claimed or released, holding back those
   * that will), read the events that may claim or release in log order, apply the rules, replace every claim.
   */
  async rebuildClaims(): Promise<RebuildClaimsResult> {
    await this.ready('rebuild the claims');
    const { statements, uniqueness, events: registry } = this.config;
    const operation = 'rebuild the claims';
    return this.driver.transaction(async (tx) => {
      await tx.query(statements.lockClaims, [], operation);
      await tx.query(statements.clearClaims, [], operation);
      if (!uniqueness) return { claims: 0, conflicts: [] };
      const rebuild = new ClaimsRebuild(uniqueness);
      const types = registry ? registry.storedNames(uniqueness.types) : uniqueness.types;
      let after = { transaction: 0n, sequence: 0n };
      for (;;) {
        const rows = await tx.query<EventRow>(
          statements.readClaimEvents,
          [after.transaction.toString(), after.sequence.toString(), types, CLAIM_PAGE],
          operation,
        );
        if (rows.length > 0) after = parsePosition(rows[rows.length - 1]![4] as Position);
        for (const event of eventsOf(registry, rows)) rebuild.apply(event);
        if (rows.length < CLAIM_PAGE) break;
      }
      const claims = [...rebuild.claims.values()];
      for (let i = 0; i < claims.length; i += CLAIM_PAGE * 5) {
        const chunk = claims.slice(i, i + CLAIM_PAGE * 5);
        await tx.query(
          statements.insertClaims,
          [chunk.map((c) => c.scope), chunk.map((c) => c.hash), chunk.map((c) => c.owner)],
          operation,
        );
      }
      return rebuild.result();
    });
  }

  readAll(options?: ReadAllOptions): AsyncIterable<RecordedEvent> {
    return this.readAllPages(options);
  }

  /** Pages with {@link fetchAllPage}; rows become events only as they are yielded, so a page is held once, not twice. */
  private async *readAllPages(options?: ReadAllOptions): AsyncGenerator<RecordedEvent> {
    const normalised = normaliseReadAllOptions(options);
    let after = normalised.after;
    let remaining = normalised.limit;
    while (remaining > 0) {
      const page = await this.fetchAllPage(normalised, after, Math.min(remaining, normalised.pageSize));
      remaining -= page.rows.length;
      yield* eventsOf(this.config.events, page.rows);
      if (page.atEnd) return;
      after = page.next;
    }
  }

  async readAllPage(options?: ReadAllOptions): Promise<ReadAllPage> {
    const normalised = normaliseReadAllOptions(options, 1000);
    const page = await this.fetchAllPage(normalised, normalised.after, normalised.limit);
    return { events: page.rows.map((row) => toRecorded(this.config.events, row)), next: page.next, atEnd: page.atEnd };
  }

  async readAllPageEncoded(options?: ReadAllOptions): Promise<EncodedReadAllPage> {
    const normalised = normaliseReadAllOptions(options, 1000);
    const page = await this.fetchAllPage<EncodedRow>(
      normalised,
      normalised.after,
      normalised.limit,
      this.config.statements.readAllPageEncoded,
    );
    const registry = this.config.events;
    const events: EncodedEvent[] = new Array(page.rows.length);
    for (let i = 0; i < page.rows.length; i++) {
      const row = page.rows[i]!;
      const schemaVersion = row[12] === null ? 1 : Number(row[12]);
      if (registry && !registry.isCurrent(row[2], schemaVersion)) {
        // Renamed or older schema: upcast like every read path, then encode.
        events[i] = encodedEvent(
          toRecorded(registry, [
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            JSON.parse(row[6]),
            JSON.parse(row[7]) as EventMetadata,
          ]),
        );
        continue;
      }
      const message = encodeStoredEvent({
        id: row[0],
        streamId: row[1],
        type: row[2],
        version: String(row[3]),
        position: row[4],
        recordedAt: new Date(Number(row[5])),
        dataJson: row[6],
        metadataJson: row[7],
        correlationId: row[9],
        causationId: row[10],
        traceparent: row[11],
      });
      events[i] = { id: row[0], streamId: row[1], position: row[4], message };
    }
    return { events, next: page.next, atEnd: page.atEnd };
  }

  /** One gap-safe page of event rows after `after`, and where to resume (see `readAllPage` in sql/statements.ts and the contract). */
  private async fetchAllPage<R extends unknown[] = EventRow>(
    filter: { types: string[] | null; categories: string[] | null },
    after: Position,
    limit: number,
    statement = this.config.statements.readAllPage,
  ): Promise<{ rows: R[]; next: Position; atEnd: boolean }> {
    await this.ready('read all');
    const storedTypes =
      filter.types && this.config.events ? this.config.events.storedNames(filter.types) : filter.types;
    const { transaction, sequence } = parsePosition(after);
    // Rows: the event columns (position at 4), null in column 8; and one row of nulls with the snapshot's xmin in 8.
    const result = await this.driver.query<unknown[]>(
      statement,
      [
        transaction.toString(),
        (sequence > INT8_MAX ? INT8_MAX : sequence).toString(),
        storedTypes,
        filter.categories,
        limit,
      ],
      'read all',
    );
    // The xmin row usually comes last: drop it without copying the page.
    let xmin: string | null = null;
    const last = result[result.length - 1];
    if (last && last[0] === null) {
      xmin = last[8] as string;
      result.pop();
    }
    let rows = result as R[];
    if (xmin === null) {
      xmin = result.find((row) => row[0] === null)![8] as string;
      rows = result.filter((row) => row[0] !== null) as R[];
    }
    if (rows.length === limit) return { rows, next: rows[rows.length - 1]![4] as Position, atEnd: false };
    const boundary = positionBeforeTransaction(BigInt(xmin!));
    return { rows, next: boundary > after ? boundary : after, atEnd: true };
  }

  async headPosition(): Promise<Position> {
    await this.ready('read the head position');
    const [row] = await this.driver.query<{ xmin: string }>(
      this.config.statements.snapshotXmin,
      [],
      'read the head position',
    );
    return positionBeforeTransaction(BigInt(row!.xmin));
  }

  async nextPosition(): Promise<Position> {
    await this.ready('read the next position');
    const [row] = await this.driver.query<{ xmax: string }>(
      this.config.statements.snapshotXmax,
      [],
      'read the next position',
    );
    return formatPosition(BigInt(row!.xmax), 0n);
  }

  async readAllHoldback(): Promise<ReadAllHoldback> {
    await this.ready('read the holdback');
    const [row] = await this.driver.query<{ held_back: string | number; oldest_ms: number | null }>(
      this.config.statements.readAllHoldback,
      [],
      'read the holdback',
    );
    return {
      heldBackEvents: Number(row!.held_back),
      oldestOpenTransactionMs:
        row!.oldest_ms === null
          ? (this.driver.openTransactionAgeMs?.() ?? null)
          : Math.max(0, Math.round(row!.oldest_ms)),
    };
  }

  /**
   * Runs `fn` with a session on one transaction of the driver's. The store keeps the transaction's state around it: a
   * statement after the transaction ended is a StoreClosedError; after a database error (PostgreSQL then aborts the
   * transaction) every later statement fails saying so, and the transaction does not commit even if `fn` caught the
   * error and resolved: it rolls back and rejects with that error.
   */
  async transaction<T>(fn: (session: EventStoreSession) => Promise<T>): Promise<T> {
    await this.ready('start a transaction');
    let appended = false;
    const result = await this.driver.transaction(async (connection) => {
      let active = true;
      /** The first database error inside the transaction: PostgreSQL aborted the transaction, so it cannot commit. */
      let failure: Error | null = null;
      const guarded: SqlConnection = {
        query: async <R>(statement: Parameters<SqlConnection['query']>[0], values: unknown[], operation: string) => {
          if (!active) throw new StoreClosedError(`${operation} (the transaction already ended)`);
          if (failure)
            throw new DatabaseOperationError(
              operation,
              new Error(`the transaction was aborted by an earlier error: ${failure.message}`),
            );
          try {
            return await connection.query<R>(statement, values, operation);
          } catch (error) {
            failure = error as Error;
            throw error;
          }
        },
      };
      const session = new SqlSession(
        this.config,
        guarded,
        (operation) => {
          if (!active) throw new StoreClosedError(`${operation} (the transaction already ended)`);
        },
        true,
      );
      try {
        const value = await fn(
          // The session as given, but noting whether it appended anything, so that only such commits wake readers.
          Object.create(session, {
            append: {
              value: async (...args: Parameters<EventStoreSession['append']>) => {
                const appendResult = await session.append(...args);
                if (!appendResult.duplicate) appended = true;
                return appendResult;
              },
            },
          }) as EventStoreSession,
        );
        // The caller caught a database error and went on: the transaction cannot commit; say why.
        if (failure) throw failure;
        return value;
      } finally {
        active = false;
      }
    });
    if (appended) this.appended();
    return result;
  }

  /**
   * Calls `listener` soon after events are committed: by this store at once, and (when the driver listens, as on a
   * PostgreSQL server) by other processes. A wake-up only, which may be coalesced or spurious; readers also poll.
   */
  onAppended(listener: () => void): () => void {
    this.appendListeners.add(listener);
    if (this.appendListeners.size === 1) void this.driver.listen?.(() => this.wakeListeners()).catch(() => undefined);
    return () => {
      this.appendListeners.delete(listener);
      if (this.appendListeners.size === 0) void this.driver.unlisten?.().catch(() => undefined);
    };
  }

  /** After a commit: wake this process's listeners, and tell other processes (through the driver). */
  private appended(): void {
    this.wakeListeners();
    this.driver.notify?.();
  }

  private wakeListeners(): void {
    for (const listener of this.appendListeners) queueMicrotask(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.appendListeners.clear();
    await this.driver.close();
  }
}
