/**
 * The event store on a PostgreSQL server, through node-postgres.
 */
import pg from 'pg';
import type { SqlClient } from './core.js';
import {
  StoreClosedError,
  TransactionConflictError,
  ValidationError,
  type EventStore,
  type EventStoreOptions,
  type EventStoreSession,
} from '@eventline/core';
import { safeQuote } from '@eventline/core/backend';
import { AppendGroups, DEFAULT_APPEND_GROUP_OPTIONS, type AppendGroupOptions } from './append-groups.js';
import {
  SqlSession,
  SqlStoreBase,
  type EncodedAppend,
  type EventRow,
  type Executor,
  type StoreConfig,
} from './core.js';
import { DatabaseOperationError, isConnectionError, toStoreError } from './errors.js';
import { runMigrations } from './migrations.js';
import { DEFAULT_READ_GROUP_OPTIONS, ReadGroups, type GroupedRow } from './read-groups.js';
import { DEFAULT_SCHEMA, statementsFor, type Statement } from './sql/statements.js';

const NOTIFY_INTERVAL_MS = 5;

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';

/**
 * The session setting the store's own pool connects with: prepared statements always use their generic plan. The
 * store's statements are index look-ups and scans whatever their values, but PostgreSQL's estimate of their generic
 * plans (made without the values: array lengths, which filters are null, the page size) is worse than a plan made for
 * the values at hand, so it planned them again on every call: 0.3-0.5 ms each time, more than running a grouped stream
 * read and a third of reading a page of 500 events. For a pool you pass, add it to its connection options yourself
 * (`options: '-c plan_cache_mode=force_generic_plan'`); your own statements on the store's connections get it too.
 */
export const GENERIC_PLANS = '-c plan_cache_mode=force_generic_plan';

export interface PostgresStoreOptions extends EventStoreOptions {
  /** Where to connect when no `pool` is given. Default `process.env.DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`. */
  connectionString?: string;
  /** A pool you own: the store uses it and leaves it open on `close()`. */
  pool?: pg.Pool;
  /** The schema holding the store's tables and functions (created by the migrations). Default `eventline`. */
  schema?: string;
  /** Connections of the pool the store creates (ignored with `pool`). Default 10. */
  poolSize?: number;
  /**
   * Group commit (see the package README): appends outside `transaction()` made in the same turn of the event loop, or
   * while this many append statements are at the server, go together in one statement and one commit, each still
   * succeeding or refused on its own; and the first pages of forwards stream reads made in the same turn go together
   * in one statement (read-groups.ts). Default 4; `0` sends each append and each stream read at once, alone.
   */
  grouping?: number;
}

/** The PostgreSQL event store: the {@link EventStore} contract, plus migrations and access to its pool. */
export interface PostgresEventStore extends EventStore {
  /** The schema the store uses. */
  readonly schema: string;
  /** Raw SQL on the store's connections (each statement its own transaction); inside `transaction()`, use the session's `sql`. */
  readonly sql: SqlClient;
  /** A wake-up soon after events are committed (see the package README). */
  onAppended(listener: () => void): () => void;
  /** The pool the store runs on (its own, or the one it was given). */
  readonly pool: pg.Pool;
  /**
   * Applies the schema migrations now and resolves with the versions applied (empty when up to date). Optional: the
   * first operation of the store migrates too. Safe to call from several processes at once.
   */
  migrate(): Promise<number[]>;
}

/**
 * Creates an event store on a PostgreSQL server (13 or later). The schema is created and migrated on first use (or by
 * `await store.migrate()`). `close()` ends the pool only when the store created it.
 */
export function createPostgresStore(options: PostgresStoreOptions = {}): PostgresEventStore {
  const statements = statementsFor(options.schema ?? DEFAULT_SCHEMA);
  const ownPool = options.pool === undefined;
  const connectionString = options.connectionString ?? process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
  const pool =
    options.pool ??
    new pg.Pool({
      connectionString,
      max: options.poolSize ?? 10,
      application_name: 'eventline',
      allowExitOnIdle: true,
      // Generic plans for prepared statements (see GENERIC_PLANS), unless the connection string sets its own options.
      ...(/[?&]options=/.test(connectionString) ? {} : { options: GENERIC_PLANS }),
    });
  // An idle connection that the server drops must not crash the process: the pool discards it and opens another.
  if (ownPool) pool.on('error', () => {});
  const maxInFlight = options.grouping ?? DEFAULT_APPEND_GROUP_OPTIONS.maxInFlight;
  if (!(Number.isSafeInteger(maxInFlight) && maxInFlight >= 0)) {
    throw new ValidationError(
      `grouping must be a whole number: 0 (no grouping) or the append statements at the server at once; got ${safeQuote(maxInFlight)}`,
    );
  }
  const grouping = maxInFlight === 0 ? null : { ...DEFAULT_APPEND_GROUP_OPTIONS, maxInFlight };
  return new PostgresStore(
    { statements, events: options.events, maxEventBytes: options.maxEventBytes },
    pool,
    ownPool,
    grouping,
  );
}

/** Times the store runs one of its own statements again when the database broke it off in a deadlock. */
const CONFLICT_RETRIES = 4;

/**
 * A driver error as callers get it (see toStoreError), where a deadlock (40P01) or a serialization failure (40001) is
 * a {@link TransactionConflictError}: the database rolled the transaction back to let another go on, so running it
 * again is safe, and the retry middleware does.
 */
function toServerError(error: unknown, operation: string): Error {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === '40P01') return new TransactionConflictError(operation, 'deadlock', error);
  if (code === '40001') return new TransactionConflictError(operation, 'serialization', error);
  return toStoreError(error, operation);
}

const guarded = new WeakSet<pg.PoolClient>();
const ignore = () => {};

/** Takes a connection from the pool. A connection that breaks while checked out reports to the caller, not as an event. */
async function connect(pool: pg.Pool, operation: string): Promise<pg.PoolClient> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (error) {
    throw toStoreError(error, operation);
  }
  if (!guarded.has(client)) {
    client.on('error', ignore);
    guarded.add(client);
  }
  return client;
}

function config(statement: Statement, values: unknown[]): pg.QueryConfig | pg.QueryArrayConfig {
  if (statement.name === '') return { text: statement.text, values };
  return statement.arrayRows
    ? { name: statement.name, text: statement.text, values, rowMode: 'array' }
    : { name: statement.name, text: statement.text, values };
}

/**
 * Each statement on a pooled connection, in its own implicit transaction. A broken connection is destroyed, not reused.
 * One of the store's own statements that the database breaks off in a deadlock with transactions of the caller's (an
 * append, alone or in a group) was rolled back whole, so it is sent again, a few times after a short random pause;
 * raw SQL of the caller's is not.
 */
class PoolExecutor implements Executor {
  constructor(private readonly pool: pg.Pool) {}

  async query<R>(statement: Statement, values: unknown[], operation: string): Promise<R[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.queryOnce<R>(statement, values, operation);
      } catch (error) {
        if (!(error instanceof TransactionConflictError) || statement.raw || attempt > CONFLICT_RETRIES) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * 2 ** attempt));
      }
    }
  }

  private async queryOnce<R>(statement: Statement, values: unknown[], operation: string): Promise<R[]> {
    const client = await connect(this.pool, operation);
    let result: pg.QueryResult;
    try {
      result = await client.query(config(statement, values));
    } catch (error) {
      client.release(isConnectionError(error));
      throw toServerError(error, operation);
    }
    client.release();
    return result.rows as R[];
  }
}

class PostgresStore extends SqlStoreBase implements PostgresEventStore {
  constructor(
    config: StoreConfig,
    readonly pool: pg.Pool,
    private readonly ownPool: boolean,
    grouping: AppendGroupOptions | null,
  ) {
    super(config, new PoolExecutor(pool));
    this.groups =
      grouping &&
      new AppendGroups<EncodedAppend>(
        grouping,
        (append) => this.appendLine(append),
        async (parameters) =>
          (
            await this.executor.query<{ r: string[] }>(
              config.statements.appendGroup,
              parameters,
              `append to ${parameters[0].length} streams`,
            )
          )[0]!.r,
      );
    this.reads =
      grouping &&
      new ReadGroups(
        DEFAULT_READ_GROUP_OPTIONS,
        (read) => super.readFirstPage(read.streamId, read.from, read.size, read.operation),
        (streamIds, froms, sizes) =>
          this.executor.query<GroupedRow>(
            config.statements.readStreamFirstGroup,
            [streamIds, froms, sizes],
            `read ${streamIds.length} streams`,
          ),
      );
  }

  private readonly groups: AppendGroups<EncodedAppend> | null;
  private readonly reads: ReadGroups | null;

  protected override readFirstPage(
    streamId: string,
    from: number,
    size: number,
    operation: string,
  ): Promise<EventRow[]> {
    return this.reads
      ? this.reads.submit({ streamId, from, size, operation })
      : super.readFirstPage(streamId, from, size, operation);
  }

  protected override sendAppend(append: EncodedAppend): Promise<string> {
    return this.groups ? this.groups.submit(append) : this.appendLine(append);
  }

  protected async runMigrations(): Promise<number[]> {
    const operation = `migrate schema '${this.schema}'`;
    const client = await connect(this.pool, operation);
    let broken = false;
    try {
      await client.query('BEGIN');
      const applied = await runMigrations(
        {
          exec: async (sql) => {
            await client.query(sql);
          },
          query: async <R>(text: string, values: unknown[]) => (await client.query(text, values)).rows as R[],
        },
        this.schema,
      );
      await client.query('COMMIT');
      return applied;
    } catch (error) {
      broken = isConnectionError(error);
      if (!broken) await client.query('ROLLBACK').catch(() => (broken = true));
      throw toStoreError(error, operation);
    } finally {
      client.release(broken);
    }
  }

  protected async runTransaction<T>(fn: (session: EventStoreSession) => Promise<T>): Promise<T> {
    const client = await connect(this.pool, 'start a transaction');
    let active = true;
    let broken = false;
    /** The first database error inside the transaction: PostgreSQL aborted the transaction, so it cannot commit. */
    let failure: Error | null = null;
    const executor: Executor = {
      query: async <R>(statement: Statement, values: unknown[], operation: string) => {
        if (!active) throw new StoreClosedError(`${operation} (the transaction already ended)`);
        if (failure)
          throw new DatabaseOperationError(
            operation,
            new Error(`the transaction was aborted by an earlier error: ${failure.message}`),
          );
        try {
          return (await client.query(config(statement, values))).rows as R[];
        } catch (error) {
          if (isConnectionError(error)) broken = true;
          failure = toServerError(error, operation);
          throw failure;
        }
      },
    };
    const session = new SqlSession(this.config, executor, (operation) => {
      if (!active) throw new StoreClosedError(`${operation} (the transaction already ended)`);
    });
    let fnError = null as { error: unknown } | null;
    let stage = 'start a transaction';
    try {
      await client.query('BEGIN');
      stage = 'run a transaction';
      let result: T;
      try {
        result = await fn(session);
      } catch (error) {
        fnError = { error };
        throw error;
      }
      // The caller caught a database error and went on: the transaction cannot commit; say why.
      if (failure) throw failure;
      active = false;
      stage = 'commit a transaction';
      const commit = await client.query('COMMIT');
      if (commit.command === 'ROLLBACK') throw new Error('the transaction was rolled back by the server at commit');
      return result;
    } catch (error) {
      active = false;
      if (isConnectionError(error)) broken = true;
      if (!broken) await client.query('ROLLBACK').catch(() => (broken = true));
      if (fnError?.error === error || error === failure) throw error;
      throw toServerError(error, stage);
    } finally {
      active = false;
      client.release(broken);
    }
  }

  protected async releaseConnections(): Promise<void> {
    if (this.ownPool) await this.pool.end();
  }

  private listener: pg.Client | null = null;
  private listening = false;
  /** Which listen loop is current: an unlisten ends the loop it belongs to, even when a new one starts right after. */
  private listenGeneration = 0;
  private notifying = false;
  private notifyAgain = false;

  /** The NOTIFY channel of this schema: `<schema>_appended`. */
  private get channel(): string {
    return `${this.schema}_appended`;
  }

  /**
   * At most one NOTIFY per {@link NOTIFY_INTERVAL_MS}: the first append after a quiet moment notifies at once, appends
   * during the interval share one trailing NOTIFY. Other processes wake within a few ms; busy writers pay almost nothing.
   */
  protected override notifyAppended(): void {
    if (this.notifying) {
      this.notifyAgain = true;
      return;
    }
    this.notifying = true;
    this.pool
      .query('SELECT pg_notify($1, $2)', [this.channel, ''])
      .catch(() => undefined) // a wake-up only: listeners poll anyway
      .then(() => new Promise((resolve) => setTimeout(resolve, NOTIFY_INTERVAL_MS)))
      .finally(() => {
        this.notifying = false;
        if (this.notifyAgain && !this.isClosed) {
          this.notifyAgain = false;
          this.notifyAppended();
        }
      });
  }

  /** A connection of its own (not from the pool) that LISTENs, reconnecting while anyone listens. */
  protected override async listenForAppends(wake: () => void): Promise<void> {
    this.listening = true;
    const generation = ++this.listenGeneration;
    // Listening again right after an unlisten starts a new loop: the old one must end, not reconnect beside it.
    const current = () => this.listening && !this.isClosed && this.listenGeneration === generation;
    while (current()) {
      const client = new pg.Client(this.pool.options);
      this.listener = client; // so that unlistening ends it, also while it is still connecting
      client.on('notification', () => wake());
      const ended = new Promise<void>((resolve) => {
        client.on('error', () => resolve());
        client.on('end', () => resolve());
      });
      try {
        await client.connect();
        await client.query(`LISTEN ${pg.escapeIdentifier(this.channel)}`);
        if (!current()) break; // unlistened meanwhile: the finally block ends the connection
        wake(); // events may have been appended while we were not listening
        await ended;
      } catch {
        // fall through to retry
      } finally {
        if (this.listener === client) this.listener = null;
        await client.end().catch(() => undefined);
      }
      if (current()) await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  protected override async unlistenForAppends(): Promise<void> {
    this.listening = false;
    this.listenGeneration++;
    await this.listener?.end().catch(() => undefined);
  }
}
