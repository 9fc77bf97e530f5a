/**
 * Process managers (sagas) and their timers on PostgreSQL:
 * - `process.throughput`: inputs/s of a process manager (createProcessManager on the SQL subscription and process
 *   stores, a command bus with defaultMiddleware) catching up over 5,000 pre-appended order events on 1,000 streams,
 *   each event one command whose handler appends one event, until every command is handled; baseline: the same
 *   subscription (createSubscription) whose handler dispatches the same command through the same bus itself.
 * - `timers.fire.lag.p99`: ms from a timer's due time to its input being handled, 10,000 timers of 100 instances due
 *   over one second, the manager on the system clock; baseline: a raw node-postgres loop doing the same per timer.
 */
import {
  createPostgresStore,
  createSqlProcessStore,
  createSqlSubscriptionStore,
  type PostgresEventStore,
} from '@eventline/postgres';
import {
  commandHooks,
  createCommandBus,
  createProcessManager,
  createSubscription,
  defaultMiddleware,
  defineCommand,
  defineProcess,
  processCommandId,
  type CommandResult,
  type EventStoreSession,
  type StandardSchemaV1,
  type TimerRecord,
} from '@eventline/core';
import pg from 'pg';
import { orderEvents } from './events.js';
import { DATABASE_URL, interleave, median, uniqueName, type BenchContext, type BenchModule } from './harness.js';

const EVENTS = 5_000;
const STREAMS = 1_000;
const ROUNDS = 3;
const TIMER_INSTANCES = 100;
const TIMERS_PER_INSTANCE = 100;
const TIMERS = TIMER_INSTANCES * TIMERS_PER_INSTANCE;
/** The timers' due times spread over this many ms, starting this long after they are set. */
const TIMER_SPREAD_MS = 1000;
const TIMER_LEAD_MS = 500;
/** The manager's default timer poll; the raw loop polls as often. */
const TIMER_POLL_MS = 100;
/** The manager's batch of due timers (DUE_TIMERS_BATCH in packages/core/src/process/manager.ts). */
const TIMER_BATCH = 500;

/** A schema-free command definition (validation is not what this figure measures). */
const anything: StandardSchemaV1<{ orderId: string; n: number }> = {
  '~standard': {
    version: 1,
    vendor: 'bench',
    validate: (value) => ({ value: value as { orderId: string; n: number } }),
  },
};
const ReserveStock = defineCommand('ReserveStock', anything);

export const processBench: BenchModule = {
  area: 'process managers on PostgreSQL',
  figures: ['process.throughput', 'timers.fire.lag.p99'],
  async run(ctx) {
    const schema = uniqueName('bench_process');
    const raw = uniqueName('bench_process_raw');
    const store = createPostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 4 });
    const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
    try {
      await store.migrate();
      await admin.query(`CREATE SCHEMA "${raw}"`);
      if (ctx.wants('process.throughput')) await throughput(ctx, store, schema);
      if (ctx.wants('timers.fire.lag.p99')) await timerLag(ctx, store, raw);
    } finally {
      await store.close();
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.query(`DROP SCHEMA IF EXISTS "${raw}" CASCADE`);
      await admin.end();
    }
  },
};

/** The bus both sides send through: default middleware, one handler appending one event, a count of handled commands. */
function commandBus(store: PostgresEventStore) {
  const counter = { handled: 0, onHandled: () => undefined as void };
  const bus = createCommandBus({
    middleware: [
      commandHooks({
        onSuccess: () => {
          counter.handled++;
          counter.onHandled();
        },
      }),
      ...defaultMiddleware(store),
    ],
  });
  bus.register(ReserveStock, async (command, context: { session?: EventStoreSession }): Promise<CommandResult> => {
    const streamId = `stock-${command.data.orderId}`;
    const result = await (context.session ?? store).append(streamId, [
      { type: 'StockReserved', data: { orderId: command.data.orderId, n: command.data.n } },
    ]);
    return { streamId, version: result.version, position: result.position, events: [] };
  });
  /** Resolves when `count` more commands have been handled (committed). */
  const handledAll = (count: number) => {
    const target = counter.handled + count;
    return new Promise<void>((resolve, reject) => {
      const timeout = setTimeout(
        () => reject(new Error(`${target - counter.handled} commands never handled`)),
        300_000,
      );
      counter.onHandled = () => {
        if (counter.handled < target) return;
        clearTimeout(timeout);
        counter.onHandled = () => undefined;
        resolve();
      };
    });
  };
  return { bus, handledAll };
}

const commandFor = (data: unknown, n: number) =>
  ReserveStock.create({ orderId: (data as { orderId: string }).orderId, n });

async function throughput(ctx: BenchContext, store: PostgresEventStore, schema: string): Promise<void> {
  ctx.log(`  appending ${EVENTS} events on ${STREAMS} streams`);
  const perStream = EVENTS / STREAMS;
  for (let i = 0; i < STREAMS; i++) await store.append(`order-${i}`, orderEvents(perStream, i * perStream));
  await store.sql.query(`VACUUM ANALYZE "${schema}".events`);
  const { bus, handledAll } = commandBus(store);
  const subscriptions = createSqlSubscriptionStore(store);
  const processes = createSqlProcessStore(store);
  const rounds = await interleave(
    ROUNDS,
    async (round) => {
      const name = `orders-r${round + 1}`;
      const manager = createProcessManager({
        process: defineProcess({
          name,
          startedBy: ['OrderPlaced'],
          handles: ['OrderLineAdded'],
          correlate: (event) => event.streamId,
          initialState: () => ({ inputs: 0 }),
          evolve: (state) => ({ inputs: state.inputs + 1 }),
          decide: (input, state) =>
            input.kind === 'event' ? { commands: [commandFor(input.event.data, state.inputs)] } : {},
        }),
        store,
        subscriptions,
        processes,
        bus,
      });
      const done = handledAll(EVENTS);
      const started = performance.now();
      manager.start();
      await done;
      const elapsed = performance.now() - started;
      await manager.stop();
      const left = await manager.commands();
      if (left.length > 1) throw new Error(`${left.length} commands left in the outbox`);
      return EVENTS / (elapsed / 1000);
    },
    async (round) => {
      const name = `orders-baseline-r${round + 1}`;
      const inputs = new Map<string, number>();
      const subscription = createSubscription({
        name,
        store,
        subscriptions,
        filter: { types: ['OrderPlaced', 'OrderLineAdded'] },
        handle: async (event) => {
          const n = (inputs.get(event.streamId) ?? 0) + 1;
          inputs.set(event.streamId, n);
          const command = commandFor(event.data, n);
          const id = processCommandId(name, event.streamId, `event:${event.id}`, 0);
          const correlationId = event.metadata.correlationId as string;
          await bus.dispatch({
            ...command,
            id,
            metadata: { correlationId, causationId: event.id, idempotencyKey: id },
          });
        },
      });
      const done = handledAll(EVENTS);
      const started = performance.now();
      subscription.start();
      await done;
      const elapsed = performance.now() - started;
      await subscription.stop();
      return EVENTS / (elapsed / 1000);
    },
  );
  ctx.record('process.throughput', 'inputs/s', rounds.value, rounds.baseline, rounds);
}

async function timerLag(ctx: BenchContext, store: PostgresEventStore, raw: string): Promise<void> {
  const r = `"${raw}"`;
  // The raw side's tables: the process tables' columns and keys (migration 7), its own copy.
  await store.sql.query(
    `CREATE TABLE ${r}.instances (instance text COLLATE "C" PRIMARY KEY, state jsonb NOT NULL, inputs bigint NOT NULL, updated_at timestamptz NOT NULL)`,
  );
  await store.sql.query(
    `CREATE TABLE ${r}.timers (instance text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, name text NOT NULL, due_at timestamptz NOT NULL, data jsonb NOT NULL, PRIMARY KEY (instance, id))`,
  );
  await store.sql.query(`CREATE INDEX ON ${r}.timers (due_at)`);
  const subscriptions = createSqlSubscriptionStore(store);
  const processes = createSqlProcessStore(store);
  const { bus } = commandBus(store);
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  const lagsOf = { value: [] as number[], baseline: [] as number[] };
  /** Timer i of instance k is due at `base + (i * TIMER_INSTANCES + k) / 10` ms: all 10,000 within one second. */
  const dueOf = (base: number, k: number, i: number) => base + ((i * TIMER_INSTANCES + k) * TIMER_SPREAD_MS) / TIMERS;
  try {
    const rounds = await interleave(
      ROUNDS,
      async (round) => {
        const name = `timers-r${round + 2}`;
        const prefix = `timer-r${round + 2}-`;
        const fired = new Map<string, number>();
        let onFired = (): void => undefined;
        const manager = createProcessManager({
          process: defineProcess({
            name,
            startedBy: ['TimersRequested'],
            correlate: (event) => (event.streamId.startsWith(prefix) ? event.streamId : null),
            initialState: () => ({ fired: 0 }),
            evolve: (state, input) => (input.kind === 'timer' ? { fired: state.fired + 1 } : state),
            decide: (input) => {
              if (input.kind === 'timer') {
                fired.set(`${input.data as string}`, Date.now() - input.dueAt.getTime());
                onFired();
              }
              return {};
            },
          }),
          store,
          subscriptions,
          processes,
          bus,
        });
        manager.start();
        for (let k = 0; k < TIMER_INSTANCES; k++)
          await store.append(`${prefix}${k}`, [{ type: 'TimersRequested', data: { k } }]);
        await manager.subscription.waitFor(await store.headPosition(), { timeoutMs: 60_000 });
        // The timers, set through the process store in one transaction.
        const base = Date.now() + TIMER_LEAD_MS;
        const timers: TimerRecord[] = [];
        for (let k = 0; k < TIMER_INSTANCES; k++)
          for (let i = 0; i < TIMERS_PER_INSTANCE; i++)
            timers.push({
              process: name,
              instance: `${prefix}${k}`,
              id: `t${i}`,
              name: 'expire',
              dueAt: new Date(dueOf(base, k, i)),
              data: `${k}.${i}`,
            });
        const setStarted = performance.now();
        await processes.transaction((tx) => processes.setTimers(tx, timers));
        if (performance.now() - setStarted > TIMER_LEAD_MS * 0.8)
          ctx.log(`    setting the timers took ${Math.round(performance.now() - setStarted)} ms`);
        await new Promise<void>((resolve) => {
          onFired = () => fired.size >= TIMERS && resolve();
        });
        await manager.stop();
        const instance = await manager.instance(`${prefix}0`);
        if ((instance?.state as { fired: number }).fired !== TIMERS_PER_INSTANCE)
          throw new Error(`instance 0 took ${JSON.stringify(instance?.state)} timers`);
        const lags = [...fired.values()];
        if (round >= 0) lagsOf.value.push(...lags);
        return percentile(lags, 0.99);
      },
      async (round) => {
        const lags: number[] = [];
        await client.query(`TRUNCATE ${r}.instances, ${r}.timers`);
        await client.query(
          `INSERT INTO ${r}.instances SELECT 'timer-' || k, '{"fired":0}', 1, now() FROM generate_series(0, ${TIMER_INSTANCES - 1}) k`,
        );
        const base = Date.now() + TIMER_LEAD_MS;
        const rows: { instance: string; id: string; due: Date; data: string }[] = [];
        for (let k = 0; k < TIMER_INSTANCES; k++)
          for (let i = 0; i < TIMERS_PER_INSTANCE; i++)
            rows.push({ instance: `timer-${k}`, id: `t${i}`, due: new Date(dueOf(base, k, i)), data: `${k}.${i}` });
        await client.query(
          `INSERT INTO ${r}.timers SELECT i, id, 'expire', due, to_jsonb(d) FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS t(i, id, due, d)`,
          [rows.map((x) => x.instance), rows.map((x) => x.id), rows.map((x) => x.due), rows.map((x) => x.data)],
        );
        const take = {
          name: 'raw-take',
          text: `DELETE FROM ${r}.timers WHERE (instance, id) IN (SELECT instance, id FROM ${r}.timers WHERE due_at <= $1 ORDER BY due_at LIMIT ${TIMER_BATCH} FOR UPDATE SKIP LOCKED) RETURNING instance, id, due_at, data`,
        };
        // One UPDATE per batch for the instances it names, each counting its timers (the state written once).
        const save = {
          name: 'raw-save',
          text: `UPDATE ${r}.instances i SET state = jsonb_set(i.state, '{fired}', to_jsonb((i.state->>'fired')::int + f.n)), inputs = i.inputs + f.n, updated_at = now() FROM (SELECT instance, count(*)::int AS n FROM unnest($1::text[]) AS u(instance) GROUP BY instance) f WHERE i.instance = f.instance COLLATE "C"`,
        };
        while (lags.length < TIMERS) {
          await client.query('BEGIN');
          const { rows: due } = await client.query<{ instance: string; id: string; due_at: Date; data: string }>({
            ...take,
            values: [new Date()],
          });
          const now = Date.now();
          for (const row of due) lags.push(now - row.due_at.getTime());
          if (due.length > 0) await client.query({ ...save, values: [due.map((row) => row.instance)] });
          await client.query('COMMIT');
          if (due.length === 0) await new Promise((resolve) => setTimeout(resolve, TIMER_POLL_MS));
        }
        const { rows: check } = await client.query<{ fired: number }>(
          `SELECT (state->>'fired')::int AS fired FROM ${r}.instances WHERE instance = 'timer-0'`,
        );
        if (check[0]?.fired !== TIMERS_PER_INSTANCE) throw new Error(`raw instance 0: ${JSON.stringify(check)}`);
        if (round >= 0) lagsOf.baseline.push(...lags);
        return percentile(lags, 0.99);
      },
    );
    ctx.record('timers.fire.lag.p99', 'ms', percentile(lagsOf.value, 0.99), percentile(lagsOf.baseline, 0.99), rounds);
    ctx.log(
      `    p50 ${median(lagsOf.value).toFixed(1)} ms vs ${median(lagsOf.baseline).toFixed(1)} ms; max ${Math.max(...lagsOf.value)} vs ${Math.max(...lagsOf.baseline)}`,
    );
  } finally {
    await client.end();
  }
}

/** A sample's quantile: the value below which `q` of the samples are (nearest rank). */
function percentile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
