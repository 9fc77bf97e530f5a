/**
 * The one seam between the event store and a SQL database: a {@link SqlDriver}. The store ({@link SqlStore} in
 * store.ts) is written once, over this interface, and runs the statements of sql/statements.ts; a driver only says how
 * those statements reach one kind of database and what that database needs around them. Two drivers exist:
 * node-postgres (postgres.ts: a pool of server connections, group commit, LISTEN/NOTIFY) and PGlite (pglite.ts: one
 * embedded connection, readers beside an open transaction). A new SQL driver (another PostgreSQL client, say) is a
 * class implementing this interface and a factory function that passes it to `new SqlStore(config, driver)`.
 *
 * Lifecycle, as the store uses a driver:
 * 1. It is created by its factory, bound to one schema's {@link Statements} (it may compare a statement it is given
 *    with them, by identity, to know what it runs). Creating it connects to nothing.
 * 2. Before the first operation, the store calls {@link SqlDriver.migrationTransaction} once (again only if that
 *    failed), in which the migration runner takes the schema's migration lock and applies what is missing.
 * 3. Then, concurrently and in any order: {@link SqlDriver.query} (and the fast paths) for the store's own operations,
 *    {@link SqlDriver.transaction} for `store.transaction()`, {@link SqlDriver.listen} / {@link SqlDriver.unlisten}
 *    as wake-up listeners come and go, {@link SqlDriver.notify} after each commit that appended.
 * 4. {@link SqlDriver.close}, once: afterwards the store calls nothing more.
 *
 * Every error a driver returns is already a store error (see errors.ts: StoreUnavailableError for a lost or unreachable
 * database, DatabaseOperationError otherwise, and whatever else the driver can tell, e.g. TransactionConflictError),
 * naming the operation it is given.
 */
import type { EncodedAppend, EventRow } from './session.js';
import type { FirstPageRead } from './read-groups.js';
import type { MigrationConnection } from './migrations.js';
import type { Statement } from './sql/statements.js';

/** Runs statements on one connection or transaction. */
export interface SqlConnection {
  /**
   * Runs one statement with its parameters and resolves with its rows: arrays of column values when
   * `statement.arrayRows`, objects otherwise. `statement.name` is a prepared-statement name ('' for none), which a
   * driver may use or ignore; `statement.raw` marks the caller's own SQL (`store.sql`), which a driver must not retry.
   */
  query<R>(statement: Statement, values: unknown[], operation: string): Promise<R[]>;
}

/** A connection inside a transaction that {@link SqlDriver.transaction} opened for the store. */
export type SqlTransaction = SqlConnection;

export interface SqlDriver extends SqlConnection {
  /**
   * Outside any transaction of the store's: each statement runs on its own, in an implicit transaction of its own, on
   * whichever connection the driver likes. A driver may retry one of the store's statements (not `raw` ones) that the
   * database rolled back whole (a deadlock): each of them is a single atomic statement.
   */
  query<R>(statement: Statement, values: unknown[], operation: string): Promise<R[]>;

  /**
   * Optional fast path for an append outside a transaction (the bench's `store.append.*`): resolves with the same
   * result line as `sendAppend` in session.ts (which the store calls when this is absent), or rejects as it would. The
   * node-postgres driver groups concurrent appends into one statement and one commit (append-groups.ts).
   */
  append?(append: EncodedAppend): Promise<string>;

  /**
   * Optional fast path for the first page of a forwards stream read outside a transaction: the rows of
   * `readStreamFirstForwards` for `[streamId, from, null, size]` (which the store runs itself when this is absent). The
   * node-postgres driver groups concurrent ones into one statement (read-groups.ts).
   */
  readFirstPage?(read: FirstPageRead): Promise<EventRow[]>;

  /**
   * Whether a stream read outside a transaction may, right now, take the stream's row and its first page in one
   * statement (default yes). Asked right before the query, with no await in between. PGlite says no while a
   * transaction is open: reads then get the committed view, and the stream's row is the one remembered before the
   * transaction changed it, so the row comes alone first.
   */
  readsStreamAtOnce?(): boolean;

  /**
   * Runs `fn` with a connection in one transaction: BEGIN, `fn`, then COMMIT when it resolves (with its result) or
   * ROLLBACK when it rejects (with its error, as it is). Errors of the transaction itself (begin, commit, a connection
   * lost) are store errors. The store tracks the transaction's state (ended, aborted by an error) around `fn`; the
   * driver only runs it. `fn` runs its statements one at a time.
   */
  transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T>;

  /**
   * Runs `fn` (the migration runner, see migrations.ts) in one transaction of its own on one connection, committed when
   * it resolves. The runner takes the schema's migration lock first thing (`pg_advisory_xact_lock`, so that two
   * processes starting at once do not both migrate); the lock is released at commit or rollback. `operation` names
   * the work for errors ("migrate schema 'x'").
   */
  migrationTransaction<T>(operation: string, fn: (connection: MigrationConnection) => Promise<T>): Promise<T>;

  /**
   * Optional: starts telling `wake` of appends committed by other processes (node-postgres: LISTEN on a connection of
   * its own, reconnecting until {@link unlisten}). Called when the store's first wake-up listener comes; resolves when
   * listening ends. Absent: only this process writes (PGlite), and the store wakes its own listeners itself.
   */
  listen?(wake: () => void): Promise<void>;
  /** Optional: stops what {@link listen} started (called when the store's last wake-up listener goes). */
  unlisten?(): Promise<void>;
  /**
   * Optional: tells other processes that events were committed (node-postgres: a coalesced NOTIFY, off the append's
   * path). Called after each commit that appended; must not throw nor wait.
   */
  notify?(): void;

  /** Optional: the age in ms of a transaction the driver knows is open, when the database does not say (PGlite). */
  openTransactionAgeMs?(): number | null;

  /** Ends listening and what the driver created (a pool, a database it opened); leaves alone what it was given. */
  close(): Promise<void>;
}
