/**
 * Gap test for subscriptions on the PostgreSQL server (issue 4): 16 concurrent writers, each with a store (and pool) of
 * its own as separate processes would have, append about 20k events (some in explicit transactions of several appends
 * held open a few ms before commit, some rolled back by throwing) while a subscription on the SQL subscription store
 * follows the log, woken by NOTIFY from the writers' stores. It must handle every committed event exactly once (the
 * in-handler record and the documents written in its transactions agree), never a rolled-back one, in strictly
 * increasing positions. Needs the server: a missing PostgreSQL fails the file (see helpers.ts), it never skips.
 */
// tier: integration
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createSubscription, formatPosition, newId, type EventInput, type Position } from '@eventline/core';
import {
  createPostgresStore,
  createSqlDocumentStore,
  createSqlSubscriptionStore,
  type PostgresEventStore,
} from '@eventline/postgres';
import { DATABASE_URL, cleanUp, connectForTests, uniqueSchema } from './helpers.js';

let admin: pg.Client;
const schemas: string[] = [];
const stores: PostgresEventStore[] = [];

before(async () => {
  admin = await connectForTests();
});
after(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await cleanUp(admin, schemas);
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** A store on the current test's schema (the last one pushed). */
const open = (poolSize: number, schema = schemas[schemas.length - 1]!): PostgresEventStore => {
  const store = createPostgresStore({ schema, poolSize });
  stores.push(store);
  return store;
};

class Rollback extends Error {}

describe('subscriptions under concurrent writers (PostgreSQL)', () => {
  it('16 writers on their own pools, ~20k events with transactions and rollbacks: every committed event handled exactly once, in increasing positions', async () => {
    schemas.push(uniqueSchema('subw'));
    const reader = open(4);
    await reader.migrate();
    const writers = Array.from({ length: 16 }, () => open(2));
    const total = 20_000;
    const committed = new Set<string>();
    const rolledBack = new Set<string>();
    let remaining = total;
    let transactions = 0;
    let rollbacks = 0;

    const event = (w: number): EventInput & { id: string } => ({
      id: newId(),
      type: 'Written',
      data: { w, note: 'x'.repeat(40) },
    });
    const writer = async (w: number) => {
      const store = writers[w]!;
      while (remaining > 0) {
        const roll = Math.random();
        if (roll < 0.3) {
          // Several appends in one transaction, held open a few ms: other writers' later positions commit first.
          const appends = randomInt(2, 5);
          const batches = Array.from({ length: appends }, () =>
            Array.from({ length: Math.min(Math.max(remaining, 1), randomInt(1, 20)) }, () => event(w)),
          );
          const failing = Math.random() < 0.25;
          if (!failing) remaining -= batches.reduce((n, b) => n + b.length, 0);
          transactions++;
          try {
            await store.transaction(async (tx) => {
              for (const [i, batch] of batches.entries()) {
                await tx.append(`w${w}-${i % 3}`, batch);
                if (Math.random() < 0.5) await sleep(randomInt(0, 3));
              }
              await sleep(randomInt(1, 8));
              if (failing) throw new Rollback('rolled back on purpose');
            });
            for (const batch of batches) for (const e of batch) committed.add(e.id);
          } catch (error) {
            if (!(error instanceof Rollback)) throw error;
            rollbacks++;
            for (const batch of batches) for (const e of batch) rolledBack.add(e.id);
          }
        } else {
          const size = Math.min(remaining, randomInt(1, 40));
          remaining -= size;
          const batch = Array.from({ length: size }, () => event(w));
          await store.append(`w${w}-${randomInt(0, 3)}`, batch);
          for (const e of batch) committed.add(e.id);
        }
        if (Math.random() < 0.3) await sleep(randomInt(0, 3));
      }
    };

    // Count the pages the subscription reads while the writers run (with transactions in flight).
    let writing = true;
    let pagesWhileWriting = 0;
    const readAllPage = reader.readAllPage.bind(reader);
    reader.readAllPage = async (options) => {
      const page = await readAllPage(options);
      if (writing && page.events.length > 0) pagesWhileWriting++;
      return page;
    };
    const documents = createSqlDocumentStore(reader);
    const handled: Array<{ id: string; position: Position }> = [];
    const errors: unknown[] = [];
    const subscription = createSubscription({
      name: 'gap',
      store: reader,
      subscriptions: createSqlSubscriptionStore(reader),
      batchSize: 25, // small batches: more reads while writers' transactions are in flight
      pollIntervalMs: 2000,
      onError: (error) => errors.push(error),
      handle: async (e, { tx }) => {
        handled.push({ id: e.id, position: e.position });
        await documents.collection<{ w: number }>('seen', tx).put(e.id, { w: (e.data as { w: number }).w }, e.position);
      },
    });
    subscription.start();
    let handledWhileWriting: number | undefined;
    try {
      await Promise.all(writers.map((_, w) => writer(w)));
      handledWhileWriting = handled.length;
      writing = false;
      // The last committed event's position. Not headPosition(): that is the readable head, which stops before any
      // transaction open on the server, the subscription's own included (under load it was often open just then, and
      // the wait below ended with a thousand events still to handle).
      const [newest] = await reader.sql.query<{ tx: string; position: string }>(
        `SELECT transaction_id::text AS tx, position::text FROM "${reader.schema}".events ORDER BY transaction_id DESC, position DESC LIMIT 1`,
      );
      const head = formatPosition(BigInt(newest!.tx), BigInt(newest!.position));
      // Woken by NOTIFY from the writers' stores (the poll is 2 s): it must catch up with the head. The bound is a
      // guard, not a speed check (a round trip per event: 20 s was too short on a day of 360 µs round trips here).
      await subscription.waitFor(head, { timeoutMs: 120_000 });
      await sleep(300); // anything after the last committed event would show up now
    } finally {
      await subscription.stop();
    }

    assert.deepEqual(errors, [], 'no errors in the subscription');
    assert.ok(committed.size >= total, `committed ${committed.size}`);
    // Under this load the database's CPU goes to the writers: the subscription (a round trip per event's document)
    // mostly catches up after them, but it must have read and handled pages while their transactions were in flight.
    assert.ok(
      handledWhileWriting !== undefined && handledWhileWriting > 0 && pagesWhileWriting >= 3,
      `the subscription followed the writers (${pagesWhileWriting} pages, ${handledWhileWriting} events while they wrote)`,
    );
    assert.ok(rollbacks > 0 && transactions > 20, `transactions ${transactions}, rolled back ${rollbacks}`);
    const seen = new Set<string>();
    let last: Position | null = null;
    for (const h of handled) {
      assert.ok(!seen.has(h.id), `event ${h.id} handled twice`);
      assert.ok(!rolledBack.has(h.id), `rolled-back event ${h.id} handled`);
      assert.ok(committed.has(h.id), `event ${h.id} is one the writers committed`);
      if (last !== null) assert.ok(h.position > last, `positions increase: ${h.position} after ${last}`);
      last = h.position;
      seen.add(h.id);
    }
    if (seen.size !== committed.size) {
      // Say which: their positions against the subscription's checkpoint and the last event it handled.
      const missing = [...committed].filter((id) => !seen.has(id));
      const rows = await reader.sql
        .query<{ id: string; stream_id: string; version: number; tx: string; position: string }>(
          `SELECT event_id::text AS id, stream_id, version, transaction_id::text AS tx, position::text FROM "${reader.schema}".events WHERE event_id::text = ANY($1) ORDER BY transaction_id, position LIMIT 30`,
          [missing],
        )
        .catch((error: unknown) => [{ error: String(error) }]);
      assert.fail(
        `${missing.length} committed events were not handled; checkpoint ${(await subscription.status()).checkpoint}, last handled ${last}: ${JSON.stringify(rows)}`,
      );
    }
    // The documents written in the subscription's transactions agree: one per committed event, no more.
    assert.equal(await documents.collection('seen').count(), committed.size);
    const status = await subscription.status();
    assert.equal(status.parked, 0);
    assert.equal(status.lag.events, 0);
  });

  it('an event held back by an older open transaction is handled soon after that transaction ends, not at the next poll', async () => {
    schemas.push(uniqueSchema('subw'));
    const reader = open(2);
    await reader.migrate();
    const writer = open(2);
    const handled: string[] = [];
    const subscription = createSubscription({
      name: 'held-back',
      store: reader,
      subscriptions: createSqlSubscriptionStore(reader),
      pollIntervalMs: 20_000,
      lease: { ttlMs: 60_000 },
      handle: (e) => void handled.push(e.id),
    });
    const first = await writer.append('held-0', [{ id: newId(), type: 'Written', data: {} }]);
    subscription.start();
    const holder = new pg.Client({ connectionString: DATABASE_URL });
    await holder.connect();
    try {
      await subscription.waitFor(first.position, { timeoutMs: 5000 });
      // A transaction with a transaction id, open elsewhere on the server: the next append is held back behind it.
      await holder.query('BEGIN');
      await holder.query('SELECT pg_current_xact_id()');
      const id = newId();
      const { position } = await writer.append('held-1', [{ id, type: 'Written', data: {} }]);
      await sleep(150); // the notification came, the read found nothing
      assert.ok(!handled.includes(id), 'held back while the older transaction is open');
      await holder.query('COMMIT');
      const released = Date.now();
      await subscription.waitFor(position, { timeoutMs: 5000 });
      assert.ok(
        Date.now() - released < 1000,
        `handled ${Date.now() - released} ms after the transaction ended (the poll is 20 s)`,
      );
      assert.equal(handled.length, 2);
    } finally {
      await holder.end();
      await subscription.stop();
    }
  });
});
