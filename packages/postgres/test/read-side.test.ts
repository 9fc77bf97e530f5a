/**
 * The read side on both backends: subscriptions (checkpoint and read-model writes in one transaction, leases, parked
 * events), document read models, the projection catalog and blue/green rebuild, snapshots, the inbox, wake-ups.
 */
// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import {
  createAsyncProjection,
  createRepository,
  createSubscription,
  defineAggregate,
  defineProjection,
  formatPosition,
  newId,
  UnknownCollectionError,
  ValidationError,
  type RecordedEvent,
} from '@eventline/core';
import {
  createPGliteStore,
  createPostgresStore,
  createSqlDocumentStore,
  createSqlInbox,
  createSqlProjectionCatalog,
  createSqlSnapshotStore,
  createSqlSubscriptionStore,
  type SqlClient,
  type SqlEventStore,
} from '@eventline/postgres';
import { cleanUp, connectForTests, uniqueSchema } from './helpers.js';
import { until } from '@eventline/core/testing';

let admin: pg.Client;
let pglite: PGlite;
const schemas: string[] = [];
const stores: SqlEventStore[] = [];

before(async () => {
  admin = await connectForTests();
  pglite = new PGlite();
});
after(async () => {
  // A test that failed half-way leaves its runners going: stop them, or the file never exits.
  for (const runner of running) await runner.stop().catch(() => undefined);
  await Promise.all(stores.map((s) => s.close()));
  await pglite.close();
  await cleanUp(admin, schemas);
});

const backends: Array<[string, (schema?: string) => SqlEventStore]> = [
  [
    'PostgreSQL',
    (schema = uniqueSchema('rs')) => {
      if (!schemas.includes(schema)) schemas.push(schema);
      const store = createPostgresStore({ schema, poolSize: 4 });
      stores.push(store);
      return store;
    },
  ],
  [
    'PGlite',
    (schema = uniqueSchema('rs')) => {
      const store = createPGliteStore({ db: pglite, schema });
      stores.push(store);
      return store;
    },
  ],
];

const deposit = (amount: number) => ({ id: newId(), type: 'Deposited', data: { amount } });
const balances = (version: number, factor = 1) =>
  defineProjection<SqlClient>({
    name: 'balances',
    version,
    handlers: {
      Deposited: async (event, { documents }) => {
        await documents<{ balance: number }>('balance').update(event.streamId, (current) => ({
          balance: (current?.balance ?? 0) + (event.data as { amount: number }).amount * factor,
        }));
      },
    },
  });

type Runner = {
  stop(): Promise<void>;
  waitFor(position: string, options?: { timeoutMs?: number }): Promise<void>;
  status?(): Promise<unknown>;
};
const running: Runner[] = [];

/** Registers a runner to be stopped at the end of the file, whatever happens in its test (stop() is idempotent). */
/** What an async projection needs besides its definition, all in the store's own database. */
function sqlParts(store: SqlEventStore) {
  return {
    store,
    subscriptions: createSqlSubscriptionStore(store),
    documents: createSqlDocumentStore(store),
    catalog: createSqlProjectionCatalog(store),
  };
}

function track<T extends Runner>(runner: T): T {
  running.push(runner);
  return runner;
}

/**
 * Waits until `runner` has processed `position`. The bound is a guard, not a speed check; a timeout says what the
 * runner and the server were doing (a transaction open anywhere on the server holds every reader of the log back).
 */
async function caughtUp(
  runner: Runner & { subscription?: { status(): Promise<unknown> } },
  position: string,
): Promise<void> {
  try {
    await runner.waitFor(position, { timeoutMs: 30_000 });
  } catch (error) {
    const status = await (runner.subscription ?? runner).status?.().catch((e: unknown) => String(e));
    const open = await admin
      .query(
        `SELECT pid, application_name, state, now() - xact_start AS open_for, wait_event, left(query, 120) AS query FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`,
      )
      .then(
        (r) => r.rows,
        (e: unknown) => String(e),
      );
    throw new Error(`${(error as Error).message}\nstatus: ${JSON.stringify(status)}\nserver: ${JSON.stringify(open)}`, {
      cause: error,
    });
  }
}

for (const [name, create] of backends) {
  describe(`read side on ${name}`, () => {
    it('an async projection: documents and checkpoint commit together; read-your-writes with waitFor', async () => {
      const store = create();
      const parts = sqlParts(store);
      const projection = track(createAsyncProjection({ ...parts, projection: balances(1), pollIntervalMs: 50 }));
      await projection.start();
      await store.append('account-1', [deposit(10), deposit(5)]);
      const { position } = await store.append('account-2', [deposit(7)]);
      await caughtUp(projection, position);
      const collection = await projection.collection<{ balance: number }>('balance');
      assert.deepEqual(await collection.get('account-1'), { balance: 15 });
      assert.equal(await collection.count(), 2);
      assert.deepEqual(
        (await collection.list()).map((d) => d.id),
        ['account-1', 'account-2'],
      );
      await projection.stop();
      // The checkpoint was stored with the documents: a restart applies nothing twice.
      const again = track(createAsyncProjection({ ...parts, projection: balances(1), pollIntervalMs: 50 }));
      await again.start();
      const next = await store.append('account-1', [deposit(1)]);
      await caughtUp(again, next.position);
      assert.deepEqual(await (await again.collection<{ balance: number }>('balance')).get('account-1'), {
        balance: 16,
      });
      await again.stop();
    });

    it('a failing batch leaves no write behind; the poison event is parked, and applied by a retry after the fix', async () => {
      const store = create();
      const documents = createSqlDocumentStore(store);
      let broken = true;
      const subscription = createSubscription<SqlClient>({
        name: 'poison',
        store,
        subscriptions: createSqlSubscriptionStore(store),
        retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 2 },
        handle: async (event, { tx }) => {
          const amount = (event.data as { amount: number }).amount;
          await documents.collection<{ amount: number }>('seen', tx).put(event.id, { amount }, event.position);
          if (amount === 2 && broken) throw new Error('cannot take 2');
        },
      });
      const appended = await store.append('account-1', [deposit(1), deposit(2), deposit(3)]);
      await subscription.catchUp();
      const seen = documents.collection<{ amount: number }>('seen');
      assert.deepEqual((await seen.list()).map((d) => d.data.amount).sort(), [1, 3]);
      const [parked] = await subscription.parked();
      assert.equal(parked?.error.message, 'cannot take 2');
      assert.equal(parked?.event.streamId, 'account-1');
      assert.ok(parked?.event.recordedAt instanceof Date);
      broken = false;
      await subscription.retryParked(parked!.event.id);
      assert.equal(await seen.count(), 3);
      assert.deepEqual(await subscription.parked(), []);
      assert.ok((await subscription.status()).checkpoint! >= appended.position);
    });

    it('one instance holds the lease; a commit by an instance that lost it is refused and rolled back', async () => {
      const store = create();
      const subscriptions = createSqlSubscriptionStore(store);
      assert.equal(await subscriptions.acquireLease('s', 'a', 60_000), true);
      assert.equal(await subscriptions.acquireLease('s', 'b', 60_000), false);
      assert.equal(await subscriptions.acquireLease('s', 'a', 60_000), true, 'the holder renews');
      await assert.rejects(
        subscriptions.commit({ name: 's', owner: 'b', position: formatPosition(1n, 1n) }, async () => undefined),
        { code: 'LEASE_LOST' },
      );
      assert.equal(await subscriptions.checkpoint('s'), null);
      assert.equal(await subscriptions.acquireLease('t', 'a', 1), true);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(await subscriptions.acquireLease('t', 'b', 60_000), true, 'an expired lease is taken over');
      await assert.rejects(
        subscriptions.commit({ name: 't', owner: 'a', position: formatPosition(1n, 1n) }, async () => undefined),
        { code: 'LEASE_LOST' },
      );
      // moveCheckpoint (the checkpoint alone, one statement) is fenced the same way.
      await assert.rejects(subscriptions.moveCheckpoint!({ name: 't', owner: 'a', position: formatPosition(1n, 1n) }), {
        code: 'LEASE_LOST',
      });
      assert.equal(await subscriptions.checkpoint('t'), null);
      await subscriptions.moveCheckpoint!({ name: 't', owner: 'b', position: formatPosition(1n, 2n) });
      assert.equal(await subscriptions.checkpoint('t'), formatPosition(1n, 2n));
      await subscriptions.moveCheckpoint!({ name: 't', owner: 'b', position: formatPosition(1n, 3n) });
      assert.equal(await subscriptions.checkpoint('t'), formatPosition(1n, 3n));
    });

    it('a non-transactional handler (a publisher) waits on the outside world with no transaction open: readers are not held back', async () => {
      const store = create();
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      const handled: string[] = [];
      const transactions: unknown[] = [];
      const subscription = createSubscription<SqlClient>({
        name: 'outside',
        store,
        subscriptions: createSqlSubscriptionStore(store),
        transactional: false,
        pollIntervalMs: 20,
        handle: async (event, { tx }) => {
          transactions.push(tx);
          entered();
          await released; // a broker that takes its time to confirm
          handled.push(event.id);
        },
      });
      const first = deposit(1);
      await store.append('account-1', [first]);
      subscription.start();
      try {
        await inHandler;
        // While the handler waits, an append is visible to readAll at once (no open transaction holds the log back).
        const second = deposit(2);
        const { position } = await store.append('account-2', [second]);
        assert.equal((await store.readAllHoldback()).heldBackEvents, 0);
        const page = await store.readAllPage();
        assert.ok(
          page.events.some((event) => event.position === position),
          'the new event is readable while the handler waits',
        );
        release();
        await caughtUp(subscription, position);
        assert.deepEqual(handled, [first.id, second.id]);
        assert.deepEqual(
          transactions,
          [undefined, undefined],
          'no transaction is given to a non-transactional handler',
        );
        assert.equal(
          await createSqlSubscriptionStore(store).checkpoint('outside'),
          (await subscription.status()).checkpoint,
        );
      } finally {
        release();
        await subscription.stop();
      }
    });

    it('documents: last write wins by version', async () => {
      const store = create();
      const collection = createSqlDocumentStore(store).collection<{ n: number }>('things');
      assert.equal(await collection.put('a', { n: 2 }, formatPosition(1n, 2n)), true);
      assert.equal(await collection.put('a', { n: 1 }, formatPosition(1n, 1n)), false);
      assert.equal(await collection.put('a', { n: 3 }, formatPosition(1n, 2n)), false);
      assert.equal(
        await collection.put('a', { n: 4 }, formatPosition(1n, 10n)),
        true,
        'compared as positions, not as text in a locale',
      );
      assert.equal(await collection.delete('a', formatPosition(2n, 0n)), true);
      assert.equal(await collection.put('a', { n: 9 }, formatPosition(1n, 99n)), false);
      assert.equal(await collection.get('a'), null);
    });

    it('documents: ids and after with NUL or a lone surrogate are refused before they reach the database', async () => {
      const store = create();
      const collection = createSqlDocumentStore(store).collection<{ n: number }>('things');
      assert.equal(await collection.put('a', { n: 1 }, formatPosition(1n, 1n)), true);
      const at = formatPosition(2n, 1n);
      for (const id of ['a\u0000', '\ud800', 'x'.repeat(501), '']) {
        await assert.rejects(collection.get(id), ValidationError, `get ${JSON.stringify(id)}`);
        await assert.rejects(collection.put(id, { n: 2 }, at), ValidationError, `put ${JSON.stringify(id)}`);
        await assert.rejects(collection.delete(id, at), ValidationError, `delete ${JSON.stringify(id)}`);
        if (id !== '')
          await assert.rejects(collection.list({ after: id }), ValidationError, `list after ${JSON.stringify(id)}`);
      }
      await assert.rejects(collection.list({ limit: Number.NaN }), ValidationError);
      assert.deepEqual(
        (await collection.list({ after: '😀' })).map((d) => d.id),
        [],
      );
      assert.deepEqual(
        (await collection.list({ after: ' ' })).map((d) => d.id),
        ['a'],
      );
    });

    it('reads never create a table; an unknown collection is an UnknownCollectionError', async () => {
      const store = create();
      const documents = createSqlDocumentStore(store);
      const tables = async () =>
        (
          await store.sql.query<{ table_name: string }>(
            `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
            [store.schema],
          )
        ).map((r) => r.table_name);
      await store.migrate();
      const before = await tables();
      const ghost = documents.collection('ghost');
      assert.equal(await ghost.get('x'), null);
      assert.deepEqual(await ghost.list(), []);
      assert.equal(await ghost.count(), 0);
      assert.equal(await documents.has('ghost'), false);
      assert.deepEqual(await tables(), before, 'reads created no table');

      const parts = {
        store,
        subscriptions: createSqlSubscriptionStore(store),
        documents,
        catalog: createSqlProjectionCatalog(store),
      };
      const undeclared = track(createAsyncProjection({ ...parts, projection: balances(1), pollIntervalMs: 50 }));
      await undeclared.start();
      const { position } = await store.append('account-1', [deposit(3)]);
      await caughtUp(undeclared, position);
      const withBalance = await tables();
      for (const name of ['nope', 'constructor', 'to_string', 'balance_x']) {
        await assert.rejects(
          undeclared.collection(name),
          (error: unknown) => error instanceof UnknownCollectionError && error.known.join() === 'balance',
          name,
        );
      }
      assert.equal(await (await undeclared.collection<{ balance: number }>('balance')).count(), 1);
      assert.deepEqual(await documents.collections('balances_v1_'), ['balances_v1_balance']);
      await undeclared.stop();

      const declared = track(
        createAsyncProjection({
          ...parts,
          projection: defineProjection<SqlClient>({
            ...balances(1),
            name: 'declared',
            collections: ['balance', 'later'],
          }),
          pollIntervalMs: 50,
        }),
      );
      assert.equal(
        await (await declared.collection('later')).get('x'),
        null,
        'declared, never written: reads as empty',
      );
      assert.equal(await (await declared.collection('later')).count(), 0);
      await assert.rejects(declared.collection('ghost'), UnknownCollectionError);
      assert.deepEqual(await tables(), withBalance, 'reads of unknown and unwritten collections created no table');
    });

    it('blue/green rebuild into new tables, then the switch; old tables dropped', async () => {
      const store = create();
      const parts = sqlParts(store);
      const v1 = track(createAsyncProjection({ ...parts, projection: balances(1), pollIntervalMs: 50 }));
      await v1.start();
      for (let i = 0; i < 30; i++) await store.append(`account-${i % 3}`, [deposit(1)]);
      const head = await store.append('account-0', [deposit(1)]);
      await caughtUp(v1, head.position);
      await v1.stop();
      const v2 = track(
        createAsyncProjection({ ...parts, projection: balances(2, 10), pollIntervalMs: 50, batchSize: 7 }),
      );
      await v2.start();
      const last = await store.append('account-0', [deposit(1)]);
      await caughtUp(v2, last.position);
      assert.deepEqual(await (await v1.collection<{ balance: number }>('balance')).get('account-0'), { balance: 120 });
      assert.equal(await parts.catalog.active('balances'), 2);
      const tables = await store.sql.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'rm_balances_v1%'`,
        [store.schema],
      );
      assert.equal(tables[0]!.n, 0);
      await v2.stop();
    });

    it('snapshots: a repository loads the tail after its snapshot; deleting them changes no result', async () => {
      const store = create();
      const snapshots = createSqlSnapshotStore(store);
      const counter = defineAggregate<{ n: number }, never, { type: 'Deposited'; data: { amount: number } }>({
        category: 'account',
        snapshots: { every: 10 },
        initialState: () => ({ n: 0 }),
        decide: () => [],
        evolve: (state, event) => ({ n: state.n + event.data.amount }),
      });
      const repository = createRepository(store, counter, { snapshots });
      await store.append(
        'account-9',
        Array.from({ length: 25 }, () => deposit(2)),
      );
      await repository.snapshot('9');
      await store.append('account-9', [deposit(1)]);
      const loaded = await repository.load('9');
      assert.deepEqual([loaded.state.n, loaded.fromSnapshot, loaded.eventsRead], [51, true, 1]);
      await snapshots.save({ streamId: 'account-9', version: 3, stateVersion: 1, state: { n: -1 } });
      assert.equal((await snapshots.load('account-9'))?.version, 25, 'an older snapshot does not replace a newer one');
      await snapshots.delete();
      assert.deepEqual((await repository.load('9')).state, { n: 51 });
    });

    it('inbox: one effect per message id, also when two deliveries race', async () => {
      const store = create();
      const inbox = createSqlInbox(store);
      let effects = 0;
      const results = await Promise.all(
        Array.from({ length: 4 }, () => inbox.process('g', 'm1', async () => void effects++)),
      );
      assert.equal(results.filter(Boolean).length, 1);
      assert.equal(effects, 1);
      assert.equal(await inbox.process('other', 'm1', async () => void effects++), true, 'groups are independent');
      await assert.rejects(
        inbox.process('g', 'm2', async () => {
          throw new Error('effect failed');
        }),
      );
      assert.equal(await inbox.process('g', 'm2', async () => void effects++), true, 'a failed effect records nothing');
    });

    it('wakes listeners when events are appended', async () => {
      const store = create();
      let woken = 0;
      const stop = store.onAppended(() => void woken++);
      await store.append('account-1', [deposit(1)]);
      await until(() => woken > 0, 'a wake-up');
      stop();
    });
  });
}

describe('wake-ups across processes (PostgreSQL LISTEN/NOTIFY)', () => {
  it('an append by one store wakes a listener of another store on the same schema', async () => {
    const schema = uniqueSchema('rs');
    const writer = backends[0]![1](schema);
    const reader = backends[0]![1](schema);
    await writer.migrate();
    const seen: RecordedEvent[] = [];
    let woken = 0;
    const stop = reader.onAppended(() => void woken++);
    await new Promise((resolve) => setTimeout(resolve, 300)); // LISTEN is set up in the background
    woken = 0;
    await writer.append('account-1', [deposit(1)]);
    await until(() => woken > 0, 'a NOTIFY from the other store', 5000);
    for await (const event of reader.readAll()) seen.push(event);
    assert.equal(seen.length, 1);
    stop();
  });

  it('stopping to listen right away, then closing, leaves no LISTEN connection behind', async () => {
    const schema = uniqueSchema('rs');
    const store = backends[0]![1](schema);
    await store.migrate();
    store.onAppended(() => undefined)(); // unsubscribe while the listener is still connecting
    const again = store.onAppended(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 10));
    again();
    await store.close();
    await until(
      async () => {
        const { rows } = await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = $1`, [
          `LISTEN "${schema}_appended"`,
        ]);
        return rows[0].n === 0;
      },
      'the LISTEN connection to close',
      5000,
    );
  });
});
