/**
 * Test helpers for the server tests. Every run works in its own uniquely named schemas and drops them at the end.
 *
 * readAll is gap-safe against the whole server: a transaction open anywhere on it (any database) holds every reader
 * back. The server tests of this package therefore run one file at a time, each holding an exclusive advisory lock
 * for its whole run, so that one file's open transactions (the gap and fault tests hold some on purpose) never delay
 * another file's readers when node runs test files in parallel.
 */
import { randomBytes } from 'node:crypto';
import { after, before } from 'node:test';
import pg from 'pg';
import { createPostgresStore, type PostgresEventStore } from '@eventline/postgres';

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A fresh schema name: `<prefix>_<random>`. */
export function uniqueSchema(prefix = 't'): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`;
}

/**
 * Waits (at most `timeoutMs`) until PostgreSQL accepts a connection, then returns a client holding the exclusive test
 * lock. Fails with a clear message when the server cannot be reached: tests never skip (under CI=true or not).
 */
export async function connectForTests(timeoutMs = 15_000): Promise<pg.Client> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    const client = new pg.Client({ connectionString: DATABASE_URL, application_name: 'eventline-tests' });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT pg_advisory_lock($1::int4, $2::int4)', [0x6576746c, 0x74657374]);
      return client;
    } catch (error) {
      lastError = error;
      await client.end().catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  throw new Error(
    `PostgreSQL is not reachable at ${DATABASE_URL} (waited ${timeoutMs} ms: ${(lastError as Error)?.message ?? lastError}). ` +
      `These tests need a real server: start it (e.g. pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) or set DATABASE_URL.`,
  );
}

/** Drops the schemas (CASCADE) and releases the test lock. */
export async function cleanUp(client: pg.Client | undefined, schemas: readonly string[]): Promise<void> {
  if (!client) return;
  try {
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end();
  }
}

/**
 * A pool whose connections show `spy` every query they run (the config object, or the text) before running it; a
 * query for which `spy` returns an error fails with it, as if the connection had been lost.
 */
export function spiedPool(spy: (query: { name?: string; text?: string }) => Error | void): pg.Pool {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 });
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const error = spy(
        typeof args[0] === 'string' ? { text: args[0] } : ((args[0] ?? {}) as { name?: string; text?: string }),
      );
      return error ? Promise.reject(error) : query(...args);
    };
  });
  return pool;
}

/**
 * For a test file whose stores each run on a spied pool of their own (see {@link spiedPool}): registers the file's
 * hooks (the connection that holds the file's lock; at the end, closing the stores and pools and dropping their
 * schemas) and returns a function that opens such a store, migrated. Call it at the top level of the file.
 */
export function spiedStores(
  prefix: string,
): (spy: Parameters<typeof spiedPool>[0], options?: { grouping?: number }) => Promise<PostgresEventStore> {
  let admin: pg.Client | undefined;
  const schemas: string[] = [];
  const stores: PostgresEventStore[] = [];
  const pools: pg.Pool[] = [];
  before(async () => {
    admin = await connectForTests();
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await Promise.all(pools.map((p) => p.end()));
    await cleanUp(admin, schemas);
  });
  return async (spy, options = {}) => {
    const schema = uniqueSchema(prefix);
    schemas.push(schema);
    const pool = spiedPool(spy);
    pools.push(pool);
    const store = createPostgresStore({ pool, schema, ...options });
    stores.push(store);
    await store.migrate();
    return store;
  };
}
