/**
 * Versioned schema migrations. Each runs once per schema, in order, inside one transaction that holds an advisory lock
 * derived from the schema name (so two processes starting at once do not both migrate), and is recorded in
 * `<schema>.migrations (version, name, applied_at)`.
 *
 * Each released migration is literal SQL in its own file under ./sql/migrations/ (`NNNN-<what>.ts`, exporting
 * `version`, `name` and `sql`), frozen: test/migrations.test.ts pins the SHA-256 of every text, because a database
 * migrated by an earlier release must end up exactly where a new one does. A change to the schema is a new file with
 * the next version, added to {@link migrations} below. The schema name is the only parameter: every `{{schema}}` in
 * the text is replaced by the validated, double-quoted name (see {@link renderMigration}); nothing else is substituted.
 */
import * as m0001 from './sql/migrations/0001-events.js';
import * as m0002 from './sql/migrations/0002-read-side.js';
import * as m0003 from './sql/migrations/0003-append-group.js';
import * as m0004 from './sql/migrations/0004-stream-order.js';
import * as m0005 from './sql/migrations/0005-append-group-fast-path.js';
import * as m0006 from './sql/migrations/0006-claims.js';
import * as m0007 from './sql/migrations/0007-processes.js';
import {
  appliedMigrations,
  createMigrationsTable,
  migrationLock,
  migrationLockKeys,
  quoteSchema,
  recordMigration,
} from './sql/statements.js';

export interface Migration {
  readonly version: number;
  readonly name: string;
  /** The DDL, for the double-quoted schema name. */
  readonly sql: (quotedSchema: string) => string;
}

/** The placeholder of the schema in a migration's text. */
export const SCHEMA_PLACEHOLDER = '{{schema}}';

/** A migration's text for a schema: every {@link SCHEMA_PLACEHOLDER} replaced by the double-quoted schema name. */
export function renderMigration(text: string, quotedSchema: string): string {
  return text.replaceAll(SCHEMA_PLACEHOLDER, quotedSchema);
}

/** The frozen texts, by version (test/migrations.test.ts pins their hashes). */
export const migrationTexts: ReadonlyMap<number, string> = new Map(
  [m0001, m0002, m0003, m0004, m0005, m0006, m0007].map((file) => [file.version, file.sql]),
);

export const migrations: readonly Migration[] = [m0001, m0002, m0003, m0004, m0005, m0006, m0007].map(
  (file): Migration => ({
    version: file.version,
    name: file.name,
    sql: (quotedSchema) => renderMigration(file.sql, quotedSchema),
  }),
);

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
