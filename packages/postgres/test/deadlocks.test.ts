/**
 * Deadlocks on the PostgreSQL server: transactions that write the same streams in opposite orders, and a plain append
 * that the server picks as the victim of a deadlock with a transaction of the caller's. Needs the server.
 */
// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import {
  newId,
  retryOnConflict,
  TransactionConflictError,
  type EventInput,
  type EventStoreSession,
} from '@eventline/core';
import { createPostgresStore, GENERIC_PLANS } from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases({ timeoutMs: 120_000 });
});
after(async () => {
  await databases.close();
});

const ev = (type: string, id = newId()): EventInput & { id: string } => ({ id, type, data: { at: type } });

/** A promise and the function that resolves it: one step of a choreography between two transactions. */
function barrier(): { reached: Promise<void>; pass: () => void } {
  let pass!: () => void;
  const reached = new Promise<void>((resolve) => (pass = resolve));
  return { reached, pass };
}

/** Waits (a bounded guard) until a backend of the store's schema waits for a lock. */
async function untilSomeoneWaitsForALock(admin: pg.Pool, text: RegExp): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { rows } = await admin.query<{ query: string }>(
      `SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock'`,
    );
    if (rows.some((row) => text.test(row.query))) return;
    if (Date.now() > deadline)
      throw new Error(
        `no backend waited for a lock within 30 s (waiting: ${rows.map((r) => r.query).join(' | ') || 'none'})`,
      );
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('deadlocks on PostgreSQL', () => {
  it('two transactions crossing two streams without lockStreams: the victim gets a TransactionConflictError, which retryOnConflict retries', async () => {
    const store = databases.postgres();
    await store.append('acct-a', [ev('Opened')]);
    await store.append('acct-b', [ev('Opened')]);
    const firstLocked = [barrier(), barrier()];
    const crossing = (index: 0 | 1, first: string, second: string) => async (session: EventStoreSession) => {
      await session.append(first, [ev('Moved')]);
      firstLocked[index]!.pass();
      await firstLocked[1 - index]!.reached; // both hold their first stream: each now waits for the other's
      await session.append(second, [ev('Moved')]);
    };
    const outcomes = await Promise.allSettled([
      store.transaction(crossing(0, 'acct-a', 'acct-b')),
      store.transaction(crossing(1, 'acct-b', 'acct-a')),
    ]);
    const failures = outcomes
      .filter((o): o is PromiseRejectedResult => o.status === 'rejected')
      .map((o) => o.reason as unknown);
    assert.equal(failures.length, 1, 'the server breaks exactly one of them off');
    assert.ok(failures[0] instanceof TransactionConflictError, String(failures[0]));
    assert.equal(failures[0].code, 'TRANSACTION_CONFLICT');
    assert.equal(failures[0].reason, 'deadlock');
    assert.equal(
      (await store.streamInfo('acct-a')).version + (await store.streamInfo('acct-b')).version,
      4,
      'the victim stored nothing',
    );
    // Run again by retryOnConflict, the same crossing commits: the first attempts cross, the victim's second does not wait.
    const again = [barrier(), barrier()];
    let attempts = 0;
    const crossingWithRetry = (index: 0 | 1, first: string, second: string) =>
      retryOnConflict((attempt) => {
        attempts++;
        return store.transaction(async (session) => {
          await session.append(first, [ev('Moved')]);
          if (attempt === 1) {
            again[index]!.pass();
            await again[1 - index]!.reached;
          }
          await session.append(second, [ev('Moved')]);
        });
      });
    await Promise.all([crossingWithRetry(0, 'acct-a', 'acct-b'), crossingWithRetry(1, 'acct-b', 'acct-a')]);
    assert.equal(attempts, 3, 'the victim ran once more');
    // Opened, the first round's survivor, then both of this round.
    assert.equal((await store.streamInfo('acct-a')).version, 4);
    assert.equal((await store.streamInfo('acct-b')).version, 4);
  });

  it('the same crossing with lockStreams first: both commit, neither is broken off', async () => {
    const store = databases.postgres();
    await store.append('acct-a', [ev('Opened')]);
    await store.append('acct-b', [ev('Opened')]);
    const transfers = Array.from({ length: 30 }, (_, i) => {
      const [from, to] = i % 2 === 0 ? ['acct-a', 'acct-b'] : ['acct-b', 'acct-a'];
      return store.transaction(async (session) => {
        await session.lockStreams([from!, to!]);
        await session.append(from!, [ev('Out')]);
        await new Promise((resolve) => setImmediate(resolve));
        await session.append(to!, [ev('In')]);
      });
    });
    const outcomes = await Promise.allSettled(transfers);
    assert.deepEqual(
      outcomes.filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason)),
      [],
    );
    assert.equal((await store.streamInfo('acct-a')).version, 31);
    assert.equal((await store.streamInfo('acct-b')).version, 31);
  });

  it('a plain append picked as the victim of a deadlock with a transaction is run again by the store, with its ids, and stored once', async () => {
    const store = databases.postgres();
    // The transaction's connection waits 10 s before looking for deadlocks, the store's 1 s (the default): the
    // server then always breaks off the plain append, which started waiting first.
    const patient = new pg.Pool({
      connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
      max: 2,
      options: `${GENERIC_PLANS} -c deadlock_timeout=10s`,
    });
    const other = createPostgresStore({ schema: store.schema, pool: patient });
    const admin = new pg.Pool({
      connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
      max: 1,
    });
    try {
      await store.append('acct-a', [ev('Opened')]);
      await other.migrate();
      const contested = newId();
      const inserted = barrier();
      const victimWaits = barrier();
      const transaction = other
        .transaction(async (session) => {
          // Holds the id `contested` (uncommitted): an append of the same id waits for this transaction to end.
          await session.append('acct-c', [ev('Parked', contested)]);
          inserted.pass();
          await victimWaits.reached;
          // Waits for acct-a, which the plain append holds: a deadlock, which the plain append's backend finds first.
          await session.lockStreams(['acct-a']);
          throw new Error('rolled back on purpose');
        })
        .catch((error: unknown) => error);
      await inserted.reached;
      const append = store.append('acct-a', [ev('Deposited', contested)]);
      await untilSomeoneWaitsForALock(admin, /append/);
      victimWaits.pass();
      const result = await append;
      assert.equal(result.version, 2);
      assert.equal(result.duplicate, false);
      assert.equal(((await transaction) as Error).message, 'rolled back on purpose');
      const events = [];
      for await (const event of store.readStream('acct-a')) events.push(event.id);
      assert.deepEqual(events.slice(1), [contested], 'stored once, with its id');
      assert.equal((await store.streamInfo('acct-c')).exists, false);
    } finally {
      await admin.end();
      await other.close();
      await patient.end();
    }
  });
});
