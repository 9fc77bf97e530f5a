// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createInMemoryStore,
  createInMemorySubscriptionStore,
  createSubscription,
  newId,
  ValidationError,
  WaitTimeoutError,
  type Position,
  type RecordedEvent,
  type SubscriptionOptions,
} from '@eventline/core';
import { partitionOf } from '@eventline/core/backend';
import { createTestClock, until, type TestClock } from '@eventline/core/testing';

function setup(clock?: TestClock) {
  const store = createInMemoryStore(clock ? { clock } : {});
  const subscriptions = createInMemorySubscriptionStore(store, clock ? { clock } : {});
  const seen: RecordedEvent[] = [];
  const options = (extra: Partial<SubscriptionOptions<unknown>> = {}): SubscriptionOptions<unknown> => ({
    name: 'test',
    store,
    subscriptions,
    handle: (event) => void seen.push(event),
    pollIntervalMs: 20,
    retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 2 },
    ...(clock ? { clock } : {}),
    ...extra,
  });
  return { store, subscriptions, seen, options };
}

/** Two instances `a` and `b` of one subscription with a 300 ms lease; `handledBy` names who handled each event. */
function leaseHolders(options: ReturnType<typeof setup>['options']) {
  const handledBy: string[] = [];
  const holder = (owner: string) =>
    createSubscription(options({ lease: { owner, ttlMs: 300 }, handle: () => void handledBy.push(owner) }));
  return { a: holder('a'), b: holder('b'), handledBy };
}

/** Settles `work`, moving `clock` on by `stepMs` whenever something sleeps on it. */
async function settleOnClock<T>(clock: TestClock, work: Promise<T>, stepMs: number): Promise<T> {
  let settled = false;
  const result = work.finally(() => (settled = true));
  while (!settled) {
    if (clock.sleepers > 0) await clock.advance(stepMs);
    else await new Promise((resolve) => setImmediate(resolve));
  }
  return result;
}

const append = (store: ReturnType<typeof createInMemoryStore>, streamId: string, count = 1, type = 'Happened') =>
  store.append(
    streamId,
    Array.from({ length: count }, (_, i) => ({ id: newId(), type, data: { i } })),
  );

describe('subscriptions (in-memory)', () => {
  it('deliver every event once, in order, wake up on appends, and resume from the checkpoint', async () => {
    const { store, seen, options } = setup();
    await append(store, 'a-1', 3);
    const subscription = createSubscription(options({ batchSize: 2 }));
    subscription.start();
    await until(() => seen.length === 3, 'the first 3 events');
    const last = await append(store, 'b-1', 2);
    await subscription.waitFor(last.position, { timeoutMs: 2000 });
    assert.equal(seen.length, 5);
    await subscription.stop();
    await append(store, 'a-1', 2);
    const again = createSubscription(options());
    again.start();
    await until(() => seen.length === 7, 'the events appended while stopped');
    await again.stop();
    const all: RecordedEvent[] = [];
    for await (const event of store.readAll()) all.push(event);
    assert.deepEqual(
      seen.map((e) => e.id),
      all.map((e) => e.id),
    );
  });

  it('filter by category and type, and can start at the end', async () => {
    const { store, seen, options } = setup();
    await append(store, 'a-1', 2);
    await append(store, 'b-1', 2);
    const filtered = createSubscription(options({ filter: { categories: ['b'] } }));
    await filtered.catchUp();
    assert.deepEqual(
      seen.map((e) => e.streamId),
      ['b-1', 'b-1'],
    );
    seen.length = 0;
    const fromEnd = createSubscription(options({ name: 'from-end', from: 'end' }));
    await fromEnd.catchUp();
    assert.equal(seen.length, 0);
    await append(store, 'a-2', 1);
    await fromEnd.catchUp();
    assert.deepEqual(
      seen.map((e) => e.streamId),
      ['a-2'],
    );
  });

  it('partitions split streams by hash and keep per-stream order', async () => {
    const { store, options } = setup();
    for (let i = 0; i < 20; i++) await append(store, `s-${i % 7}`, 2);
    const byPartition: RecordedEvent[][] = [[], [], []];
    for (let index = 0; index < 3; index++) {
      await createSubscription(
        options({ partition: { count: 3, index }, handle: (event) => void byPartition[index]!.push(event) }),
      ).catchUp();
    }
    assert.equal(byPartition.flat().length, 40);
    for (const [index, events] of byPartition.entries()) {
      for (const event of events) assert.equal(partitionOf(event.streamId, 3), index);
      const versions = new Map<string, number>();
      for (const event of events) {
        assert.equal(event.version, (versions.get(event.streamId) ?? 0) + 1, 'per-stream order');
        versions.set(event.streamId, event.version);
      }
    }
  });

  it('one instance holds the lease; the other takes over when it stops', async () => {
    const clock = createTestClock();
    const { store, options } = setup(clock);
    const { a, b, handledBy } = leaseHolders(options);
    a.start();
    await until(async () => (await a.status()).state === 'running', 'a running');
    b.start();
    await append(store, 'a-1', 5);
    await until(() => handledBy.length === 5, 'a handling');
    await clock.untilSleeping(2);
    assert.equal((await b.status()).state, 'standby');
    await a.stop();
    // b learns that the lease is free on its next poll (20 ms), not before.
    await clock.untilSleeping(1);
    await clock.advance(19);
    assert.equal((await b.status()).state, 'standby');
    await clock.advance(1);
    await until(async () => (await b.status()).state === 'running', 'b taking over');
    await append(store, 'a-1', 3);
    await until(() => handledBy.length === 8, 'b handling');
    assert.deepEqual(handledBy, ['a', 'a', 'a', 'a', 'a', 'b', 'b', 'b']);
    await b.stop();
  });

  it('a lease that is not renewed expires after its ttl, and another instance takes over; the first stands by', async () => {
    const clock = createTestClock();
    const { store, options } = setup(clock);
    const { a, b, handledBy } = leaseHolders(options);
    a.start();
    await until(async () => (await a.status()).state === 'running', 'a running');
    b.start();
    await clock.untilSleeping(2);
    // a stops renewing (paused, as a process that hangs would): its lease runs out 300 ms after it was taken.
    a.pause();
    await append(store, 'a-1', 2);
    await clock.untilSleeping(2);
    await clock.advance(280);
    assert.equal((await b.status()).state, 'standby', 'the lease still holds at 280 ms');
    assert.deepEqual(handledBy, []);
    await clock.advance(40);
    await until(() => handledBy.length === 2, 'b taking over the expired lease');
    assert.equal((await b.status()).state, 'running');
    a.resume();
    await until(async () => (await a.status()).state === 'standby', 'a standing by');
    await append(store, 'a-1', 1);
    await until(() => handledBy.length === 3, 'b handling');
    assert.deepEqual(handledBy, ['b', 'b', 'b']);
    await a.stop();
    await b.stop();
  });

  it('a poison event is retried with backoff, parked with its error, and the rest processed; a retry after the fix applies it', async () => {
    const clock = createTestClock();
    const { store, options } = setup(clock);
    let broken = true;
    const applied: number[] = [];
    const attempts: number[] = [];
    const attemptedAt: number[] = [];
    const parkedSeen: string[] = [];
    const subscription = createSubscription(
      options({
        retry: { maxAttempts: 3, baseDelayMs: 1_000, maxDelayMs: 1_500 },
        handle: (event, { attempt }) => {
          const i = (event.data as { i: number }).i;
          if (i === 2) attempts.push(attempt);
          if (i === 2) attemptedAt.push(clock.now());
          if (i === 2 && broken) throw new Error('cannot handle event 2');
          applied.push(i);
        },
        onParked: (parked) => parkedSeen.push(parked.event.id),
      }),
    );
    await append(store, 'a-1', 5);
    await settleOnClock(clock, subscription.catchUp(), 100);
    assert.deepEqual(applied, [0, 1, 3, 4]);
    assert.deepEqual(attempts, [1, 2, 3], 'three attempts in all: in the batch, then alone');
    const [first, second, third] = attemptedAt as [number, number, number];
    assert.ok(second - first <= 1_000 + 100, 'the second attempt after at most the base delay (full jitter)');
    assert.ok(third - second <= 1_500 + 100, 'the third after at most the capped delay');
    const parkedAt = (await subscription.parked())[0]!.parkedAt;
    assert.equal(parkedAt.getTime(), new Date(third).getTime(), 'parked at the clock time');
    const parked = await subscription.parked();
    assert.equal(parked.length, 1);
    assert.deepEqual(parked[0]!.event.data, { i: 2 });
    assert.equal(parked[0]!.error.message, 'cannot handle event 2');
    assert.deepEqual(parkedSeen, [parked[0]!.event.id]);
    assert.equal((await subscription.status()).parked, 1);
    broken = false;
    await subscription.retryParked(parked[0]!.event.id);
    assert.deepEqual(applied, [0, 1, 3, 4, 2]);
    assert.deepEqual(await subscription.parked(), []);
  });

  it('transactional: false runs handlers with no transaction, each event once; parking and retries work the same', async () => {
    const { store, subscriptions, options } = setup();
    let broken = true;
    const applied: number[] = [];
    const transactions = new Set<unknown>();
    const subscription = createSubscription(
      options({
        transactional: false,
        handle: (event, { tx }) => {
          transactions.add(tx);
          const i = (event.data as { i: number }).i;
          if (i === 2 && broken) throw new Error('cannot handle event 2');
          applied.push(i);
        },
      }),
    );
    const last = await append(store, 'a-1', 5);
    await subscription.catchUp();
    assert.deepEqual(applied, [0, 1, 3, 4], 'the events before the poison one are not handled again');
    assert.deepEqual([...transactions], [undefined]);
    assert.ok((await subscriptions.checkpoint('test'))! >= last.position, 'the checkpoint moved past the batch');
    const [parked] = await subscription.parked();
    assert.equal(parked?.error.message, 'cannot handle event 2');
    broken = false;
    await subscription.retryParked(parked!.event.id);
    assert.deepEqual(applied, [0, 1, 3, 4, 2]);
    assert.deepEqual(await subscription.parked(), []);
  });

  it('checkpointIntervalMs: a catching-up batch moves the checkpoint in memory, stored when caught up, at stop, and never ahead of what was handled', async () => {
    const { store, subscriptions, options } = setup();
    const stored: string[] = [];
    const moveCheckpoint = subscriptions.moveCheckpoint!.bind(subscriptions);
    subscriptions.moveCheckpoint = async (args) => {
      stored.push(args.position);
      await moveCheckpoint(args);
    };
    const handled: number[] = [];
    const handledAt: string[] = [];
    let gate: Promise<void> | null = null;
    let release = () => {};
    const subscription = createSubscription(
      options({
        transactional: false,
        checkpointIntervalMs: 60_000,
        batchSize: 10,
        handle: async (event) => {
          const n = (event.data as { n: number }).n;
          if (n === 75 && gate) await gate;
          handled.push(n);
          handledAt.push(event.position);
        },
      }),
    );
    const appendFrom = (from: number, count: number) =>
      store.append(
        'a-1',
        Array.from({ length: count }, (_, k) => ({ id: newId(), type: 'Happened', data: { n: from + k } })),
      );
    const first = await appendFrom(0, 50);
    await subscription.catchUp();
    assert.equal(handled.length, 50);
    assert.equal(stored.length, 2, 'the starting point, then once when caught up: not after each of the five batches');
    const caughtUp = stored[1]!;
    assert.ok(caughtUp >= first.position);
    assert.equal(await subscriptions.checkpoint('test'), caughtUp);

    // Catching up again, held at event 75: the stored checkpoint stays behind what was handled, never ahead of it.
    gate = new Promise<void>((resolve) => (release = resolve));
    await appendFrom(50, 50);
    subscription.start();
    await until(() => handled.length >= 75, 'events up to 75');
    assert.equal(await subscriptions.checkpoint('test'), caughtUp, 'the batches handled since are in memory only');
    const inMemory = (await subscription.status()).checkpoint!;
    assert.ok(
      inMemory >= handledAt[69]! && inMemory <= handledAt[74]!,
      'status shows the last batch handled, not beyond',
    );
    release();
    const head = await store.headPosition();
    await subscription.waitFor(head);
    await subscription.stop();
    assert.equal(await subscriptions.checkpoint('test'), head, 'stored when caught up and at stop');
    assert.deepEqual(
      handled,
      Array.from({ length: 100 }, (_, n) => n),
      'each event once, in order',
    );
  });

  it('checkpointIntervalMs needs transactional: false', () => {
    const { options } = setup();
    assert.throws(() => createSubscription(options({ checkpointIntervalMs: 100 })), {
      code: 'VALIDATION',
      message: /needs transactional: false/,
    });
    assert.throws(() => createSubscription(options({ transactional: false, checkpointIntervalMs: -1 })), {
      code: 'VALIDATION',
    });
  });

  it('moveCheckpoint is fenced by the lease', async () => {
    const { store, subscriptions } = setup();
    const { position } = await append(store, 'a-1');
    assert.equal(await subscriptions.acquireLease('s', 'a', 60_000), true);
    await assert.rejects(subscriptions.moveCheckpoint!({ name: 's', owner: 'b', position }), { code: 'LEASE_LOST' });
    assert.equal(await subscriptions.checkpoint('s'), null);
    await subscriptions.moveCheckpoint!({ name: 's', owner: 'a', position });
    assert.equal(await subscriptions.checkpoint('s'), position);
  });

  it("with onFailure 'stop' a poison event stops the subscription before it", async () => {
    const { store, options } = setup();
    const applied: number[] = [];
    const subscription = createSubscription(
      options({
        onFailure: 'stop',
        handle: (event) => {
          const i = (event.data as { i: number }).i;
          if (i === 1) throw new Error('boom');
          applied.push(i);
        },
      }),
    );
    await append(store, 'a-1', 3);
    subscription.start();
    await until(async () => (await subscription.status()).state === 'failed', 'failed');
    const status = await subscription.status();
    assert.deepEqual(applied, [0]);
    assert.equal(status.failure?.message, 'boom');
    assert.equal(status.lag.events, 2, 'the poison event and the one after it wait');
    await subscription.stop();
  });

  it('pause, resume and reset', async () => {
    const clock = createTestClock();
    const { store, seen, options } = setup(clock);
    const subscription = createSubscription(options());
    subscription.start();
    await append(store, 'a-1', 2);
    await until(() => seen.length === 2, 'two events');
    subscription.pause();
    await until(async () => (await subscription.status()).state === 'paused', 'paused');
    await append(store, 'a-1', 1);
    // Many poll intervals go by, and the notification of the append came: a paused subscription handles nothing.
    for (let poll = 0; poll < 5; poll++) {
      await clock.untilSleeping(1);
      await clock.advance(20);
    }
    assert.equal(seen.length, 2, 'nothing processed while paused');
    assert.equal((await subscription.status()).lag.events, 1);
    subscription.resume();
    await until(() => seen.length === 3, 'resumed');
    await subscription.reset('beginning');
    await until(() => seen.length === 6, 'reprocessed from the beginning');
    await subscription.stop();
  });

  it('an append notified while a batch is being handled is not lost (no wait for the poll interval)', async () => {
    // On a test clock that never moves: a poll interval never elapses, only the wake-up can find the second append.
    const { store, seen, options } = setup(createTestClock());
    let appended: ReturnType<typeof append> | null = null;
    const subscription = createSubscription(
      options({
        pollIntervalMs: 60_000,
        handle: async (event) => {
          seen.push(event);
          // The wake-up for this append comes while the runner is busy with this batch, not idle.
          if (seen.length === 1) await (appended = append(store, 'a-2'));
        },
      }),
    );
    subscription.start();
    try {
      const first = await append(store, 'a-1');
      await subscription.waitFor(first.position, { timeoutMs: 2000 });
      await until(() => appended !== null, 'the append made by the handler');
      const second = await appended!;
      await subscription.waitFor(second.position, { timeoutMs: 2000 });
      assert.equal(seen.length, 2);
    } finally {
      await subscription.stop();
    }
  });

  it('waitFor times out with a typed error, on the clock', async () => {
    const clock = createTestClock();
    const { store, options } = setup(clock);
    const subscription = createSubscription(options());
    const { position } = await append(store, 'a-1');
    let outcome: unknown = 'waiting';
    const waiting = subscription.waitFor(position, { timeoutMs: 250 }).then(
      () => (outcome = 'reached'),
      (error: unknown) => (outcome = error),
    );
    for (let elapsed = 0; elapsed < 200; elapsed += 100) {
      await clock.untilSleeping(1);
      await clock.advance(100);
    }
    assert.equal(outcome, 'waiting', 'still waiting at 200 ms');
    await clock.untilSleeping(1);
    await clock.advance(50);
    await waiting;
    const error = outcome as unknown;
    assert.ok(error instanceof WaitTimeoutError, String(error));
    assert.equal(error.timeoutMs, 250);
    assert.equal(clock.sleepers, 0, 'no timer left');
    assert.equal((await subscription.status()).waiting, 0);
  });

  it('polls every pollIntervalMs when no notification comes', async () => {
    const clock = createTestClock();
    const { store, subscriptions, seen, options } = setup(clock);
    const silent = { ...subscriptions, onAppended: () => () => undefined };
    const subscription = createSubscription(options({ subscriptions: silent, pollIntervalMs: 1_000 }));
    subscription.start();
    try {
      await clock.untilSleeping(1);
      await append(store, 'a-1', 2);
      await clock.advance(999);
      assert.equal(seen.length, 0, 'not before the poll interval');
      await clock.advance(1);
      await until(() => seen.length === 2, 'the events, at the next poll');
    } finally {
      await subscription.stop();
    }
  });

  it('a failing read is reported and tried again with an exponential backoff, up to maxDelayMs', async () => {
    const clock = createTestClock();
    const { store, seen, options } = setup(clock);
    let failures = 4;
    const reads: number[] = [];
    const flaky = Object.assign(Object.create(store) as typeof store, {
      readAllPage: (page: Parameters<typeof store.readAllPage>[0]) => {
        reads.push(clock.now());
        return failures-- > 0 ? Promise.reject(new Error('database away')) : store.readAllPage(page);
      },
    });
    const errors: string[] = [];
    await append(store, 'a-1');
    const subscription = createSubscription(
      options({
        store: flaky,
        pollIntervalMs: 60_000,
        retry: { baseDelayMs: 100, maxDelayMs: 1_000 },
        onError: (error) => errors.push((error as Error).message),
      }),
    );
    const start = clock.now();
    subscription.start();
    try {
      for (let failed = 1; failed <= 4; failed++) {
        await clock.untilSleeping(1);
        await clock.advance(Math.min(1_000, 100 * 2 ** failed));
      }
      await until(() => seen.length === 1, 'the event, once the database is back');
      assert.deepEqual(
        reads.map((at) => at - start),
        [0, 200, 600, 1_400, 2_400],
        'each retry after 2^n × baseDelayMs, capped at maxDelayMs',
      );
      assert.deepEqual(errors, Array(4).fill('database away'));
    } finally {
      await subscription.stop();
    }
  });

  it('waitFor refuses a timeout that is not a number of ms of 0 or more, and a position that is not one', async () => {
    const { store, options } = setup();
    const subscription = createSubscription(options());
    const { position } = await append(store, 'a-1');
    for (const timeoutMs of [Number.NaN, -1, -Infinity, '50' as unknown as number]) {
      await assert.rejects(
        subscription.waitFor(position, { timeoutMs }),
        (error: unknown) => error instanceof ValidationError && /timeoutMs/.test(error.message),
        String(timeoutMs),
      );
    }
    await assert.rejects(subscription.waitFor('nope' as Position), ValidationError);
    assert.equal((await subscription.status()).waiting, 0);
  });

  it('waitFor ends at once when its signal aborts: its timer and progress listener are gone', async () => {
    const { store, options } = setup();
    const subscription = createSubscription(options());
    const { position } = await append(store, 'a-1');
    const controller = new AbortController();
    const waiting = subscription.waitFor(position, { timeoutMs: Infinity, signal: controller.signal });
    await until(async () => (await subscription.status()).waiting === 1, 'the wait to begin');
    const reason = new Error('the client went away');
    controller.abort(reason);
    await assert.rejects(waiting, (error) => error === reason);
    assert.equal((await subscription.status()).waiting, 0);
    // Nothing of the wait is left: no progress listener (removed with its timer, in the same step).
    const progress = (subscription as unknown as { progressListeners: Set<unknown> }).progressListeners;
    assert.equal(progress.size, 0);
    // An aborted signal ends a wait before it starts, also on a running subscription.
    subscription.start();
    try {
      const later = await append(store, 'a-2');
      await assert.rejects(
        subscription.waitFor(later.position, { signal: AbortSignal.abort(reason) }),
        (error) => error === reason,
      );
      await subscription.waitFor(later.position, { timeoutMs: 30_000, signal: new AbortController().signal });
      assert.equal(progress.size, 0);
    } finally {
      await subscription.stop();
    }
  });

  it('lag counts the events after the checkpoint and their age', async () => {
    const { store, options } = setup();
    const subscription = createSubscription(options());
    await append(store, 'a-1', 4);
    const status = await subscription.status();
    assert.equal(status.lag.events, 4);
    assert.ok(status.lag.seconds >= 0);
    await subscription.catchUp();
    assert.equal((await subscription.status()).lag.events, 0);
  });
});
