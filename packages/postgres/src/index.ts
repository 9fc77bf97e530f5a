/**
 * @eventline/postgres: eventline's event store on a PostgreSQL server (node-postgres) and on embedded PGlite, both on
 * the one SQL module in sql/statements.ts. See the package README.
 */
export {
  createPostgresStore,
  DEFAULT_DATABASE_URL,
  GENERIC_PLANS,
  type PostgresEventStore,
  type PostgresStoreOptions,
} from './postgres.js';
export {
  createPGliteStore,
  DEFAULT_PGLITE_DATA_DIR,
  type PGliteEventStore,
  type PGliteStoreOptions,
} from './pglite.js';
export { SqlSession, type SqlClient, type SqlQueryOptions } from './session.js';
export type { SqlEventStore } from './store.js';
export {
  DatabaseOperationError,
  DataDirectoryLockedError,
  isConnectionError,
  type DataDirectoryHolder,
} from './errors.js';
export { migrations, LATEST_MIGRATION, runMigrations, type Migration, type MigrationConnection } from './migrations.js';
export { DEFAULT_SCHEMA, quoteSchema } from './sql/statements.js';
export {
  createSqlDocumentStore,
  createSqlInbox,
  createSqlProjectionCatalog,
  createSqlSnapshotStore,
  createSqlSubscriptionStore,
  sqlOf,
} from './read-side.js';
export { createSqlProcessStore } from './processes.js';
