/**
 * What a process of the examples needs around the demo: its store chosen by the environment, the read side in the
 * store's own database, and a clean stop on SIGINT / SIGTERM. Used by `npm start` (main.ts) and by the statement
 * service's bank process.
 */
import {
  createPGliteStore,
  createPostgresStore,
  createSqlDocumentStore,
  createSqlProcessStore,
  createSqlProjectionCatalog,
  createSqlSnapshotStore,
  createSqlSubscriptionStore,
  type SqlEventStore,
} from '@eventline/postgres';
import type { EventRegistry, UniquenessOptions } from '@eventline/core';

/**
 * PostgreSQL when DATABASE_URL is set (in `schema`), else PGlite in `dataDir`; migrated before it is returned.
 * `where` says which, for the start-up line.
 */
export async function openSqlStore(options: {
  events?: EventRegistry;
  uniqueness?: UniquenessOptions;
  schema: string;
  dataDir: string;
}): Promise<{ store: SqlEventStore; where: string }> {
  const url = process.env.DATABASE_URL;
  const common = {
    ...(options.events ? { events: options.events } : {}),
    ...(options.uniqueness ? { uniqueness: options.uniqueness } : {}),
  };
  const store: SqlEventStore = url
    ? createPostgresStore({ connectionString: url, schema: options.schema, ...common })
    : createPGliteStore({ dataDir: options.dataDir, ...common });
  try {
    await store.migrate();
  } catch (error) {
    await store.close().catch(() => undefined); // a store that did not start lets its connections (or its directory) go
    throw error;
  }
  return { store, where: url ? `PostgreSQL (schema ${store.schema})` : `PGlite in ${options.dataDir}` };
}

/** The demo's storage (see createDemo) on the store's own database. */
export function sqlStorage(store: SqlEventStore) {
  return {
    store,
    subscriptions: createSqlSubscriptionStore(store),
    documents: createSqlDocumentStore(store),
    catalog: createSqlProjectionCatalog(store),
    snapshots: createSqlSnapshotStore(store),
    processes: createSqlProcessStore(store),
  };
}

/** On SIGINT or SIGTERM, runs `close` once and exits. */
export function stopOnSignals(close: () => Promise<void>): void {
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}
