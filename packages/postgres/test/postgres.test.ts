/**
 * PostgreSQL server tests beyond the conformance suite: gap safety under concurrent writers, a connection killed in the
 * middle of an append, concurrent migrations, schema names, transactions, holdback. Needs the server (see helpers.ts).
 */
// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import {
  ConcurrencyError,
  EventIdConflictError,
  START,
  StoreUnavailableError,
  ValidationError,
  newId,
  type EventInput,
  type Position,
  type RecordedEvent,
} from '@eventline/core';
import {
  LATEST_MIGRATION,
  createPostgresStore,
  migrations,
  type PostgresEventStore,
  type SqlSession,
} from '@eventline/postgres';
import { DATABASE_URL, cleanUp, connectForTests, uniqueSchema } from './helpers.js';
import { collect } from '@eventline/core/testing';

let admin: pg.Client;
const schemas: string[] = [];
const stores: PostgresEventStore[] = [];

function store(options: Parameters<typeof createPostgresStore>[0] = {}): PostgresEventStore {
  const schema = options.schema ?? uniqueSchema('pgt');
  if (!schemas.includes(schema)) schemas.push(schema);
  const created = createPostgresStore({ poolSize: 4, ...options, schema });
  stores.push(created);
  return created;
}

before(async () => {
  admin = await connectForTests();
});

after(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await cleanUp(admin, schemas);
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const randomInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1));
const ev = (type = 'Deposited', data: unknown = { at: Math.random() }): EventInput & { id: string } => ({
  id: newId(),
  type,
  data,
});

function assertIncreasingPositions(events: RecordedEvent[]): void {
  for (let i = 1; i < events.length; i++)
    assert.ok(events[i - 1]!.position < events[i]!.position, `positions increase at ${i}`);
}

describe('schema names', () => {
  it('accepts lower-case identifiers and rejects anything else with a ValidationError, before connecting', () => {
    for (const bad of [
      '',
      'Events',
      'has space',
      '1abc',
      'a-b',
      'x"; drop schema public cascade; --',
      'a'.repeat(64),
      'pg_events',
      'é',
      42,
      {},
    ]) {
      assert.throws(
        () => createPostgresStore({ schema: bad as string, connectionString: 'postgres://nobody@127.0.0.1:1/none' }),
        ValidationError,
        String(bad),
      );
    }
    for (const good of ['a', '_x', 'events_2', 'a'.repeat(63)]) {
      const s = createPostgresStore({ schema: good, connectionString: 'postgres://nobody@127.0.0.1:1/none' });
      assert.equal(s.schema, good);
      void s.close();
    }
  });
});

describe('migrations', () => {
  it('several stores migrating one fresh schema at once apply each migration once', async () => {
    const schema = uniqueSchema('mig');
    const racers = Array.from({ length: 6 }, () => store({ schema, poolSize: 2 }));
    const results = await Promise.all(racers.map((s) => s.migrate()));
    assert.equal(results.filter((applied) => applied.length > 0).length, 1, 'exactly one store applied the migrations');
    assert.deepEqual(
      results.find((applied) => applied.length > 0),
      Array.from({ length: LATEST_MIGRATION }, (_, i) => i + 1),
    );
    const { rows } = await admin.query(`SELECT version, name, applied_at FROM "${schema}".migrations ORDER BY version`);
    assert.equal(rows.length, LATEST_MIGRATION);
    assert.ok(rows[0].applied_at instanceof Date);
    // Idempotent, and every store works.
    assert.deepEqual(await racers[0]!.migrate(), []);
    await Promise.all(racers.map((s, i) => s.append(`acct-${i}`, [ev()])));
    assert.equal((await collect(racers[5]!.readAll())).length, 6);
  });

  it('stores migrate on first use, also when the first operations run concurrently', async () => {
    const schema = uniqueSchema('lazy');
    const s = store({ schema });
    await Promise.all([s.append('acct-1', [ev()]), s.streamInfo('acct-1'), s.headPosition(), collect(s.readAll())]);
    const { rows } = await admin.query(`SELECT count(*)::int AS n FROM "${schema}".migrations`);
    assert.equal(rows[0].n, LATEST_MIGRATION);
  });
  it('a schema created by an older version is brought up to date, and its events and idempotency carry over', async () => {
    // Migrations 1 and 2 as an older release applied them: the append function without the p_check parameter.
    const schema = uniqueSchema('upg');
    const quoted = `"${schema}"`;
    await admin.query(
      `CREATE SCHEMA ${quoted}; CREATE TABLE ${quoted}.migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    for (const migration of migrations.filter((m) => m.version <= 2)) {
      await admin.query(migration.sql(quoted));
      await admin.query(`INSERT INTO ${quoted}.migrations (version, name) VALUES ($1, $2)`, [
        migration.version,
        migration.name,
      ]);
    }
    const first = ev();
    const { rows: old } = await admin.query(
      `SELECT ${quoted}.append_events('acct-1', 'any', $1::uuid[], $2::jsonb) AS r`,
      [`{${first.id}}`, JSON.stringify([[first.type, first.data, { schemaVersion: 1 }]])],
    );
    assert.match(old[0].r, /^ok 1 1 /);

    const s = store({ schema });
    assert.deepEqual(
      await s.migrate(),
      Array.from({ length: LATEST_MIGRATION - 2 }, (_, i) => i + 3),
    );
    // Migration 4 gave the existing stream the label of its last event.
    const { rows: labels } = await admin.query(
      `SELECT st.last_transaction::text AS label, (SELECT max(e.transaction_id::text::int8) FROM ${quoted}.events e WHERE e.stream_id = st.stream_id)::text AS last FROM ${quoted}.streams st WHERE st.stream_id = 'acct-1'`,
    );
    assert.equal(labels[0].label, labels[0].last);
    // The event appended before the upgrade, retried after it with expectedVersion 'any': the original result.
    const retried = await s.append('acct-1', [first]);
    assert.equal(retried.duplicate, true);
    assert.equal(retried.version, 1);
    // Its id in another stream: a conflict, with nothing stored.
    await assert.rejects(s.append('acct-2', [first]), EventIdConflictError);
    assert.deepEqual(await s.streamInfo('acct-2'), { streamId: 'acct-2', exists: false, version: 0, deleted: null });
    const appended = await s.append('acct-1', [ev()], { expectedVersion: 1 });
    assert.equal(appended.version, 2);
    assert.equal((await collect(s.readStream('acct-1'))).length, 2);
  });
});

describe('query plans', () => {
  it("the store's own connections use generic plans for prepared statements, unless the connection string sets options", async () => {
    const mode = async (s: PostgresEventStore) =>
      (await s.sql.query<{ plan_cache_mode: string }>('SHOW plan_cache_mode'))[0]!.plan_cache_mode;
    assert.equal(await mode(store()), 'force_generic_plan');
    const separator = DATABASE_URL.includes('?') ? '&' : '?';
    const own = store({
      connectionString: `${DATABASE_URL}${separator}options=${encodeURIComponent('-c plan_cache_mode=auto')}`,
    });
    assert.equal(await mode(own), 'auto');
  });
});

describe('unreachable server', () => {
  it('is a StoreUnavailableError naming the operation', async () => {
    const s = createPostgresStore({
      connectionString: 'postgres://postgres@127.0.0.1:1/test',
      schema: uniqueSchema('down'),
    });
    try {
      const error = await s.append('acct-1', [ev()]).then(
        () => assert.fail('expected the append to fail'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof StoreUnavailableError, String(error));
      assert.equal(error.code, 'STORE_UNAVAILABLE');
      assert.match(error.operation, /append/);
      await assert.rejects(s.migrate(), StoreUnavailableError);
      await assert.rejects(s.readAllPage(), StoreUnavailableError);
    } finally {
      await s.close();
    }
  });
});

describe('gap safety', () => {
  it('16 concurrent writers, 20k events: a reader following readAllPage sees each exactly once, in increasing positions and stream order', async () => {
    const s = store({ poolSize: 24 });
    await s.migrate();
    const total = 20_000;
    const writers = 16;
    const appended = new Set<string>();
    let remaining = total;
    let writing = true;

    const writer = async (w: number) => {
      while (remaining > 0) {
        const size = Math.min(remaining, randomInt(1, 60));
        remaining -= size;
        const batch = Array.from({ length: size }, () => ev('Deposited', { w }));
        const streamId = Math.random() < 0.3 ? `gap-shared_${randomInt(0, 3)}` : `gap-${w}_${randomInt(0, 3)}`;
        if (Math.random() < 0.25) {
          // Explicit transactions held open a few ms, some with a second append: later numbers commit first.
          const split = randomInt(0, size - 1);
          await s.transaction(async (tx) => {
            // Its own stream first, so that two transactions never take two shared streams in opposite orders (a deadlock).
            await tx.append(`gap-${w}_${randomInt(0, 3)}`, batch.slice(0, split + 1));
            await sleep(randomInt(1, 8));
            // The second append is sometimes to a stream other writers append to meanwhile: this transaction got its
            // id before theirs, and its events must still come after theirs in the log (stream order).
            if (split + 1 < size)
              await tx.append(
                Math.random() < 0.5 ? `gap-shared_${randomInt(0, 3)}` : `gap-${w}_x`,
                batch.slice(split + 1),
              );
          });
        } else {
          await s.append(streamId, batch);
        }
        for (const event of batch) appended.add(event.id);
        if (Math.random() < 0.5) await sleep(randomInt(0, 3));
      }
    };

    const seen = new Set<string>();
    const versions = new Map<string, number>();
    let last: Position = START;
    let pages = 0;
    const reader = async () => {
      let after: Position = START;
      for (;;) {
        const page = await s.readAllPage({ after, limit: 500 });
        pages++;
        for (const event of page.events) {
          assert.ok(event.position > last, `positions increase: ${event.position} after ${last}`);
          assert.ok(!seen.has(event.id), `event ${event.id} seen twice`);
          assert.equal(event.version, (versions.get(event.streamId) ?? 0) + 1, `${event.streamId} in version order`);
          versions.set(event.streamId, event.version);
          seen.add(event.id);
          last = event.position;
        }
        assert.ok(page.next >= after, 'next never goes backwards');
        after = page.next;
        if (!writing && page.atEnd && seen.size >= appended.size) return;
        if (page.atEnd) await sleep(1);
      }
    };

    const reading = reader();
    await Promise.all(Array.from({ length: writers }, (_, w) => writer(w)));
    writing = false;
    await reading;
    assert.equal(appended.size, total);
    assert.equal(seen.size, total);
    for (const id of appended) assert.ok(seen.has(id), `appended event ${id} was read`);
    assert.ok(pages > 10, `the reader followed the writers (${pages} pages)`);
    // A full re-read agrees.
    const all = await collect(s.readAll({ pageSize: 3000 }));
    assert.deepEqual(new Set(all.map((e) => e.id)), appended);
  });

  it('a transaction left open holds readers back, and readAllHoldback reports it', async () => {
    const s = store();
    await s.append('acct-0', [ev()]);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let opened!: () => void;
    const isOpen = new Promise<void>((resolve) => (opened = resolve));
    const held = ev('Held');
    const running = s.transaction(async (tx) => {
      await tx.append('acct-1', [held]);
      opened();
      await gate;
    });
    await isOpen;
    const later = await s.append('acct-2', [ev('Later')]);
    await sleep(20);
    const holdback = await s.readAllHoldback();
    assert.ok(holdback.heldBackEvents >= 1, `held back: ${holdback.heldBackEvents}`);
    assert.ok(
      holdback.oldestOpenTransactionMs !== null && holdback.oldestOpenTransactionMs >= 15,
      `age: ${holdback.oldestOpenTransactionMs}`,
    );
    const during = await collect(s.readAll());
    assert.deepEqual(
      during.map((e) => e.streamId),
      ['acct-0'],
      'the committed later event waits behind the open transaction',
    );
    const head = await s.headPosition();
    assert.ok(head < later.position);
    release();
    await running;
    const afterwards = await collect(s.readAll({ after: during[0]!.position }));
    assert.deepEqual(
      afterwards.map((e) => e.type),
      ['Held', 'Later'],
      'ordered by transaction, so the reader does not skip the held event',
    );
    assert.equal((await s.readAllHoldback()).heldBackEvents, 0);
  });
});

describe('connection faults', () => {
  it('a batch append whose connection is killed mid-statement is a StoreUnavailableError, stores all or nothing, and is safe to retry', async () => {
    const application = `eventline-fault-${newId().slice(-8)}`;
    // One connection: if the killed connection went back to the pool, the retry would fail on it.
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1, application_name: application });
    pool.on('error', () => {});
    const s = store({ pool });
    try {
      await s.migrate();
      const batch = Array.from({ length: 20_000 }, (_, i) => ev('Imported', { i, text: 'x'.repeat(40) }));
      const appending = s.append('import-1', batch, { expectedVersion: 'no_stream' });
      let pid: number | null = null;
      const deadline = Date.now() + 10_000;
      while (pid === null && Date.now() < deadline) {
        const { rows } = await admin.query(
          `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE '%append_events%'`,
          [application],
        );
        if (rows.length > 0) pid = rows[0].pid;
      }
      assert.ok(pid !== null, 'found the backend running the append');
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      const error = await appending.then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(error instanceof StoreUnavailableError, `expected StoreUnavailableError, got ${String(error)}`);
      assert.match(error.operation, /append to 'import-1'/);
      const stored = Number(
        (await admin.query(`SELECT count(*) AS n FROM "${s.schema}".events WHERE stream_id = 'import-1'`)).rows[0].n,
      );
      assert.ok(stored === 0 || stored === batch.length, `all or nothing: ${stored}`);
      const retry = await s.append('import-1', batch, { expectedVersion: 'no_stream' });
      assert.equal(retry.version, batch.length);
      assert.equal(retry.duplicate, stored === batch.length);
      const again = await s.append('import-1', batch, { expectedVersion: 'no_stream' });
      assert.deepEqual({ ...again, duplicate: false }, { ...retry, duplicate: false });
      assert.equal(again.duplicate, true);
      assert.equal((await s.streamInfo('import-1')).version, batch.length);
    } finally {
      await pool.end();
    }
  });

  it('a transaction whose connection is killed is a StoreUnavailableError and commits nothing; the connection is discarded', async () => {
    const application = `eventline-faulttx-${newId().slice(-8)}`;
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1, application_name: application });
    pool.on('error', () => {});
    const s = store({ pool });
    try {
      await s.migrate();
      const error = await s
        .transaction(async (tx) => {
          await tx.append('acct-1', [ev()]);
          const { rows } = await admin.query(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, [
            application,
          ]);
          await admin.query('SELECT pg_terminate_backend($1)', [rows[0].pid]);
          await sleep(50);
          await tx.append('acct-1', [ev()]);
        })
        .then(
          () => null,
          (e: unknown) => e,
        );
      assert.ok(error instanceof StoreUnavailableError, String(error));
      assert.deepEqual(await s.streamInfo('acct-1'), { streamId: 'acct-1', exists: false, version: 0, deleted: null });
    } finally {
      await pool.end();
    }
  });
});

describe('transactions', () => {
  it('a refused append caught inside a transaction does not abort it', async () => {
    const s = store();
    await s.append('acct-1', [ev()]);
    await s.transaction(async (tx) => {
      await assert.rejects(tx.append('acct-1', [ev()], { expectedVersion: 'no_stream' }), ConcurrencyError);
      await tx.append('acct-2', [ev()]);
    });
    assert.equal((await s.streamInfo('acct-2')).version, 1);
  });

  it('the session runs raw SQL in the same transaction (for read models), committed or rolled back with the events', async () => {
    const s = store();
    await s.migrate();
    await admin.query(`CREATE TABLE "${s.schema}".balances (id text PRIMARY KEY, amount int NOT NULL)`);
    await s.transaction(async (tx) => {
      await tx.append('acct-1', [ev('Deposited', { amount: 5 })]);
      await (tx as SqlSession).sql.query(`INSERT INTO "${s.schema}".balances VALUES ($1, $2)`, ['acct-1', 5]);
    });
    await assert.rejects(
      s.transaction(async (tx) => {
        await tx.append('acct-2', [ev('Deposited', { amount: 7 })]);
        await (tx as SqlSession).sql.query(`INSERT INTO "${s.schema}".balances VALUES ($1, $2)`, ['acct-2', 7]);
        throw new Error('rolled back');
      }),
      /rolled back/,
    );
    const { rows } = await admin.query(`SELECT id, amount FROM "${s.schema}".balances ORDER BY id`);
    assert.deepEqual(rows, [{ id: 'acct-1', amount: 5 }]);
    assert.equal((await s.streamInfo('acct-2')).exists, false);
  });

  it('a database error inside a transaction rolls it back even when the caller catches it', async () => {
    const s = store();
    await s.migrate();
    const error = await s
      .transaction(async (tx) => {
        await tx.append('acct-1', [ev()]);
        await (tx as SqlSession).sql.query('SELECT 1 / 0').catch(() => undefined);
        return 'done';
      })
      .then(
        () => null,
        (e: unknown) => e,
      );
    assert.ok(error instanceof Error && /division by zero/.test(error.message), String(error));
    assert.equal((await s.streamInfo('acct-1')).exists, false);
  });

  it('the same id appended concurrently to two streams: the later one gets an EventIdConflictError', async () => {
    const s = store();
    await s.migrate();
    const shared = ev('Opened');
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let appended!: () => void;
    const appendedInside = new Promise<void>((resolve) => (appended = resolve));
    const first = s.transaction(async (tx) => {
      await tx.append('acct-1', [shared]);
      appended();
      await gate;
    });
    await appendedInside;
    const second = s.append('acct-2', [shared]).then(
      () => null,
      (e: unknown) => e,
    );
    await sleep(50); // the second insert now waits on the first transaction's unique index entry
    release();
    await first;
    const error = await second;
    assert.ok(error instanceof EventIdConflictError, String(error));
    assert.deepEqual(error.eventIds, [shared.id]);
    assert.equal((await s.streamInfo('acct-2')).exists, false);
  });
});

describe('log order and stream order', () => {
  it('a transaction that appends to a stream after another transaction committed to it is read after it, whatever their transaction ids', async () => {
    const s = store();
    await s.transaction(async (tx) => {
      await tx.append('acct-x', [ev('Opened')]); // this transaction now has its transaction id
      await s.append('acct-s', [ev('Opened')]); // another one, with a later id, commits version 1 of acct-s
      await tx.append('acct-s', [ev('Deposited')]); // version 2, by the transaction with the earlier id
    });
    const order = (await collect(s.readAll())).filter((e) => e.streamId === 'acct-s').map((e) => e.version);
    assert.deepEqual(order, [1, 2], 'readAll gives a stream in version order');
    assertIncreasingPositions(await collect(s.readAll()));
    // Also when the second append of the stream waits for the other transaction's lock on it.
    const waiting = await s.transaction(async (tx) => {
      await tx.append('acct-y', [ev('Opened')]);
      const other = s.transaction(async (inner) => {
        await inner.append('acct-t', [ev('Opened')]);
        await sleep(100); // holds acct-t's row while the outer transaction waits for it
      });
      await sleep(30);
      await tx.append('acct-t', [ev('Deposited')]);
      await other;
      return (await tx.streamInfo('acct-t')).version;
    });
    assert.equal(waiting, 2);
    assert.deepEqual(
      (await collect(s.readAll())).filter((e) => e.streamId === 'acct-t').map((e) => e.version),
      [1, 2],
    );
  });
});

describe('reads', () => {
  it('readAll pages without buffering the log and filters in SQL', async () => {
    const s = store();
    for (let i = 0; i < 5; i++)
      await s.append(
        `acct-${i}`,
        Array.from({ length: 100 }, (_, j) => ev(j % 2 ? 'Deposited' : 'Withdrawn')),
      );
    await s.append('other-1', [ev('Deposited')]);
    const events: RecordedEvent[] = await collect(
      s.readAll({ pageSize: 64, filter: { types: ['Deposited'], categories: ['acct'] } }),
    );
    assert.equal(events.length, 250);
    const page = await s.readAllPage({ filter: { categories: ['none'] } });
    assert.deepEqual(page.events, []);
    assert.equal(page.atEnd, true);
    assert.ok(page.next >= events[events.length - 1]!.position);
  });
});
