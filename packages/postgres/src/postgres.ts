/**
 * The event store on a PostgreSQL server, through node-postgres: {@link SqlStore} on the {@link PostgresDriver}.
 */
import pg from 'pg';
import { TransactionConflictError, ValidationError, type EventStoreOptions } from '@eventline/core';
import { compileUniqueness, safeQuote } from '@eventline/core/backend';
import { AppendGroups, DEFAULT_APPEND_GROUP_OPTIONS, type AppendGroupOptions } from './append-groups.js';
import type { SqlDriver, SqlTransaction } from './driver.js';
import { isConnectionError, toStoreError } from './errors.js';
import type { MigrationConnection } from './migrations.js';
import { DEFAULT_READ_GROUP_OPTIONS, ReadGroups, type FirstPageRead, type GroupedRow } from './read-groups.js';
import { readFirstPage, sendAppend, type EncodedAppend, type EventRow } from './session.js';
import { DEFAULT_SCHEMA, statementsFor, type Statement, type Statements } from './sql/statements.js';
import { SqlStore, type SqlEventStore } from './store.js';

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

/** The PostgreSQL event store: the {@link SqlEventStore} (the contract, migrations, raw SQL, wake-ups) and its pool. */
export interface PostgresEventStore extends SqlEventStore {
  /** The pool the store runs on (its own, or the one it was given). */
  readonly pool: pg.Pool;
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
  const store = new SqlStore(
    {
      statements,
      events: options.events,
      maxEventBytes: options.maxEventBytes,
      uniqueness: compileUniqueness(options.uniqueness, options.events),
    },
    new PostgresDriver(pool, ownPool, statements, grouping),
  );
  return Object.defineProperty(store, 'pool', { value: pool, enumerable: true }) as SqlStore & {
    readonly pool: pg.Pool;
  };
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
 * The node-postgres driver: a pool of server connections.
 * - Outside transactions, each statement on a pooled connection, in its own implicit transaction. A broken connection
 *   is destroyed, not reused. One of the store's own statements that the database breaks off in a deadlock with
 *   transactions of the caller's (an append, alone or in a group) was rolled back whole, so it is sent again, a few
 *   times after a short random pause; raw SQL of the caller's is not.
 * - Group commit: appends and first pages of forwards stream reads outside transactions go together when made in the
 *   same turn of the event loop (append-groups.ts, read-groups.ts), unless grouping is off.
 * - A transaction holds one pooled connection from BEGIN to COMMIT or ROLLBACK.
 * - Wake-ups across processes: a coalesced NOTIFY after commits, and a LISTEN connection of its own.
 */
class PostgresDriver implements SqlDriver {
  private readonly groups: AppendGroups<EncodedAppend> | null;
  private readonly reads: ReadGroups | null;
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly ownPool: boolean,
    private readonly statements: Statements,
    grouping: AppendGroupOptions | null,
  ) {
    this.groups =
      grouping &&
      new AppendGroups<EncodedAppend>(
        grouping,
        (append) => sendAppend(this, statements, append, false),
        async (parameters) =>
          (
            await this.query<{ r: string[] }>(
              statements.appendGroup,
              parameters,
              `append to ${parameters[0].length} streams`,
            )
          )[0]!.r,
      );
    this.reads =
      grouping &&
      new ReadGroups(
        DEFAULT_READ_GROUP_OPTIONS,
        (read) => readFirstPage(this, statements, read),
        (streamIds, froms, sizes) =>
          this.query<GroupedRow>(
            statements.readStreamFirstGroup,
            [streamIds, froms, sizes],
            `read ${streamIds.length} streams`,
          ),
      );
  }

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

  append(append: EncodedAppend): Promise<string> {
    return this.groups ? this.groups.submit(append) : sendAppend(this, this.statements, append, false);
  }

  readFirstPage(read: FirstPageRead): Promise<EventRow[]> {
    return this.reads ? this.reads.submit(read) : readFirstPage(this, this.statements, read);
  }

  async migrationTransaction<T>(operation: string, fn: (connection: MigrationConnection) => Promise<T>): Promise<T> {
    const client = await connect(this.pool, operation);
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await fn({
        exec: async (sql) => {
          await client.query(sql);
        },
        query: async <R>(text: string, values: unknown[]) => (await client.query(text, values)).rows as R[],
      });
      await client.query('COMMIT');
      return result;
    } catch (error) {
      broken = isConnectionError(error);
      if (!broken) await client.query('ROLLBACK').catch(() => (broken = true));
      throw toStoreError(error, operation);
    } finally {
      client.release(broken);
    }
  }

  async transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> {
    const client = await connect(this.pool, 'start a transaction');
    let broken = false;
    const tx: SqlTransaction = {
      query: async <R>(statement: Statement, values: unknown[], operation: string) => {
        try {
          return (await client.query(config(statement, values))).rows as R[];
        } catch (error) {
          if (isConnectionError(error)) broken = true;
          throw toServerError(error, operation);
        }
      },
    };
    let fnError = null as { error: unknown } | null;
    let stage = 'start a transaction';
    try {
      await client.query('BEGIN');
      stage = 'run a transaction';
      let result: T;
      try {
        result = await fn(tx);
      } catch (error) {
        fnError = { error };
        throw error;
      }
      stage = 'commit a transaction';
      const commit = await client.query('COMMIT');
      if (commit.command === 'ROLLBACK') throw new Error('the transaction was rolled back by the server at commit');
      return result;
    } catch (error) {
      if (isConnectionError(error)) broken = true;
      if (!broken) await client.query('ROLLBACK').catch(() => (broken = true));
      if (fnError?.error === error) throw error;
      throw toServerError(error, stage);
    } finally {
      client.release(broken);
    }
  }

  private listener: pg.Client | null = null;
  private listening = false;
  /** Which listen loop is current: an unlisten ends the loop it belongs to, even when a new one starts right after. */
  private listenGeneration = 0;
  private notifying = false;
  private notifyAgain = false;

  /** The NOTIFY channel of this schema: `<schema>_appended`. */
  private get channel(): string {
    return `${this.statements.schema}_appended`;
  }

  /**
   * At most one NOTIFY per {@link NOTIFY_INTERVAL_MS}: the first append after a quiet moment notifies at once, appends
   * during the interval share one trailing NOTIFY. Other processes wake within a few ms; busy writers pay almost nothing.
   * Not a trigger: NOTIFY at commit serialises writers.
   */
  notify(): void {
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
        if (this.notifyAgain && !this.closed) {
          this.notifyAgain = false;
          this.notify();
        }
      });
  }

  /** A connection of its own (not from the pool) that LISTENs, reconnecting while anyone listens. */
  async listen(wake: () => void): Promise<void> {
    this.listening = true;
    const generation = ++this.listenGeneration;
    // Listening again right after an unlisten starts a new loop: the old one must end, not reconnect beside it.
    const current = () => this.listening && !this.closed && this.listenGeneration === generation;
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

  async unlisten(): Promise<void> {
    this.listening = false;
    this.listenGeneration++;
    await this.listener?.end().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.unlisten().catch(() => undefined);
    if (this.ownPool) await this.pool.end();
  }
}
