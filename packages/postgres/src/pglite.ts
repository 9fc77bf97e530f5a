/**
 * The event store on PGlite ({@link SqlStore} on the {@link PGliteDriver} below): PostgreSQL compiled to WebAssembly,
 * in this process, file-backed or in memory. Same schema and statements as the server store (sql/statements.ts).
 *
 * PGlite has a single connection, and PGlite queues every query behind an open transaction. The memory store lets
 * readers go on while a transaction is open and shows them only committed data; so does this store: while a
 * `transaction()` is open, the store's reads (not its writes, which wait) run on the transaction's connection and are
 * given the committed view:
 * - readAll / readAllPage / headPosition only show transactions below the snapshot's xmin, and the open transaction is
 *   never below it, so its events are invisible to them anyway;
 * - stream reads, streamInfo and getStreamMetadata get the stream's row as it was before the transaction first changed
 *   it (remembered by the transaction), and stream reads stop at that row's version;
 * - a hard delete inside the transaction removes the stream's events only at commit, so that readers never miss
 *   events that a rolled-back delete would have kept.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { PGlite, type PGliteInterface, type Transaction } from '@electric-sql/pglite';
import type { EventStoreOptions } from '@eventline/core';
import { compileUniqueness } from '@eventline/core/backend';
import { fileDataDirectory, lockDataDirectory, type DataDirectoryLock } from './data-dir-lock.js';
import type { SqlDriver, SqlTransaction } from './driver.js';
import { toStoreError } from './errors.js';
import type { MigrationConnection } from './migrations.js';
import type { StreamRowData } from './session.js';
import { DEFAULT_SCHEMA, statementsFor, type Statement, type Statements } from './sql/statements.js';
import { SqlStore, type SqlEventStore } from './store.js';

export const DEFAULT_PGLITE_DATA_DIR = './.eventline/data';

export interface PGliteStoreOptions extends EventStoreOptions {
  /**
   * Directory of the database files (created when missing), or `'memory://'` for a database in memory. Default
   * `./.eventline/data`. One store at a time may open a directory: a second one, in this process or another, gets a
   * DataDirectoryLockedError (the lock is the file `<dataDir>.lock`; see the package README).
   */
  dataDir?: string;
  /**
   * A PGlite instance you own: the store uses it and leaves it open on `close()`. The store does not lock its data
   * directory: making sure that no other instance opens that directory is yours to do.
   */
  db?: PGliteInterface;
  /** The schema holding the store's tables and functions. Default `eventline`. */
  schema?: string;
}

/** The PGlite event store: the {@link SqlEventStore} (the contract, migrations, raw SQL, wake-ups) and its database. */
export interface PGliteEventStore extends SqlEventStore {
  /** The PGlite instance the store runs on (its own, or the one it was given). */
  readonly db: PGliteInterface;
}

/**
 * Creates an event store on PGlite. With neither `db` nor `dataDir`, the database lives in `./.eventline/data`. The
 * schema is created and migrated on first use (or by `await store.migrate()`). `close()` closes the database only when
 * the store created it.
 */
export function createPGliteStore(options: PGliteStoreOptions = {}): PGliteEventStore {
  const statements = statementsFor(options.schema ?? DEFAULT_SCHEMA);
  const own = options.db === undefined;
  let db = options.db;
  let lock: DataDirectoryLock | null = null;
  if (!db) {
    const dataDir = options.dataDir ?? DEFAULT_PGLITE_DATA_DIR;
    const directory = fileDataDirectory(dataDir);
    if (directory !== null) {
      // PGlite creates the directory itself, but not its parents.
      mkdirSync(dirname(resolve(directory)), { recursive: true });
      // One opener per directory, checked before PGlite touches it: throws DataDirectoryLockedError (data-dir-lock.ts).
      // Not for memory:// nor for a `db` the caller passes: whoever opens that instance owns that responsibility.
      lock = lockDataDirectory(directory);
    }
    try {
      // The real path that was locked: what is locked is what opens.
      db = new PGlite(lock ? lock.dataDir : dataDir);
    } catch (error) {
      lock?.release();
      throw error;
    }
  }
  // A failed start is reported by the first operation, not as an unhandled rejection; it lets the directory go.
  db.waitReady.catch(() => lock?.release());
  const store = new SqlStore(
    {
      statements,
      events: options.events,
      maxEventBytes: options.maxEventBytes,
      uniqueness: compileUniqueness(options.uniqueness, options.events),
    },
    new PGliteDriver(db, own, lock, statements),
  );
  return Object.defineProperty(store, 'db', { value: db, enumerable: true }) as SqlStore & {
    readonly db: PGliteInterface;
  };
}

/** The transaction open on a PGlite instance (at most one: PGlite runs transactions one at a time). */
interface OpenTransaction {
  readonly tx: Transaction;
  /** False once the transaction's function has returned or failed: readers then wait for the commit or rollback. */
  readable: boolean;
  /** Stream rows (per schema and stream id) as they were before the transaction changed them; null: there was none. */
  readonly before: Map<string, StreamRowData | null>;
  readonly startedAt: number;
}

const openTransactions = new WeakMap<PGliteInterface, OpenTransaction>();

const ARRAY_ROWS = { rowMode: 'array' } as const;

const key = (schema: string, streamId: string) => `${schema}\u0000${streamId}`;

/**
 * The PGlite driver: one embedded instance, one connection (see the top of the file for how readers go on beside an
 * open transaction). Outside `transaction()`, writes queue behind an open transaction, reads get the committed view.
 * In a transaction, the driver remembers each stream's row before the transaction first writes to it, and a hard
 * delete keeps the stream's events until commit, when they are removed. No other process writes: no LISTEN/NOTIFY.
 */
class PGliteDriver implements SqlDriver {
  constructor(
    private readonly db: PGliteInterface,
    private readonly own: boolean,
    private readonly lock: DataDirectoryLock | null,
    private readonly statements: Statements,
  ) {}

  readsStreamAtOnce(): boolean {
    return !openTransactions.get(this.db)?.readable;
  }

  async query<R>(statement: Statement, values: unknown[], operation: string): Promise<R[]> {
    try {
      const open = openTransactions.get(this.db);
      const options = statement.arrayRows ? ARRAY_ROWS : undefined;
      if (!statement.readOnly || !open?.readable) return (await this.db.query<R>(statement.text, values, options)).rows;
      const rows = (await open.tx.query<R>(statement.text, values, options)).rows;
      if (statement === this.statements.streamState) {
        // Looked up after the query: a row the transaction changed meanwhile was remembered before it changed.
        const before = open.before.get(key(this.statements.schema, values[0] as string));
        if (before !== undefined) return (before === null ? [] : [before]) as R[];
      }
      return rows;
    } catch (error) {
      throw toStoreError(error, operation);
    }
  }

  async migrationTransaction<T>(operation: string, fn: (connection: MigrationConnection) => Promise<T>): Promise<T> {
    try {
      return await this.db.transaction((tx) =>
        fn({
          exec: async (sql) => {
            await tx.exec(sql);
          },
          query: async <R>(text: string, values: unknown[]) => (await tx.query<R>(text, values)).rows,
        }),
      );
    } catch (error) {
      throw toStoreError(error, operation);
    }
  }

  async transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> {
    const statements = this.statements;
    let fnError = null as { error: unknown } | null;
    try {
      return await this.db.transaction(async (tx) => {
        const open: OpenTransaction = { tx, readable: true, before: new Map(), startedAt: Date.now() };
        openTransactions.set(this.db, open);
        const hardDeleted = new Set<string>();
        const capturing = new Map<string, Promise<void>>();
        const run = async <R>(statement: Statement, values: unknown[], operation: string): Promise<R[]> => {
          try {
            return (await tx.query<R>(statement.text, values, statement.arrayRows ? ARRAY_ROWS : undefined)).rows;
          } catch (error) {
            // PostgreSQL aborted the transaction: readers outside stop using its connection.
            open.readable = false;
            throw toStoreError(error, operation);
          }
        };
        /** Before the first change to a stream: its committed row, for the readers outside (see the top of the file). */
        const remember = (streamId: string): Promise<void> => {
          const k = key(statements.schema, streamId);
          if (open.before.has(k)) return Promise.resolve();
          let capture = capturing.get(k);
          if (!capture) {
            capture = run<StreamRowData>(statements.streamState, [streamId], `read stream '${streamId}'`).then(
              (rows) => {
                if (!open.before.has(k)) open.before.set(k, rows[0] ?? null);
              },
            );
            capturing.set(k, capture);
          }
          return capture;
        };
        const connection: SqlTransaction = {
          query: async <R>(statement: Statement, values: unknown[], operation: string): Promise<R[]> => {
            if (
              statement === statements.appendEvents ||
              statement === statements.appendClaiming ||
              statement === statements.setStreamMetadata ||
              statement === statements.deleteStream
            ) {
              await remember(values[0] as string);
              if (statement === statements.deleteStream && values[2] === true) {
                // A hard delete keeps the events (p_keep_events) until commit, so that readers never miss events
                // that a rolled-back delete would have kept.
                const rows = await run<{ status: string }>(statement, [values[0], values[1], true, true], operation);
                if (rows[0]?.status === 'ok') hardDeleted.add(values[0] as string);
                return rows as R[];
              }
            }
            return run<R>(statement, values, operation);
          },
        };
        try {
          let result: T;
          try {
            result = await fn(connection);
          } catch (error) {
            fnError = { error };
            throw error;
          }
          open.readable = false;
          if (hardDeleted.size > 0)
            await run(statements.removeStreamEvents, [[...hardDeleted]], 'remove the events of hard-deleted streams');
          return result;
        } finally {
          open.readable = false;
          if (openTransactions.get(this.db) === open) openTransactions.delete(this.db);
        }
      });
    } catch (error) {
      if (fnError?.error === error) throw error;
      throw toStoreError(error, 'run a transaction');
    }
  }

  openTransactionAgeMs(): number | null {
    const open = openTransactions.get(this.db);
    return open ? Date.now() - open.startedAt : null;
  }

  async close(): Promise<void> {
    try {
      if (this.own && !this.db.closed) await this.db.close();
    } finally {
      // Only once PGlite has closed (its files flushed and let go): if closing failed, the instance may still write
      // them, and the lock stays until this process exits.
      if (this.db.closed) this.lock?.release();
    }
  }
}
