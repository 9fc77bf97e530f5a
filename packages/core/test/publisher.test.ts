// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  consumeEvents,
  createInMemoryInbox,
  createInMemoryStore,
  createInMemorySubscriptionStore,
  createInProcessBroker,
  createPublisher,
  newId,
  replayToTransport,
  type Transport,
} from '@eventline/core';
import { encodeStoredEvent } from '@eventline/core/backend';
import { createTestClock, until } from '@eventline/core/testing';

const deposit = (i: number) => ({ id: newId(), type: 'Deposited', data: { i } });

describe('publisher and replay (in-memory store, in-process broker)', () => {
  it('forwards committed events in order, moving its checkpoint only after the broker confirms', async () => {
    const store = createInMemoryStore();
    const broker = createInProcessBroker();
    const real = broker.connect();
    let failing = 2;
    const flaky: Transport = {
      ...real,
      name: 'flaky',
      publish: async (messages) => {
        if (failing-- > 0) throw new Error('broker unavailable');
        await real.publish(messages);
      },
      consume: (o) => real.consume(o),
      close: () => real.close(),
    };
    const publisher = createPublisher({
      name: 'bus',
      store,
      subscriptions: createInMemorySubscriptionStore(store),
      transport: flaky,
      pollIntervalMs: 10,
      retry: { maxAttempts: 10, baseDelayMs: 1, maxDelayMs: 5 },
    });
    for (let i = 0; i < 10; i++) await store.append(`account-${i % 3}`, [deposit(i)]);
    const effects: number[] = [];
    const consumer = await consumeEvents(broker.connect(), {
      group: 'statements',
      inbox: createInMemoryInbox(),
      handle: async (event) => void effects.push((event.data as { i: number }).i),
    });
    publisher.start();
    await until(() => effects.length === 10, 'all events on the bus');
    assert.deepEqual(effects, [...Array(10).keys()], 'in log order, each once');
    assert.equal((await publisher.status()).lag.events, 0);
    assert.deepEqual(await publisher.parked(), []);
    await publisher.stop();
    await consumer.stop();
  });

  it('a broker away for longer than any retry schedule holds the publisher back: nothing parked, nothing skipped, order kept', async () => {
    const clock = createTestClock();
    const store = createInMemoryStore({ clock });
    const broker = createInProcessBroker();
    const real = broker.connect();
    let down = true;
    let refused = 0;
    const restarting: Transport = {
      ...real,
      name: 'restarting',
      publish: async (messages) => {
        if (down) {
          refused++;
          throw new Error('broker restarting');
        }
        await real.publish(messages);
      },
      consume: (o) => real.consume(o),
      close: () => real.close(),
    };
    const publisher = createPublisher({
      name: 'bus',
      store,
      subscriptions: createInMemorySubscriptionStore(store, { clock }),
      transport: restarting,
      clock,
    });
    for (let i = 0; i < 10; i++) await store.append(`account-${i % 3}`, [deposit(i)]);
    const effects: number[] = [];
    const consumer = await consumeEvents(broker.connect(), {
      group: 'statements',
      inbox: createInMemoryInbox(),
      handle: async (event) => void effects.push((event.data as { i: number }).i),
    });
    publisher.start();
    // An hour of the default backoff (up to 5 s between tries): far more refusals than any finite retry count.
    const start = clock.now();
    while (clock.now() - start < 3_600_000) {
      await clock.untilSleeping(1);
      await clock.advance(5_000);
    }
    assert.ok(refused >= 700, `${refused} refused publishes`);
    assert.deepEqual(effects, []);
    down = false;
    await clock.untilSleeping(1);
    await clock.advance(5_000);
    await until(() => effects.length === 10, 'all events on the bus once the broker is back');
    assert.deepEqual(effects, [...Array(10).keys()], 'in log order, none skipped');
    assert.deepEqual(await publisher.parked(), []);
    assert.equal((await publisher.status()).state, 'running');
    await publisher.stop();
    await consumer.stop();
  });

  it('replay republishes history marked as replay; a wiped consumer rebuilds, one that kept its inbox ignores it', async () => {
    const store = createInMemoryStore();
    const broker = createInProcessBroker();
    const transport = broker.connect();
    for (let i = 0; i < 6; i++) await store.append(i % 2 ? 'payment-1' : 'account-1', [deposit(i)]);
    const inbox = createInMemoryInbox();
    const seen: Array<{ i: number; replay: boolean }> = [];
    const kept = await consumeEvents(broker.connect(), {
      group: 'kept',
      inbox,
      handle: async (event, { replay }) => void seen.push({ i: (event.data as { i: number }).i, replay }),
    });
    const progress: number[] = [];
    const first = await replayToTransport({ store, transport, filter: { categories: ['account'] } });
    assert.equal(first.published, 3);
    await until(() => seen.length === 3, 'the first replay');
    assert.ok(seen.every((s) => s.replay));
    // At 2 events a second, a batch of one each half second, on the clock.
    const clock = createTestClock();
    const replaying = replayToTransport({
      store,
      transport,
      filter: { categories: ['account'] },
      ratePerSecond: 2,
      onProgress: (p) => progress.push(p.published),
      clock,
    });
    for (const published of [1, 2, 3]) {
      await clock.untilSleeping(1);
      assert.deepEqual(progress, [1, 2, 3].slice(0, published));
      await clock.advance(499);
      assert.equal(progress.length, published, 'not before its time');
      await clock.advance(1);
    }
    const again = await replaying;
    assert.equal(again.published, 3);
    const rebuilt: number[] = [];
    const wiped = await consumeEvents(broker.connect(), {
      group: 'wiped',
      inbox: createInMemoryInbox(),
      handle: async (event) => void rebuilt.push((event.data as { i: number }).i),
    });
    await until(() => rebuilt.length === 3, 'a consumer that lost its data rebuilds from the replays');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(rebuilt, [0, 2, 4], 'each event once, in order, though it was replayed twice');
    assert.equal(seen.length, 3, 'a consumer that kept its inbox has no second effect');
    assert.equal(progress.at(-1), 3);
    await kept.stop();
    await wiped.stop();
  });
});

describe('encodeStoredEvent', () => {
  it('writes recordedAt as toISOString does, for times in the same second, in other seconds, and before 1970', () => {
    const times = [
      1764000000000, 1764000000001, 1764000000009, 1764000000010, 1764000000099, 1764000000100, 1764000000999,
      1764000001000, 1764000000500, 1764000001000, 0, 1, 999, -1, -999, -1000, -1001, 946684799999, 946684800000,
      253402300799999, -62198755200000,
    ];
    for (const ms of times) {
      const recordedAt = new Date(ms);
      const message = encodeStoredEvent({
        id: newId(),
        streamId: 'order-1',
        type: 'OrderPlaced',
        version: '1',
        position: '0000000000000001/0000000000000001',
        recordedAt,
        dataJson: '{}',
        metadataJson: '{}',
      });
      assert.equal(
        (JSON.parse(message.body) as { recordedAt: string }).recordedAt,
        recordedAt.toISOString(),
        String(ms),
      );
    }
    const invalid = {
      id: newId(),
      streamId: 'order-1',
      type: 'OrderPlaced',
      version: '1',
      position: '0000000000000001/0000000000000001',
      dataJson: '{}',
      metadataJson: '{}',
    };
    assert.throws(() => encodeStoredEvent({ ...invalid, recordedAt: new Date(Number.NaN) }), RangeError);
  });
});
