// tier: integration
// Group commit in the PostgreSQL store (src/append-groups.ts): appends made together go in one statement and one
// commit, and each still gets the answer it would have had alone. On the real server.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ConcurrencyError,
  EventIdConflictError,
  StreamDeletedError,
  ValidationError,
  createInMemoryStore,
  newId,
  type AppendResult,
  type EventInput,
  type EventStore,
} from '@eventline/core';
import { createPostgresStore, type PostgresEventStore } from '@eventline/postgres';
import { spiedStores } from './helpers.js';

const openSpied = spiedStores('grp');

/** A store on a pool of its own, and a count of the append statements (append_events or append_group) it sends. */
async function countedStore(
  options: { grouping?: number } = {},
): Promise<{ store: PostgresEventStore; statements: () => number }> {
  let count = 0;
  const store = await openSpied(({ text }) => {
    if (text && /\.append_(events|group)\(/.test(text)) count++;
  }, options);
  return { store, statements: () => count };
}

const ev = (): EventInput & { id: string } => ({ id: newId(), type: 'Deposited', data: { amount: 1 } });
const settle = <T>(promise: Promise<T>) =>
  promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

describe('group commit', () => {
  it('appends made together go in a few statements, and each gets its own answer', async () => {
    const { store, statements } = await countedStore();
    const stored = ev();
    await store.append('acct-stored', [stored], { expectedVersion: 'no_stream' });
    await store.append('acct-open', [ev()]);
    await store.append('acct-gone', [ev()]);
    await store.deleteStream('acct-gone', { hard: true });
    const before = statements();

    // All made in the same turn of the event loop.
    const fresh = Array.from({ length: 20 }, (_, i) =>
      store.append(`acct-new${i}`, [ev(), ev()], { expectedVersion: 'no_stream' }),
    );
    const first = store.append('acct-open', [ev()], { expectedVersion: 1 });
    const second = settle(store.append('acct-open', [ev()], { expectedVersion: 1 }));
    const retried = store.append('acct-stored', [stored], { expectedVersion: 'no_stream' });
    const gone = settle(store.append('acct-gone', [ev()]));

    const results: AppendResult[] = await Promise.all(fresh);
    for (const result of results)
      assert.deepEqual([result.version, result.firstVersion, result.duplicate], [2, 1, false]);
    assert.equal((await first).version, 2);
    const refused = await second;
    assert.ok(
      'error' in refused && refused.error instanceof ConcurrencyError,
      'the second append with the same expected version is refused',
    );
    assert.equal((refused.error as ConcurrencyError).actualVersion, 2);
    const retry = await retried;
    assert.equal(retry.duplicate, true);
    assert.equal(retry.version, 1);
    const deleted = await gone;
    assert.ok('error' in deleted && deleted.error instanceof StreamDeletedError);
    // 24 appends, grouped: at most one statement per slot (4), where alone they take 24.
    assert.ok(statements() - before <= 4, `${statements() - before} statements for 24 appends`);

    // Positions follow the log, each stream holds what was appended to it.
    const positions = results.map((result) => result.position).sort();
    assert.equal(new Set(positions).size, 20);
    assert.equal((await store.streamInfo('acct-open')).version, 2);
    for (let i = 0; i < 20; i++) assert.equal((await store.streamInfo(`acct-new${i}`)).version, 2);
  });

  it('a group of every kind of append gets, append by append, the answers of the in-memory store', async () => {
    // The same setup and the same turn of appends on both stores; the in-memory store decides one append at a time.
    const { store, statements } = await countedStore();
    const reference = createInMemoryStore();
    const ids = new Map<string, string>();
    const id = (name: string): EventInput & { id: string } => {
      if (!ids.has(name)) ids.set(name, newId());
      return { id: ids.get(name)!, type: 'Deposited', data: { amount: 1, name } };
    };
    const setup = async (s: EventStore) => {
      await s.append('acct-two', [id('two1'), id('two2')]);
      await s.append('acct-one', [id('one1')]);
      await s.append('acct-soft', [id('soft1'), id('soft2')]);
      await s.deleteStream('acct-soft');
      await s.append('acct-hard', [id('hard1')]);
      await s.deleteStream('acct-hard', { hard: true });
      await s.append('acct-done', [id('done1')]);
    };
    const turn = (s: EventStore): Array<Promise<unknown>> =>
      [
        // Existing streams whose expected version holds (bumped), and one whose does not.
        () => s.append('acct-two', [id('two3'), id('two4')], { expectedVersion: 2 }),
        () => s.append('acct-one', [id('one2')], { expectedVersion: 'stream_exists' }),
        () => s.append('acct-done', [id('done2')], { expectedVersion: 3 }),
        // New streams: created, with every expected version that allows it, and ones that do not.
        () => s.append('acct-n1', [id('n1a'), id('n1b'), id('n1c')], { expectedVersion: 'no_stream' }),
        () => s.append('acct-n2', [id('n2a')], { expectedVersion: 0 }),
        () => s.append('acct-n3', [id('n3a')], { expectedVersion: 'any' }),
        () => s.append('acct-n4', [id('n4a')], { expectedVersion: 'stream_exists' }),
        () => s.append('acct-n5', [id('n5a')], { expectedVersion: 4 }),
        // Deleted streams: a soft-deleted one comes back, a tombstone refuses.
        () => s.append('acct-soft', [id('soft3')], { expectedVersion: 'any' }),
        () => s.append('acct-hard', [id('hard2')]),
        // One stream named three times in the turn: decided in the order the appends were made.
        () => s.append('acct-thrice', [id('t1')], { expectedVersion: 'no_stream' }),
        () => s.append('acct-thrice', [id('t2')], { expectedVersion: 1 }),
        () => s.append('acct-thrice', [id('t3')], { expectedVersion: 1 }),
      ].map((append) => settle(append()));
    // Retries of stored appends fail a group (its ids are not looked up first); each append is then sent alone, and
    // those to one stream still in the order they were made.
    const retries = (s: EventStore): Array<Promise<unknown>> =>
      [
        () => s.append('acct-one', [id('one1')], { expectedVersion: 'no_stream' }),
        () => s.append('acct-again', [id('a1')], { expectedVersion: 'no_stream' }),
        () => s.append('acct-again', [id('a2')], { expectedVersion: 1 }),
        () => s.append('acct-again', [id('a3')], { expectedVersion: 2 }),
        () => s.append('acct-again', [id('a4')], { expectedVersion: 3 }),
        () => s.append('acct-again', [id('a5')], { expectedVersion: 3 }),
        () => s.append('acct-done', [id('done1')]),
        () => s.append('acct-done', [id('done3')], { expectedVersion: 1 }),
      ].map((append) => settle(append()));
    const outcome = (settled: unknown) => {
      const { value, error } = settled as { value?: AppendResult; error?: unknown };
      return error
        ? (error as Error).constructor.name
        : { version: value!.version, firstVersion: value!.firstVersion, duplicate: value!.duplicate };
    };
    await setup(reference);
    await setup(store);
    const expected = (await Promise.all(turn(reference))).map(outcome);
    const before = statements();
    const actual = (await Promise.all(turn(store))).map(outcome);
    assert.deepEqual(actual, expected);
    assert.equal(statements() - before, 1, 'one statement for the 13 appends');
    assert.deepEqual(
      (await Promise.all(retries(store))).map(outcome),
      (await Promise.all(retries(reference))).map(outcome),
    );
    // Each stream holds what the reference holds, in the same order; the log has every stored event once.
    for (const stream of [
      'acct-two',
      'acct-one',
      'acct-done',
      'acct-n1',
      'acct-n2',
      'acct-n3',
      'acct-n4',
      'acct-soft',
      'acct-hard',
      'acct-thrice',
      'acct-again',
    ]) {
      const read = async (s: EventStore) => {
        const events: string[] = [];
        try {
          for await (const event of s.readStream(stream)) events.push(`${event.version}:${event.id}`);
        } catch (error) {
          events.push((error as Error).constructor.name);
        }
        return events;
      };
      assert.deepEqual(await read(store), await read(reference), stream);
      assert.deepEqual(await store.streamInfo(stream), await reference.streamInfo(stream), stream);
    }
    const logged: string[] = [];
    for await (const event of store.readAll()) logged.push(event.id);
    assert.equal(new Set(logged).size, logged.length);
    assert.deepEqual(logged.sort(), [...ids.values()].filter((eventId) => logged.includes(eventId)).sort());
  });

  it('an id already stored fails the group, and each append is then sent alone: only that one is refused', async () => {
    const { store, statements } = await countedStore();
    const stored = ev();
    await store.append('acct-a', [stored]);
    const before = statements();
    const fresh = Array.from({ length: 10 }, (_, i) =>
      store.append(`acct-b${i}`, [ev()], { expectedVersion: 'no_stream' }),
    );
    const conflict = settle(store.append('acct-c', [ev(), stored], { expectedVersion: 'no_stream' }));
    for (const result of await Promise.all(fresh)) assert.equal(result.version, 1);
    const refused = await conflict;
    assert.ok('error' in refused && refused.error instanceof EventIdConflictError);
    assert.deepEqual((refused.error as EventIdConflictError).eventIds, [stored.id]);
    assert.equal((await store.streamInfo('acct-c')).exists, false, 'nothing of the refused batch is stored');
    // The group, then 11 appends alone (the refused one twice: without, then with the id look-up).
    assert.ok(statements() - before > 11, 'the appends were sent again alone');
  });

  it('a stream locked by an open transaction holds up only its own append', async () => {
    const { store } = await countedStore();
    await store.append('acct-locked', [ev()]);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let inside!: () => void;
    const locked = new Promise<void>((resolve) => (inside = resolve));
    const transaction = store.transaction(async (session) => {
      await session.append('acct-locked', [ev()], { expectedVersion: 1 });
      inside();
      await gate;
    });
    await locked;

    let waitingDone = false;
    const waiting = store.append('acct-locked', [ev()]).then((result) => {
      waitingDone = true;
      return result;
    });
    // Refused, but only once the stream's row can be locked (the slow path of the append, not the fast one above).
    let refusedDone = false;
    const refused = settle(store.append('acct-locked', [ev()], { expectedVersion: 'no_stream' })).then((result) => {
      refusedDone = true;
      return result;
    });
    const others = await Promise.all(
      Array.from({ length: 10 }, (_, i) => store.append(`acct-free${i}`, [ev()], { expectedVersion: 'no_stream' })),
    );
    assert.equal(others.length, 10);
    assert.equal(waitingDone, false, 'the append to the locked stream waits for the transaction');
    assert.equal(refusedDone, false, 'so does the one that will be refused');

    release();
    await transaction;
    const result = await waiting;
    assert.equal(result.version, 3, 'appended after the transaction committed');
    const outcome = await refused;
    assert.ok('error' in outcome && outcome.error instanceof ConcurrencyError);
  });

  it('grouping 0 sends each append alone; a negative or fractional value is refused', async () => {
    const { store, statements } = await countedStore({ grouping: 0 });
    const before = statements();
    await Promise.all(Array.from({ length: 6 }, (_, i) => store.append(`acct-${i}`, [ev()])));
    assert.equal(statements() - before, 6);
    for (const bad of [-1, 1.5, Number.NaN]) {
      assert.throws(
        () =>
          createPostgresStore({
            schema: 'unused',
            grouping: bad,
            connectionString: 'postgres://nobody@127.0.0.1:1/none',
          }),
        ValidationError,
      );
    }
  });
});
