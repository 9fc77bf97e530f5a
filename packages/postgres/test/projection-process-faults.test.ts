/**
 * An async projection into PostgreSQL documents running in child processes that are killed with SIGKILL:
 * - crash test: killed 20 times at random moments while 100k events are appended; after the last restart catches up,
 *   the read model equals a rebuild from zero and no event was applied twice;
 * - lease test: two instances of one projection: only one processes at a time; the active one is killed and the other
 *   takes over within the lease's time to live, from the checkpoint, every event handled exactly once.
 * The children run test/fixtures/projection-worker.ts; every event they apply writes a row in `<schema>.applied` in
 * the projection's transaction (instance, event, position, clock time) besides its tally document.
 */
// tier: faults
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { Position } from '@eventline/core';
import type { SqlEventStore } from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import { between, FixtureProcess } from './child-process.js';
import type { Tally } from './fixtures/projection-worker.js';

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const WORKER = fileURLToPath(new URL('./fixtures/projection-worker.ts', import.meta.url));
const SUBSCRIPTION = 'projection-faults-v1';
const TALLY_TABLE = 'rm_faults_v1_tally';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let dbs: TestDatabases;
before(async () => {
  dbs = await openTestDatabases();
});
after(async () => {
  await dbs?.close();
});

/** A projection worker process: its stdout lines (`ready`, then `active` once it applies events) and its exit. */
class Worker extends FixtureProcess {
  constructor(
    readonly instance: string,
    schema: string,
    ttlMs: number,
    batchSize: number,
  ) {
    super(WORKER, {
      EVENTLINE_FAULTS_URL: DATABASE_URL,
      EVENTLINE_FAULTS_SCHEMA: schema,
      EVENTLINE_FAULTS_INSTANCE: instance,
      EVENTLINE_FAULTS_TTL_MS: String(ttlMs),
      EVENTLINE_FAULTS_BATCH: String(batchSize),
    });
  }

  /** Resolves true once `line` was printed, false when the process exits first or `ms` pass. */
  async line(line: string, ms: number): Promise<boolean> {
    return (await this.waitForLine((printed) => printed === line, ms)) !== undefined;
  }

  describe(): string {
    return `worker ${this.instance} (exit ${this.process.exitCode ?? this.process.signalCode ?? 'running'}): ${this.stderr || '(no stderr)'}`;
  }
}

/** A new store schema (migrated) with the `applied` table the workers write to. */
async function prepare(): Promise<SqlEventStore> {
  const store = dbs.postgres({ poolSize: 8 });
  await store.migrate();
  await store.sql.query(`CREATE TABLE "${store.schema}".applied (
    seq bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    stream_id text NOT NULL,
    version integer NOT NULL,
    position text COLLATE "C" NOT NULL,
    instance text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
  )`);
  return store;
}

async function checkpoint(store: SqlEventStore): Promise<Position | null> {
  const [row] = await store.sql.query<{ position: string }>(
    `SELECT position FROM "${store.schema}".checkpoints WHERE name = $1`,
    [SUBSCRIPTION],
  );
  return (row?.position as Position | undefined) ?? null;
}

/** Waits until the projection's stored checkpoint reaches the head of the log. */
async function caughtUp(store: SqlEventStore, worker: Worker, ms: number): Promise<void> {
  const head = await store.headPosition();
  const deadline = Date.now() + ms;
  for (;;) {
    const at = await checkpoint(store);
    if (at !== null && at >= head) return;
    if (!worker.alive) assert.fail(`the worker died before catching up: ${worker.describe()}`);
    if (Date.now() > deadline)
      assert.fail(
        `the projection did not reach the head ${head} within ${ms} ms (checkpoint ${at}); ${worker.describe()}`,
      );
    await sleep(50);
  }
}

/** Every event applied once: no duplicate, none missing. */
async function assertAppliedOnce(store: SqlEventStore, total: number): Promise<void> {
  const s = `"${store.schema}"`;
  const duplicates = await store.sql.query<{ event_id: string; times: number; instances: string }>(
    `SELECT event_id, count(*)::int AS times, string_agg(instance, ',') AS instances FROM ${s}.applied GROUP BY event_id HAVING count(*) > 1 LIMIT 5`,
  );
  assert.deepEqual(duplicates, [], 'events applied more than once');
  const [counts] = await store.sql.query<{ rows: number; distinct: number }>(
    `SELECT count(*)::int AS rows, count(DISTINCT event_id)::int AS distinct FROM ${s}.applied`,
  );
  assert.equal(counts?.rows, total, 'applications');
  assert.equal(counts?.distinct, total, 'distinct events applied');
}

function deposits(count: number) {
  return Array.from({ length: count }, (_, i) => ({ type: 'Deposited', data: { amount: i + 1 } }));
}

describe('an async projection process killed with SIGKILL (PostgreSQL)', () => {
  it('crash test: killed 20 times while 100k events are appended, its read model equals a rebuild from zero and no event is applied twice', async (t) => {
    const started = Date.now();
    const TOTAL = 100_000;
    const KILLS = 20;
    const STREAMS = 200;
    const APPENDERS = 4;
    const store = await prepare();
    const workers: Worker[] = [];
    const lastVersion = new Map<string, number>();
    let remaining = TOTAL;
    let appendsDone = false;
    let appendFailure: unknown = null;
    const appenders = Array.from({ length: APPENDERS }, async (_, appender) => {
      const own = Array.from({ length: STREAMS / APPENDERS }, (_, i) => `acct-${i * APPENDERS + appender}`);
      while (remaining > 0) {
        const count = Math.min(remaining, between(100, 500));
        remaining -= count;
        const stream = own[between(0, own.length - 1)]!;
        const result = await store.append(stream, deposits(count));
        lastVersion.set(stream, result.version);
        await sleep(between(150, 400));
      }
    });
    const appending = Promise.all(appenders).then(
      () => void (appendsDone = true),
      (error: unknown) => {
        appendFailure = error;
        appendsDone = true;
      },
    );
    try {
      let killedWhileApplying = 0;
      for (let kill = 1; kill <= KILLS; kill++) {
        const worker = new Worker(`crash-${kill}`, store.schema, 1000, 250);
        workers.push(worker);
        // Killed while it applies events when there are any (it may first wait for the lease of the one killed before).
        let applying = false;
        while (!(applying = await worker.line('active', 250))) {
          if (!worker.alive) assert.fail(`worker exited on its own: ${worker.describe()}`);
          if (appendsDone && (await worker.line('ready', 1))) break;
        }
        await sleep(between(150, 600));
        if (applying) killedWhileApplying++;
        assert.ok(worker.alive, `worker exited on its own: ${worker.describe()}`);
        await worker.kill();
      }
      const killsDone = Date.now();
      const last = new Worker('final', store.schema, 1000, 250);
      workers.push(last);
      await appending;
      if (appendFailure) throw appendFailure;
      const appendsEnded = Date.now();
      await caughtUp(store, last, 120_000);
      t.diagnostic(
        `${KILLS} kills (${killedWhileApplying} while applying events) in ${((killsDone - started) / 1000).toFixed(1)} s; appends ended at ${((appendsEnded - started) / 1000).toFixed(1)} s; caught up at ${((Date.now() - started) / 1000).toFixed(1)} s`,
      );
      assert.ok(
        killedWhileApplying >= KILLS / 2,
        `only ${killedWhileApplying} of ${KILLS} kills hit a worker applying events`,
      );

      await assertAppliedOnce(store, TOTAL);
      // The read model against a rebuild from zero: the log folded here into the same shape.
      const rebuilt = new Map<string, Tally>();
      for await (const event of store.readAll()) {
        const current = rebuilt.get(event.streamId);
        rebuilt.set(event.streamId, {
          count: (current?.count ?? 0) + 1,
          sum: (current?.sum ?? 0) + event.version,
          last: event.version,
          gaps: (current?.gaps ?? 0) + (event.version === (current?.last ?? 0) + 1 ? 0 : 1),
        });
      }
      const rows = await store.sql.query<{ id: string; data: Tally }>(
        `SELECT id, data FROM "${store.schema}"."${TALLY_TABLE}" ORDER BY id`,
      );
      const model = new Map(rows.map((row) => [row.id, row.data]));
      const sorted = (map: Map<string, Tally>) => [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      assert.deepEqual(sorted(model), sorted(rebuilt), 'the read model equals a rebuild from zero');
      // And against what was appended: every stream counted once per event.
      assert.equal(model.size, lastVersion.size);
      for (const [stream, version] of lastVersion) {
        assert.deepEqual(
          model.get(stream),
          { count: version, sum: (version * (version + 1)) / 2, last: version, gaps: 0 },
          stream,
        );
      }
    } finally {
      remaining = 0;
      await Promise.all(workers.map((worker) => worker.kill()));
      await appending;
    }
  });

  it('lease test: two instances, one processes at a time; the active one is killed and the other takes over within the lease time, from the checkpoint', async (t) => {
    const TTL = 2000;
    const SLACK = 1500;
    const store = await prepare();
    const s = `"${store.schema}"`;
    let appending = true;
    const appender = (async () => {
      for (let round = 0; appending; round++) {
        await store.append(`lease-${round % 20}`, deposits(between(20, 80)));
        await sleep(20);
      }
    })();
    const workers = [new Worker('a', store.schema, TTL, 50), new Worker('b', store.schema, TTL, 50)];
    try {
      for (const worker of workers)
        assert.ok(await worker.line('ready', 20_000), `worker did not start: ${worker.describe()}`);
      const deadline = Date.now() + 20_000;
      while (!workers.some((worker) => worker.lines.includes('active'))) {
        if (Date.now() > deadline)
          assert.fail(`no worker applied an event: ${workers.map((w) => w.describe()).join('; ')}`);
        await sleep(20);
      }
      // Both run for a while: a single instance applies everything.
      await sleep(3000);
      const active = workers.find((worker) => worker.lines.includes('active'))!;
      const standby = workers.find((worker) => worker !== active)!;
      const before = await store.sql.query<{ instance: string; events: number }>(
        `SELECT instance, count(*)::int AS events FROM ${s}.applied GROUP BY instance`,
      );
      assert.equal(before.length, 1, `one instance applies events while both run: ${JSON.stringify(before)}`);
      assert.equal(before[0]!.instance, active.instance);
      assert.ok(!standby.lines.includes('active'), 'the standby applied nothing');

      // The lease as the active instance last renewed it: nobody may take over before it expires.
      const [lease] = await store.sql.query<{ expires_at: Date }>(
        `SELECT expires_at FROM ${s}.leases WHERE name = $1`,
        [SUBSCRIPTION],
      );
      assert.ok(lease, 'the active instance holds a lease');
      const [{ now: killedAt } = { now: new Date() }] = await store.sql.query<{ now: Date }>(
        'SELECT clock_timestamp() AS now',
      );
      await active.kill();
      let takenOverAt: Date | null = null;
      const waitUntil = Date.now() + TTL + SLACK + 5000;
      while (!takenOverAt) {
        const [row] = await store.sql.query<{ at: Date }>(
          `SELECT min(at) AS at FROM ${s}.applied WHERE instance = $1`,
          [standby.instance],
        );
        if (row?.at) takenOverAt = row.at;
        else if (Date.now() > waitUntil) assert.fail(`the standby did not take over: ${standby.describe()}`);
        else await sleep(20);
      }
      const takeoverMs = takenOverAt.getTime() - killedAt.getTime();
      t.diagnostic(`takeover ${takeoverMs} ms after the kill (lease ${TTL} ms)`);
      assert.ok(
        takeoverMs <= TTL + SLACK,
        `took over ${takeoverMs} ms after the kill; the lease is ${TTL} ms (+${SLACK} ms slack)`,
      );
      assert.ok(
        takenOverAt.getTime() >= lease.expires_at.getTime(),
        `took over at ${takenOverAt.toISOString()}, before the lease expired at ${lease.expires_at.toISOString()}`,
      );

      // Let it run on with the writes, then stop the writes and let it catch up.
      await sleep(1000);
      appending = false;
      await appender;
      await caughtUp(store, standby, 30_000);
      let total = 0;
      for await (const event of store.readAll()) if (event.type === 'Deposited') total++;
      await assertAppliedOnce(store, total);
      // The killed instance applied events up to its last commit; the other went on from the next event, never overlapping.
      const spans = await store.sql.query<{ instance: string; first: string; last: string; from: Date; to: Date }>(
        `SELECT instance, min(position) AS first, max(position) AS last, min(at) AS from, max(at) AS to FROM ${s}.applied GROUP BY instance`,
      );
      const killed = spans.find((span) => span.instance === active.instance)!;
      const survivor = spans.find((span) => span.instance === standby.instance)!;
      const [next] = await store.readAllPage({ after: killed.last as Position, limit: 1 }).then((page) => page.events);
      assert.equal(
        survivor.first,
        next?.position,
        'the survivor started at the event after the last one the killed instance committed',
      );
      assert.ok(killed.to.getTime() < survivor.from.getTime(), 'the instances never applied events at the same time');
      const [switches] = await store.sql.query<{ switches: number }>(
        `SELECT count(*)::int AS switches FROM (SELECT instance, lag(instance) OVER (ORDER BY position) AS previous FROM ${s}.applied) changes WHERE instance <> previous`,
      );
      assert.equal(switches?.switches, 1, 'in log order, the events were applied by one instance, then by the other');
    } finally {
      appending = false;
      await Promise.all(workers.map((worker) => worker.kill()));
      await appender.catch(() => undefined);
    }
  });
});
