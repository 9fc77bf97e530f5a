/**
 * Test helpers for code that runs on these stores (`@eventline/postgres/testing`): fresh, isolated stores on the
 * PostgreSQL server (a new schema each, dropped at the end) and on PGlite.
 *
 * The readable end of the log is bounded by the oldest transaction open anywhere on the server, so a test file that
 * holds transactions open would delay another file's readers: {@link openTestDatabases} takes a server-wide advisory
 * lock for the whole file, so server test files run one at a time.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { EventStore } from '@eventline/core';
import { createPGliteStore, type PGliteEventStore, type PGliteStoreOptions } from './pglite.js';
import { createPostgresStore, type PostgresEventStore, type PostgresStoreOptions } from './postgres.js';

export interface TestDatabases {
  /** A store on a new schema of the server (options as for createPostgresStore, schema and connection excepted). */
  postgres(
    options?: Omit<PostgresStoreOptions, 'schema' | 'connectionString' | 'pool'> & { schema?: string },
  ): PostgresEventStore;
  /** A store on PGlite: in memory unless `dataDir` is given. */
  pglite(options?: PGliteStoreOptions): PGliteEventStore;
  /** Closes every store made here, drops their schemas and releases the lock. */
  close(): Promise<void>;
}

const TEST_LOCK = [0x6576746c, 0x74657374] as const;

export async function openTestDatabases(
  options: { databaseUrl?: string; timeoutMs?: number } = {},
): Promise<TestDatabases> {
  const url = options.databaseUrl ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  let admin: pg.Client | null = null;
  let lastError: unknown;
  while (!admin && Date.now() < deadline) {
    const client = new pg.Client({ connectionString: url, application_name: 'eventline-tests' });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT pg_advisory_lock($1::int4, $2::int4)', [...TEST_LOCK]);
      admin = client;
    } catch (error) {
      lastError = error;
      await client.end().catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  if (!admin) {
    throw new Error(
      `PostgreSQL is not reachable at ${url} (${(lastError as Error)?.message ?? String(lastError)}); these tests need a real server there (start it, or set DATABASE_URL to one).`,
    );
  }
  const lockHolder = admin;
  const schemas: string[] = [];
  const stores: EventStore[] = [];
  return {
    postgres(storeOptions = {}) {
      const schema = storeOptions.schema ?? `t_${randomBytes(6).toString('hex')}`;
      if (!schemas.includes(schema)) schemas.push(schema);
      const store = createPostgresStore({ poolSize: 4, ...storeOptions, schema, connectionString: url });
      stores.push(store);
      return store;
    },
    pglite(storeOptions = {}) {
      const store = createPGliteStore({ dataDir: 'memory://', ...storeOptions });
      stores.push(store);
      return store;
    },
    async close() {
      try {
        for (const store of stores) await store.close().catch(() => undefined);
        for (const schema of schemas)
          await lockHolder.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`);
      } finally {
        await lockHolder.end();
      }
    },
  };
}
