/**
 * Versioned schema migrations. Each runs once per schema, in order, inside one transaction that holds an advisory lock
 * derived from the schema name (so two processes starting at once do not both migrate), and is recorded in
 * `<schema>.migrations (version, name, applied_at)`. A migration, once released, never changes: add a new one.
 */
import {
  appliedMigrations,
  createMigrationsTable,
  migrationLock,
  migrationLockKeys,
  quoteSchema,
  recordMigration,
  schemaV1,
  schemaV3,
  schemaV4,
  schemaV5,
} from './sql.js';
import { schemaV2 } from './read-side-sql.js';

export interface Migration {
  readonly version: number;
  readonly name: string;
  /** The DDL, for the double-quoted schema name. */
  readonly sql: (quotedSchema: string) => string;
}

export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'event store: streams, events, append_events / delete_stream / set_stream_metadata',
    sql: schemaV1,
  },
  {
    version: 2,
    name: 'read side: checkpoints, leases, parked events, snapshots, projection catalog, inbox, read-model registry',
    sql: schemaV2,
  },
  { version: 3, name: 'append_events: optional id look-up and lock wait; append_group (group commit)', sql: schemaV3 },
  {
    version: 4,
    name: "streams.last_transaction: events labelled with the greater of their transaction's id and their stream's last label, so that the log follows every stream's order",
    sql: schemaV4,
  },
  {
    version: 5,
    name: 'append_group: the fast path of a whole group in one statement (new streams, free existing streams whose expected version holds)',
    sql: schemaV5,
  },
];

/** The latest migration version this package knows. */
export const LATEST_MIGRATION = migrations[migrations.length - 1]!.version;

/** A connection inside an open transaction, as the migration runner needs it. */
export interface MigrationConnection {
  /** Runs several statements without parameters. */
  exec(sql: string): Promise<void>;
  query<R>(text: string, values: unknown[]): Promise<R[]>;
}

/**
 * Applies the missing migrations of `schema` on `connection`, which must be inside a transaction that the caller
 * commits (the advisory lock is released at commit). Returns the versions applied now (empty when up to date).
 * Versions in the database newer than this package knows are left alone.
 */
export async function runMigrations(connection: MigrationConnection, schema: string): Promise<number[]> {
  const s = quoteSchema(schema);
  const [classKey, schemaKey] = migrationLockKeys(schema);
  await connection.query(migrationLock(), [classKey, schemaKey]);
  await connection.exec(createMigrationsTable(s));
  const rows = await connection.query<{ version: number | string }>(appliedMigrations(s), []);
  const applied = new Set(rows.map((row) => Number(row.version)));
  const done: number[] = [];
  for (const migration of migrations) {
    if (applied.has(migration.version)) continue;
    await connection.exec(migration.sql(s));
    await connection.query(recordMigration(s), [migration.version, migration.name]);
    done.push(migration.version);
  }
  return done;
}
