/**
 * The event bus (issue 5), per transport (NATS JetStream, RabbitMQ, Redis Streams):
 * - `bus.<t>.publish`: events/s forwarded from the PostgreSQL store by the publisher (read the log, encode, publish
 *   with the broker's confirms, move the checkpoint), beside the raw client (nats / amqplib / ioredis) publishing the
 *   same messages, already encoded, in batches of the same size, each batch confirmed before the next.
 * - `bus.<t>.latency.p50` / `.p99`: ms from `store.append` to the consumer's handler, through the publisher woken by
 *   NOTIFY; baseline: the same consumer's latency for a message published straight to the transport (no store).
 * Every round publishes into a namespace of its own (a fresh JetStream stream, RabbitMQ stream, Redis stream), so the
 * brokers' de-duplication never drops a message; everything is deleted at the end.
 */
import { jetstreamManager, jetstream } from '@nats-io/jetstream';
import { connect as natsConnect, headers as natsHeaders, nanos } from '@nats-io/transport-node';
import { createNatsTransport, safeName } from '@eventline/nats';
import { createPostgresStore, createSqlSubscriptionStore, type PostgresEventStore } from '@eventline/postgres';
import { createRabbitMqTransport, deleteRabbitMqTopology, type RabbitMqTransport } from '@eventline/rabbitmq';
import { createRedisTransport } from '@eventline/redis';
import amqp from 'amqplib';
import { createPublisher, newId, type Transport, type TransportMessage } from '@eventline/core';
import { decodeEvent, encodeEvent } from '@eventline/core/backend';
import { Redis } from 'ioredis';
import pg from 'pg';
import { orderEvent } from './events.js';
import { DATABASE_URL, interleave, median, uniqueName, type BenchContext, type BenchModule } from './harness.js';

const EVENTS = 20_000;
const STREAMS = 400;
const BATCH = 500;
const ROUNDS = 5;
const LATENCY_EVENTS = 200;
const LATENCY_GAP_MS = 5;

const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** The raw client of a broker, publishing already encoded messages with the transport's confirm semantics. */
interface RawPublisher {
  publish(messages: readonly TransportMessage[]): Promise<void>;
  close(): Promise<void>;
}

interface Broker {
  readonly name: 'nats' | 'rabbitmq' | 'redis';
  transport(prefix: string): Promise<Transport>;
  /** A raw client publishing into the namespace `prefix` (its stream created before the timing starts). */
  raw(prefix: string): Promise<RawPublisher>;
  /** Deletes what the namespaces used on the broker. */
  cleanup(prefixes: readonly string[]): Promise<void>;
}

const nats: Broker = {
  name: 'nats',
  transport: (prefix) => createNatsTransport({ servers: NATS_URL, prefix, onError: () => undefined }),
  async raw(prefix) {
    const nc = await natsConnect({ servers: NATS_URL, name: 'eventline-bench-raw', noAsyncTraces: true }); // as the transport connects
    const stream = safeName(prefix);
    await (
      await jetstreamManager(nc)
    ).streams.add({ name: stream, subjects: [`${prefix}.>`], duplicate_window: nanos(120_000) });
    const js = jetstream(nc);
    return {
      async publish(messages) {
        await Promise.all(
          messages.map((message) => {
            const hdrs = natsHeaders();
            for (const [key, value] of Object.entries(message.headers)) hdrs.set(key, value);
            return js.publish(`${prefix}.${message.subject}`, message.body, {
              msgID: message.id,
              headers: hdrs,
              expect: { streamName: stream },
            });
          }),
        );
      },
      close: () => nc.close(),
    };
  },
  async cleanup(prefixes) {
    const nc = await natsConnect({ servers: NATS_URL, name: 'eventline-bench-cleanup' });
    const jsm = await jetstreamManager(nc);
    for (const prefix of prefixes) await jsm.streams.delete(safeName(prefix)).catch(() => undefined);
    await nc.close();
  },
};

const rabbitTransports = new Map<string, RabbitMqTransport>();
const rabbitmq: Broker = {
  name: 'rabbitmq',
  async transport(prefix) {
    const transport = createRabbitMqTransport({ url: AMQP_URL, prefix, onError: () => undefined });
    rabbitTransports.set(`${prefix}:${newId()}`, transport);
    return transport;
  },
  async raw(prefix) {
    // The namespace (exchange, stream bound with '#') declared by the transport itself, so both sides publish into the same topology.
    const declaring = await rabbitmq.transport(prefix);
    await declaring.publish([]);
    const exchange = (declaring as RabbitMqTransport).exchange;
    const connection = await amqp.connect(AMQP_URL);
    const channel = await connection.createConfirmChannel();
    return {
      async publish(messages) {
        for (const message of messages) {
          const writable = channel.publish(exchange, message.subject, Buffer.from(message.body, 'utf8'), {
            persistent: true,
            mandatory: true,
            messageId: message.id,
            contentType: 'application/json',
            timestamp: Math.floor(Date.now() / 1000),
            headers: { ...message.headers, 'x-eventline-stream': message.streamId },
          });
          if (!writable) await new Promise((resolve) => channel.once('drain', resolve));
        }
        await channel.waitForConfirms();
      },
      async close() {
        await channel.close().catch(() => undefined);
        await connection.close().catch(() => undefined);
      },
    };
  },
  async cleanup(prefixes) {
    const transports: RabbitMqTransport[] = [];
    for (const [key, transport] of rabbitTransports) {
      if (!prefixes.some((prefix) => key.startsWith(`${prefix}:`))) continue;
      transports.push(transport);
      rabbitTransports.delete(key);
    }
    await deleteRabbitMqTopology(transports, AMQP_URL);
  },
};

const redis: Broker = {
  name: 'redis',
  transport: async (prefix) => createRedisTransport({ url: REDIS_URL, prefix }),
  async raw(prefix) {
    const client = new Redis(REDIS_URL);
    const key = `${prefix}:events`;
    return {
      async publish(messages) {
        const pipeline = client.pipeline();
        for (const m of messages)
          pipeline.xadd(
            key,
            '*',
            'id',
            m.id,
            'subject',
            m.subject,
            'streamId',
            m.streamId,
            'body',
            m.body,
            'headers',
            JSON.stringify(m.headers),
          );
        const results = await pipeline.exec();
        const failed = results?.find(([error]) => error);
        if (failed) throw failed[0];
      },
      async close() {
        client.disconnect();
      },
    };
  },
  async cleanup(prefixes) {
    const client = new Redis(REDIS_URL);
    for (const prefix of prefixes) {
      let cursor = '0';
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await client.unlink(...keys);
      } while (cursor !== '0');
    }
    client.disconnect();
  },
};

const BROKERS = [nats, rabbitmq, redis] as const;
const figuresOf = (b: Broker) => [`bus.${b.name}.publish`, `bus.${b.name}.latency.p50`, `bus.${b.name}.latency.p99`];

export const busBench: BenchModule = {
  area: 'event bus: publisher and transports (PostgreSQL store; NATS JetStream, RabbitMQ, Redis Streams)',
  figures: BROKERS.flatMap(figuresOf),
  async run(ctx) {
    const brokers = BROKERS.filter((b) => figuresOf(b).some((name) => ctx.wants(name)));
    const schema = uniqueName('bench_bus');
    const store = createPostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 6 });
    const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
    try {
      await store.migrate();
      let messages: TransportMessage[] = [];
      if (brokers.some((b) => ctx.wants(`bus.${b.name}.publish`))) {
        ctx.log(`  seeding ${EVENTS} events on ${STREAMS} streams`);
        for (let n = 0; n < EVENTS; n += 50) {
          await store.append(
            `order-${(n / 50) % STREAMS}`,
            Array.from({ length: 50 }, (_, i) => orderEvent(n + i)),
          );
        }
        for await (const event of store.readAll()) messages.push(encodeEvent(event));
      }
      for (const broker of brokers) {
        const prefixes: string[] = [];
        const fresh = () => {
          const prefix = `elbench${broker.name}${newId().replace(/-/g, '').slice(-10)}`;
          prefixes.push(prefix);
          return prefix;
        };
        try {
          if (ctx.wants(`bus.${broker.name}.publish`)) await publishFigure(ctx, broker, store, messages, fresh);
          if (ctx.wants(`bus.${broker.name}.latency.p50`) || ctx.wants(`bus.${broker.name}.latency.p99`))
            await latencyFigures(ctx, broker, store, fresh);
        } finally {
          await broker
            .cleanup(prefixes)
            .catch((error: unknown) => ctx.log(`  cleanup of ${broker.name} failed: ${String(error)}`));
        }
      }
      messages = [];
    } finally {
      await store.close();
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    }
  },
};

async function publishFigure(
  ctx: BenchContext,
  broker: Broker,
  store: PostgresEventStore,
  messages: readonly TransportMessage[],
  fresh: () => string,
): Promise<void> {
  const subscriptions = createSqlSubscriptionStore(store);
  const head = await store.headPosition();
  const rounds = await interleave(
    ROUNDS,
    async (round) => {
      const transport = await broker.transport(fresh());
      const publisher = createPublisher({
        name: `bench-${broker.name}-${round}-${newId().slice(-8)}`,
        store,
        subscriptions,
        transport,
        batchSize: BATCH,
        pollIntervalMs: 50,
      });
      const start = performance.now();
      publisher.start();
      await publisher.waitFor(head, { timeoutMs: 120_000 });
      const elapsed = performance.now() - start;
      await publisher.stop();
      await transport.close();
      return EVENTS / (elapsed / 1000);
    },
    async () => {
      const raw = await broker.raw(fresh());
      const start = performance.now();
      for (let i = 0; i < messages.length; i += BATCH) await raw.publish(messages.slice(i, i + BATCH));
      const elapsed = performance.now() - start;
      await raw.close();
      return messages.length / (elapsed / 1000);
    },
  );
  ctx.record(`bus.${broker.name}.publish`, 'events/s', rounds.value, rounds.baseline, rounds);
}

async function latencyFigures(
  ctx: BenchContext,
  broker: Broker,
  store: PostgresEventStore,
  fresh: () => string,
): Promise<void> {
  const prefix = fresh();
  const transport = await broker.transport(prefix);
  const direct = await broker.transport(prefix);
  const subscriptions = createSqlSubscriptionStore(store);
  const publisher = createPublisher({
    name: `bench-latency-${broker.name}-${newId().slice(-8)}`,
    store,
    subscriptions,
    transport,
    from: 'end',
    batchSize: BATCH,
  });
  const viaStore: number[] = [];
  const straight: number[] = [];
  const now = () => performance.timeOrigin + performance.now();
  const consumer = await transport.consume({
    group: 'latency',
    from: 'new',
    handler: async (message) => {
      const event = decodeEvent(message);
      const data = event.data as { sentAt: number; direct: boolean };
      (data.direct ? straight : viaStore).push(now() - data.sentAt);
    },
  });
  try {
    publisher.start();
    await publisher.waitFor(await store.headPosition(), { timeoutMs: 10_000 });
    const warmup = 20;
    for (let i = 0; i < LATENCY_EVENTS + warmup; i++) {
      // Alternate: an event appended to the store (through the publisher), then a message published straight.
      await store.append(`latency-${i % 10}`, [
        { id: newId(), type: 'Pinged', data: { sentAt: now(), direct: false } },
      ]);
      await sleep(LATENCY_GAP_MS);
      const sentAt = now();
      const id = newId();
      const streamId = `direct-${i % 10}`;
      const body = JSON.stringify({
        id,
        streamId,
        type: 'Pinged',
        version: i + 1,
        position: '',
        recordedAt: new Date().toISOString(),
        data: { sentAt, direct: true },
        metadata: {},
      });
      await direct.publish([{ id, subject: 'direct.Pinged', streamId, body, headers: {} }]);
      await sleep(LATENCY_GAP_MS);
    }
    const deadline = Date.now() + 30_000;
    while (
      (viaStore.length < LATENCY_EVENTS + warmup || straight.length < LATENCY_EVENTS + warmup) &&
      Date.now() < deadline
    )
      await sleep(20);
    if (viaStore.length < LATENCY_EVENTS + warmup)
      throw new Error(`only ${viaStore.length} of ${LATENCY_EVENTS + warmup} events reached the consumer`);
  } finally {
    await consumer.stop();
    await publisher.stop();
    await transport.close();
    await direct.close();
  }
  const measured = viaStore.slice(20);
  const baseline = straight.slice(20);
  const p = (values: number[], q: number) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  };
  if (ctx.wants(`bus.${broker.name}.latency.p50`))
    ctx.record(`bus.${broker.name}.latency.p50`, 'ms', median(measured), median(baseline));
  if (ctx.wants(`bus.${broker.name}.latency.p99`))
    ctx.record(`bus.${broker.name}.latency.p99`, 'ms', p(measured, 0.99), p(baseline, 0.99));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
