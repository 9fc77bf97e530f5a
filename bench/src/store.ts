/**
 * The event store figures (`store.*` on PostgreSQL, `store.pglite.*` on embedded PGlite), each beside the raw driver
 * doing the same work on an equivalent table (./raw.ts). Every run works in schemas of its own and drops them at the end.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { createPGliteStore, createPostgresStore } from '@eventline/postgres';
import type { EventStore } from '@eventline/core';
import pg from 'pg';
import { HOT_STREAM, HOT_STREAM_EVENTS, orderEvents, SEEDED_EVENTS, seedRowsSelect } from './events.js';
import {
  concurrently,
  DATABASE_URL,
  interleave,
  rate,
  uniqueName,
  type BenchContext,
  type BenchModule,
} from './harness.js';
import {
  preparedQueries,
  rawAppendBatch,
  rawAppendOne,
  rawReadAll,
  rawReadStream,
  rawTableDdl,
  type Query,
} from './raw.js';
import type { RssRequest, RssResponse } from './rss-child.js';

const ROUNDS = 5;
const POOL_SIZE = 8;
const ALL_PAGE_SIZE = 1000;
const STREAM_PAGE_SIZE = 500;
/** Appends per round of the `append.single.c<writers>` figures. */
const SINGLE_APPENDS: Record<number, number> = { 1: 500, 8: 3000 };
/**
 * Events already in the store and the raw table when the append figures start: a store in use, not one created a
 * moment ago (whose cached plans and statistics describe an empty table; see the README).
 */
const PRIMED_EVENTS = 10_000;
const BATCH_SIZE = 100;
const BATCHES = 100;
/** Reads of the hot stream per round of `readStream.10k`. */
const STREAM_READS = 3;

type MigratableStore = EventStore & { migrate(): Promise<number[]> };

/** What differs between PostgreSQL and PGlite; the figures themselves are shared. */
interface Backend {
  /** `store` or `store.pglite`: the figure names' prefix. */
  readonly prefix: string;
  /** For setting up and seeding. */
  readonly query: Query;
  /** For the baseline's work. */
  readonly raw: Query;
  /** Concurrent writers measured by `append.single.c<n>`. */
  readonly writers: readonly number[];
  /** Rounds of `readAll.catchup` (a round reads 100k events; PGlite is slow at it). */
  readonly catchupRounds: number;
  /** A store working in `schema`. */
  openStore(schema: string): MigratableStore;
}

const figureNames = (prefix: string, writers: readonly number[]): string[] => [
  ...writers.map((w) => `${prefix}.append.single.c${w}`),
  `${prefix}.append.batch100`,
  `${prefix}.readAll.catchup`,
  `${prefix}.readStream.10k`,
];

const RSS_FIGURES = ['store.readAll.catchup.rss', 'store.readAll.catchup.rss.10k'] as const;

export const postgresStoreBench: BenchModule = {
  area: 'store on PostgreSQL',
  figures: [...figureNames('store', [1, 8]), ...RSS_FIGURES],
  async run(ctx) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: POOL_SIZE });
    const backend: Backend = {
      prefix: 'store',
      query: (text, params) => pool.query(text, params),
      raw: preparedQueries(pool),
      writers: [1, 8],
      catchupRounds: ROUNDS,
      openStore: (schema) => createPostgresStore({ connectionString: DATABASE_URL, schema, poolSize: POOL_SIZE }),
    };
    try {
      const rss = RSS_FIGURES.some((name) => ctx.wants(name));
      await runFigures(ctx, backend, rss ? (seeded) => rssFigures(ctx, seeded) : undefined);
    } finally {
      await pool.end();
    }
  },
};

export const pgliteStoreBench: BenchModule = {
  area: 'store on PGlite',
  figures: figureNames('store.pglite', [1]),
  async run(ctx) {
    // In memory: nothing is left behind when it closes.
    const db = await PGlite.create('memory://');
    const backend: Backend = {
      prefix: 'store.pglite',
      query: (text, params) => db.query(text, params),
      raw: (text, params) => db.query(text, params),
      writers: [1],
      catchupRounds: 3,
      openStore: (schema) => createPGliteStore({ db, schema }),
    };
    try {
      await runFigures(ctx, backend);
    } finally {
      await db.close();
    }
  },
};

interface Seeded {
  readonly storeSchema: string;
  readonly rawTable: string;
}

/**
 * Runs the append figures on an empty store and raw table, then seeds a 100k-event log into another store and raw
 * table for the read figures (`afterSeed` adds backend-specific ones). Drops every schema it created, whatever happens.
 */
async function runFigures(ctx: BenchContext, b: Backend, afterSeed?: (seeded: Seeded) => Promise<void>): Promise<void> {
  const names = figureNames(b.prefix, b.writers);
  const wantsWrites = names.some((n) => n.includes('.append.') && ctx.wants(n));
  const wantsReads = names.some((n) => n.includes('.read') && ctx.wants(n)) || afterSeed !== undefined;
  const tag = uniqueName('elbench');
  const raw = `${tag}_raw`;
  const schemas = [raw];
  const stores: EventStore[] = [];
  const openStore = (name: string): MigratableStore => {
    const schema = `${tag}_${name}`;
    schemas.push(schema);
    const store = b.openStore(schema);
    stores.push(store);
    return store;
  };
  try {
    await b.query(`CREATE SCHEMA ${raw}`);
    if (wantsWrites) {
      const rawTable = `${raw}.appended`;
      const store = openStore('appended');
      await seed(b, store, schemas.at(-1)!, rawTable, PRIMED_EVENTS);
      await appendFigures(ctx, b, store, rawTable);
    }
    if (wantsReads) {
      const rawTable = `${raw}.seeded`;
      const store = openStore('seeded');
      ctx.log(`${b.prefix}: seeding ${SEEDED_EVENTS} events`);
      await seed(b, store, schemas.at(-1)!, rawTable, SEEDED_EVENTS);
      await readFigures(ctx, b, store, rawTable);
      await afterSeed?.({ storeSchema: schemas.at(-1)!, rawTable });
    }
  } finally {
    for (const store of stores)
      await store.close().catch((error: unknown) => ctx.log(`closing a store failed: ${String(error)}`));
    for (const schema of schemas.reverse()) await b.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  }
}

async function appendFigures(ctx: BenchContext, b: Backend, store: EventStore, table: string): Promise<void> {
  for (const writers of b.writers) {
    const name = `${b.prefix}.append.single.c${writers}`;
    if (!ctx.wants(name)) continue;
    ctx.log(name);
    const count = SINGLE_APPENDS[writers]!;
    const r = await interleave(
      ROUNDS,
      (round) => {
        const events = orderEvents(count);
        return rate(count, () =>
          concurrently(
            writers,
            count,
            async (i) =>
              void (await store.append(`order-c${writers}s${round + 1}-${i}`, [events[i]!], {
                expectedVersion: 'no_stream',
              })),
          ),
        );
      },
      (round) => {
        const events = orderEvents(count);
        return rate(count, () =>
          concurrently(writers, count, (i) =>
            rawAppendOne(b.raw, table, `order-c${writers}r${round + 1}-${i}`, 1, events[i]!),
          ),
        );
      },
    );
    ctx.record(name, 'events/s', r.value, r.baseline, r);
  }

  const name = `${b.prefix}.append.batch100`;
  if (!ctx.wants(name)) return;
  ctx.log(name);
  const batches = (): ReturnType<typeof orderEvents>[] =>
    Array.from({ length: BATCHES }, () => orderEvents(BATCH_SIZE));
  const r = await interleave(
    ROUNDS,
    async (round) => {
      const events = batches();
      return rate(BATCHES * BATCH_SIZE, async () => {
        for (const [i, batch] of events.entries())
          await store.append(`order-bs${round + 1}-${i}`, batch, { expectedVersion: 'no_stream' });
      });
    },
    async (round) => {
      const events = batches();
      return rate(BATCHES * BATCH_SIZE, async () => {
        for (const [i, batch] of events.entries())
          await rawAppendBatch(b.raw, table, `order-br${round + 1}-${i}`, 1, batch);
      });
    },
  );
  ctx.record(name, 'events/s', r.value, r.baseline, r);
}

async function readFigures(ctx: BenchContext, b: Backend, store: EventStore, table: string): Promise<void> {
  const catchup = `${b.prefix}.readAll.catchup`;
  if (ctx.wants(catchup)) {
    ctx.log(catchup);
    // The warm-up round (-1) reads a tenth of the log.
    const limit = (round: number): number => (round < 0 ? SEEDED_EVENTS / 10 : SEEDED_EVENTS);
    const r = await interleave(
      b.catchupRounds,
      async (round) => {
        let count = 0;
        return rate(limit(round), async () => {
          for await (const _event of store.readAll({ pageSize: ALL_PAGE_SIZE })) if (++count >= limit(round)) break;
          expectCount(catchup, count, limit(round));
        });
      },
      async (round) =>
        rate(limit(round), async () => {
          expectCount(catchup, await rawReadAll(b.raw, table, ALL_PAGE_SIZE, limit(round)), limit(round));
        }),
    );
    ctx.record(catchup, 'events/s', r.value, r.baseline, r);
  }

  const stream = `${b.prefix}.readStream.10k`;
  if (ctx.wants(stream)) {
    ctx.log(stream);
    const total = STREAM_READS * HOT_STREAM_EVENTS;
    const r = await interleave(
      ROUNDS,
      () =>
        rate(total, async () => {
          for (let i = 0; i < STREAM_READS; i++) {
            let count = 0;
            for await (const _event of store.readStream(HOT_STREAM, { pageSize: STREAM_PAGE_SIZE })) count++;
            expectCount(stream, count, HOT_STREAM_EVENTS);
          }
        }),
      () =>
        rate(total, async () => {
          for (let i = 0; i < STREAM_READS; i++)
            expectCount(stream, await rawReadStream(b.raw, table, HOT_STREAM, STREAM_PAGE_SIZE), HOT_STREAM_EVENTS);
        }),
    );
    ctx.record(stream, 'events/s', r.value, r.baseline, r);
  }
}

/** Peak RSS of a child process that only reads the log (all of it, then 10k events), through the store and raw. */
async function rssFigures(ctx: BenchContext, seeded: Seeded): Promise<void> {
  for (const [name, count] of [
    ['store.readAll.catchup.rss', SEEDED_EVENTS],
    ['store.readAll.catchup.rss.10k', SEEDED_EVENTS / 10],
  ] as const) {
    if (!ctx.wants(name)) continue;
    ctx.log(name);
    const r = await interleave(
      3,
      () => peakRss(name, { mode: 'store', schema: seeded.storeSchema, count, pageSize: ALL_PAGE_SIZE }),
      () => peakRss(name, { mode: 'raw', table: seeded.rawTable, count, pageSize: ALL_PAGE_SIZE }),
      { warmup: false },
    );
    ctx.record(name, 'MiB', r.value, r.baseline, r);
  }
}

async function peakRss(figure: string, request: RssRequest): Promise<number> {
  const child = spawn(
    process.execPath,
    [...process.execArgv, fileURLToPath(new URL('./rss-child.ts', import.meta.url)), JSON.stringify(request)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const code = await new Promise<number | null>((resolve, reject) => child.on('error', reject).on('close', resolve));
  if (code !== 0) throw new Error(`${figure}: the reading child process exited with ${code}`);
  const response = JSON.parse(out) as RssResponse;
  expectCount(figure, response.events, request.count);
  return response.peakRssMiB;
}

function expectCount(figure: string, actual: number, expected: number): void {
  if (actual !== expected) throw new Error(`${figure}: read ${actual} events, expected ${expected}`);
}

/**
 * Creates the raw table with `count` events of bulk SQL, and copies them into the store's tables with INSERT ... SELECT
 * in chunks of 1,000 events (one transaction each, as if written by many appends); then VACUUM ANALYZE on both, as
 * autovacuum would have done on a database in use. This writes the store's schema v1 (packages/postgres/src/sql/migrations/0001-events.ts)
 * directly: keep it in step with the store's migrations.
 */
async function seed(
  b: Backend,
  store: MigratableStore,
  schema: string,
  rawTable: string,
  count: number,
): Promise<void> {
  await b.query(rawTableDdl(rawTable));
  await b.query(
    `INSERT INTO ${rawTable} (event_id, stream_id, version, type, data, metadata) ${seedRowsSelect(count)}`,
  );
  await store.migrate();
  const chunk = 1000;
  for (let from = 0; from < count; from += chunk) {
    await b.query(
      `INSERT INTO ${schema}.events (event_id, stream_id, version, category, type, data, metadata)
       SELECT event_id, stream_id, version, split_part(stream_id, '-', 1), type, data, metadata || '{"schemaVersion": 1}'
         FROM ${rawTable} WHERE global_position > $1 AND global_position <= $2 ORDER BY global_position`,
      [from, from + chunk],
    );
  }
  await b.query(
    `INSERT INTO ${schema}.streams (stream_id, category, version)
     SELECT stream_id, split_part(stream_id, '-', 1), max(version) FROM ${rawTable} GROUP BY stream_id`,
  );
  for (const table of [`${schema}.events`, `${schema}.streams`, rawTable]) await b.query(`VACUUM ANALYZE ${table}`);
}
