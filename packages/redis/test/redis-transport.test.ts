// tier: integration
// Every test that talks to Redis lives in this one file: the test runner runs files in parallel, and the last test
// restarts the machine's Redis, which must not cut another file's tests short.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  TransportClosedError,
  TransportConfigurationError,
  TransportError,
  TransportUnavailableError,
  type ReceivedMessage,
} from '@eventline/core';
import { createTestClock, describeTransportConformance } from '@eventline/core/testing';
import { Redis } from 'ioredis';
import { createRedisTransport, type RedisTransport } from '../src/index.js';
import { packStrings } from '../src/pack.js';
import { run, SCRIPTS } from '../src/scripts.js';
import { deleteKeys, messages, namespace, REDIS_URL, requireRedis, restartRedis, sleep, until } from './helpers.js';

const CLAIM_IDLE_MS = 1000;

describe('Redis is reachable', () => {
  it(`answers PING at ${REDIS_URL}`, async () => requireRedis());
});

describeTransportConformance({
  name: 'Redis Streams',
  connect: async (prefix) => {
    await requireRedis(); // fails within seconds when Redis is away, instead of after the client's reconnect attempts
    return createRedisTransport({ url: REDIS_URL, prefix, claimIdleMs: CLAIM_IDLE_MS });
  },
  crash: async (transport) => (transport as RedisTransport).destroy(),
  cleanup: (prefix) => deleteKeys(prefix),
  redeliveryTimeoutMs: 5 * CLAIM_IDLE_MS,
});

describe('Redis Streams transport', () => {
  const prefixes: string[] = [];
  const transports: RedisTransport[] = [];
  let redis: Redis;

  const open = (prefix: string, options: Parameters<typeof createRedisTransport>[0] = {}) => {
    const transport = createRedisTransport({ url: REDIS_URL, prefix, claimIdleMs: CLAIM_IDLE_MS, ...options });
    transports.push(transport);
    return transport;
  };
  const fresh = () => {
    const prefix = namespace();
    prefixes.push(prefix);
    return prefix;
  };
  /** The message ids in the transport's stream under `prefix`, in stream order. */
  const storedIds = async (prefix: string) =>
    (await redis.xrange(`${prefix}:events`, '-', '+')).map(([, fields]) => fields[fields.indexOf('id') + 1]);

  before(async () => {
    await requireRedis();
    redis = new Redis(REDIS_URL);
    redis.on('error', () => undefined);
  });
  after(async () => {
    for (const transport of transports) await transport.close().catch(() => undefined);
    for (const prefix of prefixes) await deleteKeys(prefix).catch(() => undefined);
    redis?.disconnect();
  });

  it('stores a message id published twice once, in one batch or in two', { timeout: 20_000 }, async () => {
    const prefix = fresh();
    const transport = open(prefix);
    const [first, second] = messages(['account-1'], 2);
    await transport.publish([first!, first!]);
    await transport.publish([first!, second!]);
    await transport.publish([second!]);
    assert.deepEqual(await storedIds(prefix), [first!.id, second!.id]);
    const entries = await redis.xrange(`${prefix}:events`, '-', '+');
    const [, fields] = entries[0]!;
    const record = Object.fromEntries(
      Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]]),
    );
    assert.deepEqual(record, {
      id: first!.id,
      subject: 'account.Happened',
      streamId: 'account-1',
      body: first!.body,
      headers: JSON.stringify(first!.headers),
    });
    // The ids are remembered in the hash of the current hour-long bucket, which expires two windows after it began.
    const [bucket] = await redis.keys(`${prefix}:dedupe:*`);
    assert.ok(bucket, 'a de-duplication bucket exists');
    assert.deepEqual((await redis.hkeys(bucket)).sort(), [first!.id, second!.id].sort());
    const ttl = await redis.pttl(bucket);
    assert.ok(
      ttl > 3_600_000 && ttl <= 7_200_000,
      `the de-duplication bucket expires between one and two windows from now (pttl ${ttl})`,
    );
  });

  it(
    'a batch of several script calls keeps its order: a call whose predecessor did not complete adds nothing',
    { timeout: 20_000 },
    async () => {
      const prefix = fresh();
      const transport = open(prefix);
      const batch = messages(['account-1', 'account-2'], 350); // four calls of at most 100 messages
      await transport.publish(batch);
      assert.deepEqual(
        await storedIds(prefix),
        batch.map((m) => m.id),
      );
      assert.deepEqual(await redis.keys(`${prefix}:chain:*`), [], 'the chain key is gone after the last call');
      // The second call of a chain whose first call never ran: refused, nothing added.
      const [late] = messages(['account-1'], 1);
      const fields = [late!.id, late!.subject, late!.streamId, late!.body, JSON.stringify(late!.headers)];
      const added = await run(
        redis,
        SCRIPTS.publish,
        [`${prefix}:events`, `${prefix}:chain:lost`],
        [`${prefix}:dedupe:`, 60_000, '', 1, 1, packStrings(fields)],
      );
      assert.equal(added, -1);
      assert.equal(await redis.xlen(`${prefix}:events`), batch.length);
    },
  );

  it(
    'a publish that Redis refuses remembers none of the ids it did not add: published again, every message is stored',
    { timeout: 20_000 },
    async () => {
      const prefix = fresh();
      const transport = open(prefix);
      const batch = messages(['account-1', 'account-2'], 150); // two script calls
      // The stream's key holds a string: every XADD is refused (WRONGTYPE).
      await redis.set(`${prefix}:events`, 'not a stream');
      await assert.rejects(transport.publish(batch), (error: unknown) => {
        assert.ok(error instanceof TransportError && !(error instanceof TransportUnavailableError), String(error));
        assert.equal(error.code, 'TRANSPORT_FAILED');
        assert.equal(error.transport, 'redis');
        assert.equal(error.operation, 'publish');
        assert.match(error.message, /WRONGTYPE/);
        return true;
      });
      assert.deepEqual(await redis.keys(`${prefix}:dedupe:*`), [], 'no id is remembered as published');
      await redis.del(`${prefix}:events`);
      await transport.publish(batch);
      assert.deepEqual(
        await storedIds(prefix),
        batch.map((m) => m.id),
      );
    },
  );

  it('drops an id published again within the window, also across a bucket boundary', { timeout: 20_000 }, async () => {
    const prefix = fresh();
    const transport = open(prefix, { dedupeWindowMs: 200 });
    // Ids published 40 ms apart and each again 150 ms later: some of the pairs straddle a 200 ms bucket boundary.
    const batch = messages(['account-1'], 6);
    await Promise.all(
      batch.map(async (message, i) => {
        await sleep(i * 40);
        await transport.publish([message]);
        await sleep(150);
        await transport.publish([message]);
      }),
    );
    assert.equal(await redis.xlen(`${prefix}:events`), 6);
  });

  it('forgets a published id after the de-duplication window', { timeout: 20_000 }, async () => {
    const prefix = fresh();
    const transport = open(prefix, { dedupeWindowMs: 50 });
    const [message] = messages(['account-1'], 1);
    await transport.publish([message!]);
    await sleep(120);
    await transport.publish([message!]);
    assert.equal(await redis.xlen(`${prefix}:events`), 2);
  });

  it('trims the stream to about maxLength', { timeout: 20_000 }, async () => {
    const prefix = fresh();
    const transport = open(prefix, { maxLength: 100 });
    for (let i = 0; i < 5; i++) await transport.publish(messages(['account-1'], 200));
    const length = await redis.xlen(`${prefix}:events`);
    assert.ok(length >= 100 && length < 1000, `about 100 entries kept, got ${length}`);
  });

  it(
    "from: 'new' starts after what the stream holds; the default starts at the oldest",
    { timeout: 20_000 },
    async () => {
      const prefix = fresh();
      const transport = open(prefix);
      const [old, later] = [messages(['account-1'], 3), messages(['account-2'], 3)];
      await transport.publish(old);
      const fromNew: string[] = [];
      const fromOldest: string[] = [];
      const a = await transport.consume({ group: 'new', from: 'new', handler: async (m) => void fromNew.push(m.id) });
      const b = await transport.consume({ group: 'oldest', handler: async (m) => void fromOldest.push(m.id) });
      await transport.publish(later);
      await until(() => fromNew.length >= 3 && fromOldest.length >= 6, 'both groups', 10_000);
      await sleep(100);
      await Promise.all([a.stop(), b.stop()]);
      assert.deepEqual(
        fromNew,
        later.map((m) => m.id),
      );
      assert.deepEqual(
        fromOldest,
        [...old, ...later].map((m) => m.id),
      );
    },
  );

  it(
    'a failing message holds back only its own stream, until retryDelayMs of the clock',
    { timeout: 20_000 },
    async () => {
      const prefix = fresh();
      const clock = createTestClock();
      // Entries stay idle (in Redis's time) while the test clock stands still: a claimIdleMs long enough that no reclaim
      // takes them back meanwhile, and short blocking waits so that the consumer sees the clock move at once.
      const transport = open(prefix, { clock, claimIdleMs: 60_000, blockMs: 100 });
      const batch = messages(['account-1', 'account-2'], 5);
      const poison = batch[0]!; // account-1, version 1
      let healed = false;
      const seen: ReceivedMessage[] = [];
      const c = await transport.consume({
        group: 'g',
        retryDelayMs: 30_000,
        handler: async (m) => {
          if (m.id === poison.id && !healed) throw new Error('not yet');
          seen.push(m);
        },
      });
      await transport.publish(batch);
      await until(() => seen.filter((m) => m.streamId === 'account-2').length === 5, 'the other stream', 10_000);
      await clock.advance(29_999);
      await sleep(300); // the consumer's loop turns a few times (its blocking waits are Redis's, 100 ms)
      assert.equal(seen.filter((m) => m.streamId === 'account-1').length, 0, 'account-1 waits for its first message');
      healed = true;
      await clock.advance(1);
      await until(() => seen.length === 10, 'account-1 after the retry', 10_000);
      await c.stop();
      const account1 = seen.filter((m) => m.streamId === 'account-1');
      assert.deepEqual(
        account1.map((m) => m.id),
        batch.filter((m) => m.streamId === 'account-1').map((m) => m.id),
      );
      assert.ok(account1[0]!.deliveryCount >= 2);
      assert.ok(
        account1.slice(1).every((m) => m.deliveryCount === 1),
        'the messages that waited were delivered once',
      );
    },
  );

  it(
    'stop() returns promptly while waiting, and finishes and acknowledges the message in progress',
    { timeout: 20_000 },
    async () => {
      const prefix = fresh();
      const transport = open(prefix, { blockMs: 10_000 });
      const idle = await transport.consume({ group: 'idle', handler: async () => undefined });
      await sleep(200);
      let started = Date.now();
      await idle.stop();
      assert.ok(Date.now() - started < 1000, `stop while idle took ${Date.now() - started} ms`);

      const [message] = messages(['account-1'], 1);
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      let finished = false;
      const busy = await transport.consume({
        group: 'busy',
        handler: async () => {
          entered();
          await sleep(300);
          finished = true;
        },
      });
      await transport.publish([message!]);
      await inHandler;
      started = Date.now();
      await busy.stop();
      assert.ok(finished, 'the handler finished before stop() resolved');
      assert.ok(Date.now() - started < 2000);
      const [count] = (await redis.xpending(`${prefix}:events`, 'busy')) as [number];
      assert.equal(count, 0, 'and its message was acknowledged');
      const consumers = (await redis.xinfo('CONSUMERS', `${prefix}:events`, 'busy')) as unknown[];
      assert.equal(consumers.length, 0, 'the stopped consumer left the group');
    },
  );

  it(
    'hands the messages a stopped member held to another member without waiting for claimIdleMs',
    { timeout: 20_000 },
    async () => {
      const prefix = fresh();
      const one = open(prefix, { claimIdleMs: 3000 });
      const two = open(prefix, { claimIdleMs: 3000 });
      const batch = messages(['account-1'], 6);
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const byOne: string[] = [];
      const first = await one.consume({
        group: 'g',
        handler: async (m) => {
          byOne.push(m.id);
          await gate;
        },
      });
      await one.publish(batch);
      await until(() => byOne.length === 1, 'the first message in progress', 5000);
      const stopping = first.stop(); // holds the other five (read in the same batch), waiting behind the first
      release();
      await stopping;
      const byTwo: string[] = [];
      const counts: number[] = [];
      const started = Date.now();
      const second = await two.consume({
        group: 'g',
        handler: async (m) => void (byTwo.push(m.id), counts.push(m.deliveryCount)),
      });
      await until(() => byTwo.length === 5, 'the released messages', 10_000);
      await second.stop();
      assert.ok(Date.now() - started < 2500, `taken over in ${Date.now() - started} ms, before claimIdleMs`);
      assert.deepEqual(
        [...byOne, ...byTwo],
        batch.map((m) => m.id),
      );
      assert.deepEqual(
        counts,
        [1, 1, 1, 1, 1],
        'what the stopped member never handed to its handler counts as a first delivery',
      );
    },
  );

  it(
    'keeps each stream in order and one at a time with three members, failing handlers and a member killed mid-way',
    { timeout: 60_000 },
    async () => {
      const prefix = fresh();
      const [a, b, doomed] = [open(prefix), open(prefix), open(prefix)];
      const batch = messages(
        Array.from({ length: 10 }, (_, i) => `account-${i}`),
        20,
      );
      const busy = new Set<string>();
      const succeeded = new Map<string, number>(); // message id → times its handler succeeded
      const versions = new Map<string, number[]>(); // stream → versions in the order they succeeded
      const problems: string[] = [];
      let hungStream: string | undefined;
      const handler = (mayHang: boolean) => async (m: ReceivedMessage) => {
        if (busy.has(m.streamId)) problems.push(`${m.streamId} handled twice at once`);
        busy.add(m.streamId);
        try {
          await sleep(Math.random() * 3);
          if (mayHang && hungStream === undefined) {
            hungStream = m.streamId;
            await new Promise(() => undefined); // never settles: its member is killed with it in hand
          }
          if (Math.random() < 0.1) throw new Error('transient');
          succeeded.set(m.id, (succeeded.get(m.id) ?? 0) + 1);
          const list = versions.get(m.streamId) ?? [];
          list.push(Number(m.headers['eventline-version']));
          versions.set(m.streamId, list);
        } finally {
          busy.delete(m.streamId);
        }
      };
      await doomed.consume({ group: 'g', retryDelayMs: 20, handler: handler(true) });
      await a.publish(batch.slice(0, 100));
      await until(() => hungStream !== undefined, 'a message in the hands of the member to kill', 10_000);
      const consumers = [
        await a.consume({ group: 'g', retryDelayMs: 20, handler: handler(false) }),
        await b.consume({ group: 'g', retryDelayMs: 20, handler: handler(false) }),
      ];
      await sleep(100);
      doomed.destroy();
      busy.delete(hungStream!); // its handler is as good as dead
      await a.publish(batch.slice(100));
      await until(() => succeeded.size === batch.length, 'every message handled', 40_000);
      await sleep(200);
      await Promise.all(consumers.map((c) => c.stop()));
      assert.deepEqual(problems, []);
      assert.ok(
        [...succeeded.values()].every((times) => times === 1),
        'each message succeeded once',
      );
      for (const [stream, list] of versions)
        assert.deepEqual(
          list,
          Array.from({ length: 20 }, (_, i) => i + 1),
          `${stream} in order`,
        );
    },
  );

  it(
    'a member waiting for the next entry of a stream is woken when the other member acknowledges',
    { timeout: 30_000 },
    async () => {
      const prefix = fresh();
      // No polling to speak of: only the wake-ups can hand a stream from one member to the other in time.
      const [a, b] = [open(prefix, { pollMs: 60_000, batchSize: 2 }), open(prefix, { pollMs: 60_000, batchSize: 2 })];
      const batch = messages(['account-1'], 30);
      const handled: Array<{ id: string; by: string }> = [];
      const consumers = [
        await a.consume({
          group: 'g',
          handler: async (m) => void (await sleep(2), handled.push({ id: m.id, by: 'a' })),
        }),
        await b.consume({
          group: 'g',
          handler: async (m) => void (await sleep(2), handled.push({ id: m.id, by: 'b' })),
        }),
      ];
      await a.publish(batch);
      await until(() => handled.length === batch.length, 'every message', 10_000);
      await Promise.all(consumers.map((c) => c.stop()));
      assert.deepEqual(
        handled.map((h) => h.id),
        batch.map((m) => m.id),
      );
      assert.equal(new Set(handled.map((h) => h.by)).size, 2, 'the stream went from one member to the other');
    },
  );

  it('errors are typed: bad options, a closed transport', { timeout: 20_000 }, async () => {
    const configuration = (error: unknown) => {
      assert.ok(error instanceof TransportConfigurationError, String(error));
      assert.equal(error.transport, 'redis');
      assert.match(error.message, /claimIdleMs must be a positive number/);
      return true;
    };
    assert.throws(() => createRedisTransport({ url: REDIS_URL, claimIdleMs: 0 }), configuration);
    const transport = open(fresh());
    await transport.close();
    for (const attempt of [
      transport.publish(messages(['account-1'], 1)),
      transport.consume({ group: 'g', handler: async () => undefined }),
    ])
      await assert.rejects(attempt, (error: unknown) => {
        assert.ok(error instanceof TransportClosedError, String(error));
        assert.equal(error.code, 'TRANSPORT_CLOSED');
        return true;
      });
  });

  it('does not close a client it was given', { timeout: 20_000 }, async () => {
    const prefix = fresh();
    const client = new Redis(REDIS_URL);
    client.on('error', () => undefined);
    try {
      const transport = createRedisTransport({ client, prefix });
      const received: string[] = [];
      const c = await transport.consume({ group: 'g', handler: async (m) => void received.push(m.id) });
      await transport.publish(messages(['account-1'], 2));
      await until(() => received.length === 2, 'two messages', 10_000);
      await c.stop();
      await transport.close();
      assert.equal(await client.ping(), 'PONG');
    } finally {
      client.disconnect();
    }
  });

  it('a consumer keeps working after Redis is restarted', { timeout: 90_000 }, async () => {
    const { hostname, port } = new URL(REDIS_URL);
    assert.ok(
      hostname === '127.0.0.1' && (port || '6379') === '6379',
      `this test restarts the machine's Redis at 127.0.0.1:6379; REDIS_URL is ${REDIS_URL}`,
    );
    const prefix = fresh();
    const publisher = open(prefix);
    const consumer = open(prefix);
    const received: ReceivedMessage[] = [];
    const c = await consumer.consume({ group: 'g', handler: async (m) => void received.push(m) });
    const before = messages(['account-1', 'account-2'], 3);
    await publisher.publish(before);
    await until(() => received.length === before.length, 'the messages before the restart', 10_000);

    const other = createRedisTransport({ url: REDIS_URL, prefix, claimIdleMs: CLAIM_IDLE_MS });
    const otherConsumer = await other.consume({ group: 'other', handler: async () => undefined });
    await restartRedis(async () => {
      // While Redis is down the consumer keeps trying. Stopping and closing another one does not wait for Redis
      // for ever (the client would keep the commands for its reconnection attempts).
      await sleep(300);
      const started = Date.now();
      await otherConsumer.stop();
      await other.close();
      assert.ok(Date.now() - started < 8000, `stop and close while Redis is down took ${Date.now() - started} ms`);
    });

    const afterRestart = messages(['account-1', 'account-2'], 3);
    await publisher.publish(afterRestart);
    await until(
      () => received.length === before.length + afterRestart.length,
      'the messages after the restart',
      30_000,
    );
    await c.stop();
    assert.deepEqual(
      received.map((m) => m.id),
      [...before, ...afterRestart].map((m) => m.id),
    );
    assert.ok(received.every((m) => m.deliveryCount === 1));
    // The group was created again on the fresh server, and what the consumer handled is acknowledged there.
    const [pending] = (await redis.xpending(`${prefix}:events`, 'g')) as [number];
    assert.equal(pending, 0);
  });
});
