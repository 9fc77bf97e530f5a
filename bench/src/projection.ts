/**
 * The read side on PostgreSQL (issue 4):
 * - `projection.async.throughput`: events/s of an async projection (createAsyncProjection: SQL subscription store and
 *   documents) catching up over 20k pre-appended events, one document upsert per event, batches of 100 committed with
 *   the checkpoint; baseline: a raw node-postgres loop reading the same events from the store's table by keyset and
 *   doing the same upserts and a checkpoint UPDATE in one transaction per 100 events.
 * - `projection.latency.p50` / `.p99`: ms from `append` returning (on a second store instance, its own pool, as another
 *   process would) to the projection's `waitFor` resolving (its documents and checkpoint committed), the projection
 *   woken by NOTIFY; baseline: a raw LISTEN loop doing the same (INSERT + pg_notify, then SELECT, upsert, checkpoint).
 */
import {
  createPostgresStore,
  createSqlDocumentStore,
  createSqlProjectionCatalog,
  createSqlSubscriptionStore,
  type PostgresEventStore,
  type SqlClient,
} from '@eventline/postgres';
import { createAsyncProjection, defineProjection } from '@eventline/core';
import pg from 'pg';
import { orderEvents } from './events.js';
import { DATABASE_URL, interleave, median, uniqueName, type BenchContext, type BenchModule } from './harness.js';

const EVENTS = 20_000;
const STREAMS = 400;
const BATCH = 100;
const ROUNDS = 3;
const LATENCY_APPENDS = 100; // per round: 3 rounds, 300 samples per side
const LATENCY_GAP_MS = 5;

type Order = { totalCents: number; customerId: string; lines: unknown[] };
/** The document both sides write for an event: a summary of its order (one upsert per event). */
const summary = (type: string, data: Order) => ({
  last: type,
  totalCents: data.totalCents,
  customerId: data.customerId,
  lines: data.lines.length,
});

const ordersProjection = (name: string) =>
  defineProjection<SqlClient>({
    name,
    version: 1,
    handlers: {
      OrderPlaced: async (event, { documents }) =>
        void (await documents('order').set(event.streamId, summary(event.type, event.data as Order))),
      OrderLineAdded: async (event, { documents }) =>
        void (await documents('order').set(event.streamId, summary(event.type, event.data as Order))),
    },
  });

export const projectionBench: BenchModule = {
  area: 'projections on PostgreSQL',
  figures: ['projection.async.throughput', 'projection.latency.p50', 'projection.latency.p99'],
  async run(ctx) {
    const schema = uniqueName('bench_projection');
    const raw = uniqueName('bench_projection_raw');
    const store = createPostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 4 });
    const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
    try {
      await store.migrate();
      await admin.query(`CREATE SCHEMA "${raw}"`);
      if (ctx.wants('projection.async.throughput')) await throughput(ctx, store, schema, raw);
      if (ctx.wants('projection.latency')) await latency(ctx, store, schema, raw);
    } finally {
      await store.close();
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.query(`DROP SCHEMA IF EXISTS "${raw}" CASCADE`);
      await admin.end();
    }
  },
};

const parts = (store: PostgresEventStore) => ({
  store,
  subscriptions: createSqlSubscriptionStore(store),
  documents: createSqlDocumentStore(store),
  catalog: createSqlProjectionCatalog(store),
});

async function throughput(ctx: BenchContext, store: PostgresEventStore, schema: string, raw: string): Promise<void> {
  ctx.log(`  appending ${EVENTS} events on ${STREAMS} streams`);
  const perAppend = EVENTS / STREAMS;
  for (let i = 0; i < STREAMS; i++) await store.append(`order-${i}`, orderEvents(perAppend, i * perAppend));
  await store.sql.query(`VACUUM ANALYZE "${schema}".events`);
  const head = await store.headPosition();
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    const rounds = await interleave(
      ROUNDS,
      async (round) => {
        const projection = createAsyncProjection({
          ...parts(store),
          projection: ordersProjection(`orders_t${round + 1}`),
          batchSize: BATCH,
        });
        const started = performance.now();
        await projection.start();
        await projection.waitFor(head, { timeoutMs: 120_000 });
        const elapsed = performance.now() - started;
        await projection.stop();
        const count = await (await projection.collection('order')).count();
        if (count !== STREAMS) throw new Error(`the projection wrote ${count} documents, not ${STREAMS}`);
        return EVENTS / (elapsed / 1000);
      },
      async (round) => {
        const table = `"${raw}".orders_t${round + 1}`;
        const name = `r${round + 1}`;
        await client.query(
          `CREATE TABLE ${table} (id text COLLATE "C" PRIMARY KEY, data jsonb, version bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
        );
        await client.query(
          `CREATE TABLE IF NOT EXISTS "${raw}".checkpoints (name text PRIMARY KEY, tx xid8 NOT NULL, position bigint NOT NULL)`,
        );
        await client.query(`INSERT INTO "${raw}".checkpoints VALUES ($1, '0', 0)`, [name]);
        const select = {
          name: `select-${round}`,
          text: `SELECT transaction_id::text AS tx, position, stream_id, type, data FROM "${schema}".events WHERE (transaction_id, position) > ($1::xid8, $2::int8) ORDER BY transaction_id, position LIMIT ${BATCH}`,
        };
        const upsert = {
          name: `upsert-${round}`,
          text: `INSERT INTO ${table} AS d (id, data, version) VALUES ($1, $2::jsonb, $3) ON CONFLICT (id) DO UPDATE SET data = excluded.data, version = excluded.version, updated_at = now() WHERE d.version < excluded.version`,
        };
        const checkpoint = {
          name: `checkpoint-${round}`,
          text: `UPDATE "${raw}".checkpoints SET tx = $2::xid8, position = $3 WHERE name = $1`,
        };
        const started = performance.now();
        let after = { tx: '0', position: '0' };
        let done = 0;
        for (;;) {
          const { rows } = await client.query<{
            tx: string;
            position: string;
            stream_id: string;
            type: string;
            data: Order;
          }>({ ...select, values: [after.tx, after.position] });
          if (rows.length === 0) break;
          await client.query('BEGIN');
          for (const row of rows)
            await client.query({
              ...upsert,
              values: [row.stream_id, JSON.stringify(summary(row.type, row.data)), row.position],
            });
          const last = rows[rows.length - 1]!;
          await client.query({ ...checkpoint, values: [name, last.tx, last.position] });
          await client.query('COMMIT');
          after = last;
          done += rows.length;
        }
        const elapsed = performance.now() - started;
        if (done !== EVENTS) throw new Error(`the raw loop read ${done} events, not ${EVENTS}`);
        return EVENTS / (elapsed / 1000);
      },
    );
    ctx.record('projection.async.throughput', 'events/s', rounds.value, rounds.baseline, rounds);
  } finally {
    await client.end();
  }
}

async function latency(ctx: BenchContext, store: PostgresEventStore, schema: string, raw: string): Promise<void> {
  // The writer is another store instance on the same schema, with its own pool: its NOTIFY reaches the projection's
  // store through PostgreSQL, as it would from another process.
  const writer = createPostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 2 });
  const projection = createAsyncProjection({
    ...parts(store),
    projection: ordersProjection('orders_latency'),
    batchSize: BATCH,
    from: 'end',
  });
  // The raw side: a writer pool inserting an event and notifying, a LISTEN connection, and a loop on its own connection
  // that reads new events by keyset and upserts them with the checkpoint in one transaction.
  await store.sql.query(
    `CREATE TABLE "${raw}".events (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, stream_id text NOT NULL, type text NOT NULL, data jsonb NOT NULL)`,
  );
  await store.sql.query(
    `CREATE TABLE "${raw}".orders_latency (id text COLLATE "C" PRIMARY KEY, data jsonb, version bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
  );
  await store.sql.query(
    `CREATE TABLE IF NOT EXISTS "${raw}".checkpoints (name text PRIMARY KEY, tx xid8 NOT NULL, position bigint NOT NULL)`,
  );
  await store.sql.query(`INSERT INTO "${raw}".checkpoints VALUES ('latency', '0', 0)`);
  const rawWriter = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
  const listener = new pg.Client({ connectionString: DATABASE_URL });
  const worker = new pg.Client({ connectionString: DATABASE_URL });
  await listener.connect();
  await worker.connect();
  const rawLoop = rawProjector(worker, raw);
  listener.on('notification', () => rawLoop.wake());
  await listener.query(`LISTEN "${raw}_appended"`);
  const insert = {
    name: 'raw-insert',
    text: `WITH e AS (INSERT INTO "${raw}".events (stream_id, type, data) VALUES ($1, $2, $3::jsonb) RETURNING position) SELECT position, pg_notify('${raw}_appended', '') FROM e`,
  };
  const measured: number[] = [];
  const baseline: number[] = [];
  let n = 0;
  try {
    await projection.start();
    const rounds = await interleave(
      ROUNDS,
      async (round) => {
        const samples: number[] = [];
        for (let i = 0; i < (round < 0 ? 20 : LATENCY_APPENDS); i++) {
          const [event] = orderEvents(1, n++);
          const { position } = await writer.append(`order-latency-${i % 10}`, [event!]);
          const start = performance.now();
          await projection.waitFor(position, { timeoutMs: 10_000 });
          samples.push(performance.now() - start);
          await sleep(LATENCY_GAP_MS);
        }
        if (round >= 0) measured.push(...samples);
        return percentile(samples, 0.99);
      },
      async (round) => {
        const samples: number[] = [];
        for (let i = 0; i < (round < 0 ? 20 : LATENCY_APPENDS); i++) {
          const [event] = orderEvents(1, n++);
          const { rows } = await rawWriter.query<{ position: string }>({
            ...insert,
            values: [`order-latency-${i % 10}`, event!.type, JSON.stringify(event!.data)],
          });
          const start = performance.now();
          await rawLoop.waitFor(BigInt(rows[0]!.position));
          samples.push(performance.now() - start);
          await sleep(LATENCY_GAP_MS);
        }
        if (round >= 0) baseline.push(...samples);
        return percentile(samples, 0.99);
      },
    );
    const document = await (await projection.collection<{ last: string }>('order')).get('order-latency-0');
    if (!document) throw new Error('the latency projection wrote nothing');
    if (ctx.wants('projection.latency.p50'))
      ctx.record('projection.latency.p50', 'ms', median(measured), median(baseline));
    if (ctx.wants('projection.latency.p99'))
      ctx.record('projection.latency.p99', 'ms', percentile(measured, 0.99), percentile(baseline, 0.99), rounds);
  } finally {
    await projection.stop();
    await writer.close();
    await rawLoop.stop();
    await listener.end();
    await worker.end();
    await rawWriter.end();
  }
}

/** The raw side of the latency figure: woken by a notification, reads new events by keyset, upserts, moves its checkpoint. */
function rawProjector(client: pg.Client, raw: string) {
  let checkpoint = 0n;
  let running: Promise<void> | null = null;
  let again = false;
  const waiters = new Set<{ position: bigint; resolve: () => void }>();
  const select = {
    name: 'raw-select',
    text: `SELECT position, stream_id, type, data FROM "${raw}".events WHERE position > $1 ORDER BY position LIMIT ${BATCH}`,
  };
  const upsert = {
    name: 'raw-upsert',
    text: `INSERT INTO "${raw}".orders_latency AS d (id, data, version) VALUES ($1, $2::jsonb, $3) ON CONFLICT (id) DO UPDATE SET data = excluded.data, version = excluded.version, updated_at = now() WHERE d.version < excluded.version`,
  };
  const save = { name: 'raw-checkpoint', text: `UPDATE "${raw}".checkpoints SET position = $1 WHERE name = 'latency'` };
  const catchUp = async () => {
    do {
      again = false;
      for (;;) {
        const { rows } = await client.query<{ position: string; stream_id: string; type: string; data: Order }>({
          ...select,
          values: [checkpoint.toString()],
        });
        if (rows.length === 0) break;
        await client.query('BEGIN');
        for (const row of rows)
          await client.query({
            ...upsert,
            values: [row.stream_id, JSON.stringify(summary(row.type, row.data)), row.position],
          });
        const last = rows[rows.length - 1]!.position;
        await client.query({ ...save, values: [last] });
        await client.query('COMMIT');
        checkpoint = BigInt(last);
        for (const waiter of [...waiters]) {
          if (waiter.position <= checkpoint) {
            waiters.delete(waiter);
            waiter.resolve();
          }
        }
      }
    } while (again);
  };
  return {
    wake() {
      if (running) {
        again = true;
        return;
      }
      running = catchUp().finally(() => (running = null));
    },
    waitFor(position: bigint): Promise<void> {
      if (position <= checkpoint) return Promise.resolve();
      return new Promise((resolve) => waiters.add({ position, resolve }));
    },
    stop: async () => void (await running),
  };
}

/** A sample's quantile: the value below which `q` of the samples are (nearest rank). */
function percentile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
