/**
 * The publisher fault test, shared by the NATS, RabbitMQ and Redis packages: a publisher in a child process on a
 * PostgreSQL store is killed with SIGKILL at random moments (and started again) while events are appended to many
 * streams, the broker is restarted once mid-stream, and a consumer with the SQL inbox (in the same transaction as its
 * effect) must end with every event applied exactly once, in order per stream. See README.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  createSqlInbox,
  createSqlSubscriptionStore,
  createPostgresStore,
  quoteSchema,
  type PostgresEventStore,
  type SqlClient,
} from '@eventline/postgres';
import { openTestDatabases } from '@eventline/postgres/testing';
import pg from 'pg';
import {
  createPublisher,
  replayToTransport,
  START,
  type Consumer,
  type Position,
  type ReceivedMessage,
  type Transport,
} from '@eventline/core';
import { decodeEvent } from '@eventline/core/backend';

const PUBLISHER = 'faults';
const GROUP = 'fault-consumer';
const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';

// ---- the child ------------------------------------------------------------------------------------------------------

/**
 * The publisher process: forwards the store named by `EVENTLINE_SCHEMA` (on `DATABASE_URL`) to the transport made by
 * `makeTransport(BUS_PREFIX)` until it is killed, or stopped with SIGTERM (stop, close, exit 0). It prints `ready`
 * once the publisher runs. The lease has a fixed owner: a restarted publisher is the same deployment and takes its
 * lease back at once instead of waiting for it to expire.
 */
export async function runPublisherChild(
  makeTransport: (prefix: string) => Transport | Promise<Transport>,
): Promise<void> {
  const env = process.env;
  const store = createPostgresStore({
    connectionString: env.DATABASE_URL ?? DEFAULT_DATABASE_URL,
    schema: required('EVENTLINE_SCHEMA'),
    poolSize: 3,
  });
  const transport = await makeTransport(required('BUS_PREFIX'));
  const publisher = createPublisher({
    name: PUBLISHER,
    store,
    subscriptions: createSqlSubscriptionStore(store),
    transport,
    batchSize: Number(env.BUS_PUBLISH_BATCH ?? 500),
    pollIntervalMs: 250,
    lease: { owner: 'fault-test-publisher', ttlMs: 5_000 },
    retry: { baseDelayMs: 50, maxDelayMs: 500 },
    onError: (error) => process.stderr.write(`publisher: ${error instanceof Error ? error.message : String(error)}\n`),
  });
  publisher.start();
  process.stdout.write('ready\n');
  process.once('SIGTERM', () => {
    void (async () => {
      await publisher.stop();
      await transport.close();
      await store.close();
      process.exit(0);
    })();
  });
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (the fault test sets it)`);
  return value;
}

// ---- the test -------------------------------------------------------------------------------------------------------

export interface PublisherFaultOptions {
  /** For the figures: `nats`, `rabbitmq`, `redis`. */
  readonly broker: string;
  /** The broker package's child script (it calls {@link runPublisherChild}); run with `node --conditions=source --import tsx`. */
  readonly childScript: string;
  /** The broker namespace (prefix) of this run, shared by the child's and the consumers' transports. */
  readonly prefix: string;
  /** A transport for one consumer member in this process. */
  readonly consumerTransport: () => Transport | Promise<Transport>;
  /** Stops the broker and starts it again, and must start it again whatever happens. */
  readonly restartBroker: () => Promise<void>;
  /**
   * The broker loses confirmed messages on restart (Redis without persistence): events seen out of order after the
   * restart are dropped by the consumer, and the harness replays from the consumer's low-water position until
   * everything is applied. Without it, any out-of-order event fails the test.
   */
  readonly lossyRestart?: boolean;
  readonly events?: number;
  readonly streams?: number;
  readonly kills?: number;
  /** How long the appends are spread over (the kills fall in this window). */
  readonly appendMs?: number;
  readonly writers?: number;
  readonly appendBatch?: number;
  readonly publishBatch?: number;
  readonly members?: number;
  /**
   * Bound on the whole run (default 270 s, inside the fault tests' 300 s). It is a guard, not a speed check: on a
   * slow machine the consumer's round trips decide the drain's length (140 s here on a day when a round trip to
   * PostgreSQL took 360 µs), and the figures report it.
   */
  readonly timeoutMs?: number;
  /** The drain fails sooner when no event has been delivered or applied for this long (default 60 s). */
  readonly stallMs?: number;
  readonly log?: (line: string) => void;
}

export interface PublisherFaultFigures {
  readonly broker: string;
  readonly events: number;
  readonly streams: number;
  readonly kills: number;
  readonly childStarts: number;
  readonly brokerRestartMs: number;
  /** First append to last event applied. */
  readonly wallMs: number;
  /** From the last append to the last event applied. */
  readonly drainMs: number;
  readonly eventsPerSecond: number;
  /** Handler calls in all. */
  readonly deliveries: number;
  /** Deliveries with a broker delivery count above 1. */
  readonly redeliveries: number;
  /** Messages delivered again (republished after a kill, or redelivered) and absorbed by the inbox. */
  readonly duplicatesAbsorbed: number;
  /** Events dropped as out of order (only with `lossyRestart`), later applied from a replay. */
  readonly outOfOrderDropped: number;
  readonly replays: number;
  readonly replayedEvents: number;
}

class OutOfOrder extends Error {
  constructor(
    readonly streamId: string,
    readonly applied: number,
    readonly version: number,
  ) {
    super(`stream ${streamId}: version ${version} after ${applied}`);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const random = (min: number, max: number) => min + Math.random() * (max - min);

/** Runs the fault test; throws (with the figures so far and the child's last output) when a guarantee does not hold. */
export async function runPublisherFaults(options: PublisherFaultOptions): Promise<PublisherFaultFigures> {
  const total = options.events ?? 50_000;
  const streamCount = options.streams ?? 1_000;
  const kills = options.kills ?? 10;
  const appendMs = options.appendMs ?? 25_000;
  const writers = options.writers ?? 8;
  const appendBatch = options.appendBatch ?? 10;
  const members = options.members ?? 4;
  const log = options.log ?? (() => undefined);

  const databases = await openTestDatabases({ timeoutMs: 120_000 });
  // Counted from here: waiting for the server-wide test lock (another test file holding it) is not this run's time.
  const deadline = Date.now() + (options.timeoutMs ?? 270_000);
  const stallMs = options.stallMs ?? 60_000;
  const databaseUrl = process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
  const children = new Set<ChildProcess>();
  // A test cancelled on its timeout ends this process without running the `finally` below: the publisher child must
  // not outlive it (it would keep the database busy for the next test files).
  const killChildren = () => {
    for (const child of children) child.kill('SIGKILL');
  };
  process.once('exit', killChildren);
  const pools: pg.Pool[] = [];
  const closers: Array<() => Promise<void>> = [];
  const consumers: Consumer[] = [];
  const transports: Transport[] = [];
  let stopping = false;
  let started = Date.now();
  let progress: NodeJS.Timeout | undefined;
  let childOutput = '';
  try {
    const store = databases.postgres({ poolSize: members + writers + 2 });
    await store.migrate();
    const s = quoteSchema(store.schema);
    await store.sql.query(
      `CREATE TABLE ${s}.fault_totals (stream_id text PRIMARY KEY, version int NOT NULL, count int NOT NULL, total bigint NOT NULL)`,
    );

    // ---- consumers: inbox + effect in one transaction; the effect moves a stream's total only by version + 1 ----
    // Their own connections commit without waiting for the WAL flush (synchronous_commit off): PostgreSQL is not what
    // this test faults, and a crash of it could only lose the last few commits whole (an inbox row never without its
    // effect). It makes the group-serial consumers (NATS) keep up with the publisher.
    const consumerPool = new pg.Pool({
      connectionString: databaseUrl,
      max: members + 1,
      options: '-c synchronous_commit=off',
      application_name: 'eventline-fault-consumer',
    });
    pools.push(consumerPool);
    const consumerStore = createPostgresStore({ pool: consumerPool, schema: store.schema });
    closers.push(() => consumerStore.close());
    const inbox = createSqlInbox(consumerStore);
    const advance = `UPDATE ${s}.fault_totals SET version = $2, count = count + 1, total = total + $3 WHERE stream_id = $1 AND version = $2 - 1 RETURNING 1`;
    const first = `INSERT INTO ${s}.fault_totals (stream_id, version, count, total) VALUES ($1, 1, 1, $2) ON CONFLICT (stream_id) DO NOTHING RETURNING 1`;
    const counters = {
      deliveries: 0,
      redeliveries: 0,
      absorbed: 0,
      applied: 0,
      outOfOrder: 0,
      duplicateEffects: 0,
      errors: 0,
      lastDelivery: Date.now(),
      lastApplied: 0,
    };
    const problems: string[] = [];
    const handler = async (message: ReceivedMessage) => {
      counters.deliveries++;
      counters.lastDelivery = Date.now();
      if (message.deliveryCount > 1) counters.redeliveries++;
      const event = decodeEvent(message);
      const amount = (event.data as { amount: number }).amount;
      try {
        const fresh = await inbox.process(GROUP, event.id, async (tx: SqlClient) => {
          if ((await tx.query(advance, [event.streamId, event.version, amount])).length === 1) return;
          if (event.version === 1 && (await tx.query(first, [event.streamId, amount])).length === 1) return;
          const [row] = await tx.query<{ version: number }>(
            `SELECT version FROM ${s}.fault_totals WHERE stream_id = $1`,
            [event.streamId],
          );
          throw new OutOfOrder(event.streamId, row ? Number(row.version) : 0, event.version);
        });
        if (fresh) {
          counters.applied++;
          counters.lastApplied = Date.now();
        } else counters.absorbed++;
      } catch (error) {
        if (!(error instanceof OutOfOrder)) {
          counters.errors++;
          if (counters.errors <= 3)
            log(
              `consumer error (the message is redelivered): ${error instanceof Error ? error.message : String(error)}`,
            );
          throw error;
        }
        if (error.version <= error.applied) {
          counters.duplicateEffects++;
          problems.push(`a second effect: ${error.message}`);
        } else {
          counters.outOfOrder++;
          if (!options.lossyRestart && problems.length < 20)
            problems.push(
              `out of order at ${Date.now() - started} ms: ${error.message} (delivery ${message.deliveryCount}, position ${event.position})`,
            );
          if (!options.lossyRestart && counters.outOfOrder <= 5)
            log(`out of order at ${Date.now() - started} ms: ${error.message} (delivery ${message.deliveryCount})`);
        }
        // Acknowledged without effect (rolled back, not in the inbox): with a lossy broker a replay brings it back.
      }
    };
    for (let i = 0; i < members; i++) {
      const transport = await options.consumerTransport();
      transports.push(transport);
      consumers.push(await transport.consume({ group: GROUP, handler, retryDelayMs: 200 }));
    }

    // ---- the publisher child, supervised: started again after a kill, or when it dies by itself ----
    let childStarts = 0;
    let current: ChildProcess | null = null;
    let ready: Promise<void> = Promise.resolve();
    const startChild = () => {
      childStarts++;
      const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', options.childScript], {
        cwd: process.cwd(),
        env: {
          ...process.env,
          EVENTLINE_SCHEMA: store.schema,
          BUS_PREFIX: options.prefix,
          BUS_PUBLISH_BATCH: String(options.publishBatch ?? 500),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.add(child);
      current = child;
      ready = new Promise<void>((resolve) => {
        child.stdout!.on('data', (chunk: Buffer) => {
          if (chunk.toString().includes('ready')) resolve();
        });
        child.once('exit', () => resolve());
      });
      const keep = (chunk: Buffer) => (childOutput = (childOutput + chunk.toString()).slice(-4000));
      child.stderr!.on('data', keep);
      child.once('exit', (code, signal) => {
        children.delete(child);
        if (current === child) current = null;
        if (!stopping && signal !== 'SIGKILL') {
          log(`publisher child ended by itself (code ${code}, signal ${signal}): starting it again`);
          setTimeout(() => !stopping && current === null && startChild(), 300);
        }
      });
    };
    const kill = async () => {
      const child = current;
      if (!child) return false;
      current = null;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      return true;
    };

    // ---- appends: `total` events over `streamCount` streams, from several writers, spread over `appendMs` ----
    const expected = new Map<string, { count: number; total: number }>();
    let appended = 0;
    let lastPosition: Position | null = null;
    started = Date.now();
    const appendAll = async () => {
      let next = 0;
      const writer = async () => {
        while (next < total) {
          const n = Math.min(appendBatch, total - next);
          next += n;
          const due = started + ((next - n) / total) * appendMs;
          if (due > Date.now()) await sleep(due - Date.now());
          const streamId = `account-${Math.floor(Math.random() * streamCount)}`;
          const amounts = Array.from({ length: n }, () => 1 + Math.floor(Math.random() * 100));
          const { position } = await store.append(
            streamId,
            amounts.map((amount) => ({ type: 'Deposited', data: { amount } })),
            { expectedVersion: 'any' },
          );
          if (lastPosition === null || position > lastPosition) lastPosition = position;
          const entry = expected.get(streamId) ?? { count: 0, total: 0 };
          entry.count += n;
          entry.total += amounts.reduce((a, b) => a + b, 0);
          expected.set(streamId, entry);
          appended += n;
        }
      };
      await Promise.all(Array.from({ length: writers }, writer));
    };

    progress = setInterval(
      () => log(`progress at ${Date.now() - started} ms: ${appended} appended, ${JSON.stringify(counters)}`),
      5_000,
    );
    progress.unref();
    startChild();
    await ready;
    const appending = appendAll();

    // ---- faults: `kills` SIGKILLs at random moments over the append window; one broker restart in the middle ----
    let killed = 0;
    let brokerRestartMs = 0;
    const faults = (async () => {
      const gap = appendMs / (kills + 1);
      const restartAt = Math.floor(kills / 2);
      for (let i = 0; i < kills; i++) {
        await sleep(random(0.4, 1.2) * gap);
        await ready; // a moment when the publisher runs (it may be waiting for the broker)
        await sleep(random(50, 400));
        if (await kill()) {
          killed++;
          log(`SIGKILL ${killed} at ${Date.now() - started} ms (${appended} appended, ${counters.applied} applied)`);
          startChild();
        }
        if (i === restartAt) {
          const at = Date.now();
          log(`restarting the broker at ${at - started} ms (${appended} appended, ${counters.applied} applied)`);
          await options.restartBroker();
          brokerRestartMs = Date.now() - at;
          log(`broker back after ${brokerRestartMs} ms`);
        }
      }
    })();
    await Promise.all([appending, faults]);
    const appendsDone = Date.now();
    log(`appends done at ${appendsDone - started} ms (${counters.applied} applied)`);

    // ---- drain; with a lossy broker, replay from the consumer's low-water position until everything is applied ----
    const subscriptions = createSqlSubscriptionStore(store);
    let replays = 0;
    let replayedEvents = 0;
    const replayTransport = options.lossyRestart ? await options.consumerTransport() : null;
    if (replayTransport) transports.push(replayTransport);
    while (counters.applied < total) {
      if (
        !options.lossyRestart &&
        counters.outOfOrder > 0 &&
        counters.applied + counters.outOfOrder >= total &&
        Date.now() - counters.lastDelivery > 5_000
      )
        break;
      if (Date.now() > deadline) throw new Error(`timed out: ${counters.applied} of ${total} events applied`);
      const idle = Date.now() - Math.max(counters.lastDelivery, counters.lastApplied, appendsDone);
      if (idle > stallMs)
        throw new Error(
          `stalled: nothing delivered or applied for ${Math.round(idle / 1000)} s, ${counters.applied} of ${total} events applied`,
        );
      await sleep(200);
      if (!replayTransport) continue;
      // Once the publisher has passed the last event (the store's head moves with any transaction on the server).
      const head = lastPosition!;
      const checkpoint = await subscriptions.checkpoint(`publisher-${PUBLISHER}`);
      const quiet = Date.now() - counters.lastDelivery > 1_000;
      if (checkpoint === null || checkpoint < head || !quiet || counters.applied >= total) continue;
      const after = await lowWater(store, s);
      if (after === null) continue;
      replays++;
      const { published } = await replayToTransport({
        store,
        transport: replayTransport,
        after,
        until: head,
        batchSize: 500,
      });
      replayedEvents += published;
      log(`replay ${replays}: ${published} events after ${after} (${counters.applied} applied)`);
      counters.lastDelivery = Date.now();
    }
    clearInterval(progress);
    const wallMs = (counters.lastApplied || Date.now()) - started;
    await sleep(300); // late redeliveries would show here
    stopping = true;

    // ---- checks ----
    if (problems.length > 0 && counters.applied < total)
      problems.push(`(and ${total - counters.applied} events never applied)`);
    if (problems.length > 0) throw new Error(`guarantees broken:\n${problems.slice(0, 20).join('\n')}`);
    const rows = await store.sql.query<{ stream_id: string; version: number; count: number; total: string }>(
      `SELECT stream_id, version, count, total FROM ${s}.fault_totals`,
    );
    const inboxed = await store.sql.query<{ n: string }>(`SELECT count(*) AS n FROM ${s}.inbox WHERE group_name = $1`, [
      GROUP,
    ]);
    const mismatches: string[] = [];
    if (rows.length !== expected.size)
      mismatches.push(`${rows.length} streams have totals, ${expected.size} were appended to`);
    for (const row of rows) {
      const want = expected.get(row.stream_id);
      if (
        !want ||
        Number(row.count) !== want.count ||
        Number(row.version) !== want.count ||
        Number(row.total) !== want.total
      ) {
        mismatches.push(
          `${row.stream_id}: count ${row.count} version ${row.version} total ${row.total}, expected ${JSON.stringify(want)}`,
        );
      }
    }
    if (Number(inboxed[0]?.n) !== total) mismatches.push(`${inboxed[0]?.n} events in the inbox, expected ${total}`);
    if (killed !== kills) mismatches.push(`${killed} kills, expected ${kills}`);
    if (mismatches.length > 0)
      throw new Error(`the consumer's effect is not every event exactly once:\n${mismatches.slice(0, 20).join('\n')}`);
    return {
      broker: options.broker,
      events: total,
      streams: expected.size,
      kills: killed,
      childStarts,
      brokerRestartMs,
      wallMs,
      drainMs: Math.max(0, started + wallMs - appendsDone),
      eventsPerSecond: Math.round(total / (wallMs / 1000)),
      deliveries: counters.deliveries,
      redeliveries: counters.redeliveries,
      duplicatesAbsorbed: counters.absorbed,
      outOfOrderDropped: counters.outOfOrder,
      replays,
      replayedEvents,
    };
  } catch (error) {
    if (childOutput) log(`publisher child's last output:\n${childOutput}`);
    throw error;
  } finally {
    clearInterval(progress);
    stopping = true;
    killChildren();
    process.off('exit', killChildren);
    await Promise.all(consumers.map((consumer) => consumer.stop().catch(() => undefined)));
    await Promise.all(transports.map((transport) => transport.close().catch(() => undefined)));
    for (const close of closers) await close().catch(() => undefined);
    await Promise.all(pools.map((pool) => pool.end().catch(() => undefined)));
    await databases.close();
  }
}

/** The position just before the first event the consumer has not applied (per-stream versions in `fault_totals`). */
async function lowWater(store: PostgresEventStore, s: string): Promise<Position | null> {
  const rows = await store.sql.query<{ stream_id: string; version: number }>(
    `SELECT stream_id, version FROM ${s}.fault_totals`,
  );
  const applied = new Map(rows.map((row) => [row.stream_id, Number(row.version)]));
  let previous: Position = START;
  for await (const event of store.readAll()) {
    if (event.version > (applied.get(event.streamId) ?? 0)) return previous;
    previous = event.position;
  }
  return null;
}

/** A fresh namespace for a run's broker objects. */
export function faultNamespace(broker: string): string {
  return `faults${broker}${randomBytes(5).toString('hex')}`;
}
