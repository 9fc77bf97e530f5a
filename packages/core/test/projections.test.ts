// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createAsyncProjection,
  createInMemoryDocumentStore,
  createInMemoryProjectionCatalog,
  createInMemoryStore,
  createInMemorySubscriptionStore,
  defineProjection,
  formatPosition,
  newId,
  projectLive,
  UnknownCollectionError,
  ValidationError,
  withInlineProjections,
  type ProjectionDefinition,
  type RebuildProgress,
} from '@eventline/core';

type Balance = { balance: number; movements: number };
const balances = (version = 1, factor = 1): ProjectionDefinition =>
  defineProjection({
    name: 'balances',
    version,
    categories: ['account'],
    handlers: {
      Deposited: async (event, { documents }) => {
        await documents<Balance>('balance').update(event.streamId, (current) => ({
          balance: (current?.balance ?? 0) + (event.data as { amount: number }).amount * factor,
          movements: (current?.movements ?? 0) + 1,
        }));
      },
    },
  });

const deposit = (amount: number) => ({ id: newId(), type: 'Deposited', data: { amount } });

function setup() {
  const store = createInMemoryStore();
  return {
    store,
    subscriptions: createInMemorySubscriptionStore(store),
    documents: createInMemoryDocumentStore(),
    catalog: createInMemoryProjectionCatalog(),
  };
}

describe('projections (in-memory)', () => {
  it('async: documents follow the log, with read-your-writes through waitFor', async () => {
    const parts = setup();
    const projection = createAsyncProjection({ ...parts, projection: balances(), pollIntervalMs: 20 });
    await projection.start();
    await parts.store.append('account-1', [deposit(10), deposit(5)]);
    const { position } = await parts.store.append('account-2', [deposit(7)]);
    await parts.store.append('other-1', [deposit(1000)]);
    await projection.waitFor(position, { timeoutMs: 2000 });
    const collection = await projection.collection<Balance>('balance');
    assert.deepEqual(await collection.get('account-1'), { balance: 15, movements: 2 });
    assert.deepEqual(await collection.get('account-2'), { balance: 7, movements: 1 });
    assert.equal(await collection.get('other-1'), null, 'categories filter');
    assert.equal(await collection.count(), 2);
    await projection.stop();
  });

  it('documents: an older or repeated event never overwrites newer state', async () => {
    const documents = createInMemoryDocumentStore();
    const collection = documents.collection<{ n: number }>('things');
    assert.equal(await collection.put('a', { n: 2 }, formatPosition(1n, 2n)), true);
    assert.equal(await collection.put('a', { n: 1 }, formatPosition(1n, 1n)), false);
    assert.equal(await collection.put('a', { n: 3 }, formatPosition(1n, 2n)), false);
    assert.deepEqual((await collection.get('a'))?.data, { n: 2 });
    assert.equal(await collection.delete('a', formatPosition(2n, 1n)), true);
    assert.equal(await collection.put('a', { n: 9 }, formatPosition(1n, 9n)), false, 'a delete remembers its version');
    assert.equal(await collection.get('a'), null);
    await assert.rejects(collection.put('b', { when: new Date() } as never, formatPosition(3n, 1n)), ValidationError);
    assert.throws(() => documents.collection('Bad Name'), ValidationError);
  });

  it('documents: ids and after are well-formed strings of 1 to 500 characters without NUL, on reads as on writes', async () => {
    const documents = createInMemoryDocumentStore();
    const collection = documents.collection<{ n: number }>('things');
    const at = formatPosition(1n, 1n);
    for (const id of ['a\u0000b', '\ud800', 'x\udc00y', '', 'x'.repeat(501), 42 as unknown as string]) {
      const refused = (error: unknown) => error instanceof ValidationError && /Document id/.test(error.message);
      await assert.rejects(collection.get(id), refused, `get ${JSON.stringify(id)}`);
      await assert.rejects(collection.put(id, { n: 1 }, at), refused, `put ${JSON.stringify(id)}`);
      await assert.rejects(collection.delete(id, at), refused, `delete ${JSON.stringify(id)}`);
    }
    for (const after of ['\u0000', '\ud800', '']) await assert.rejects(collection.list({ after }), /after/);
    for (const limit of [Number.NaN, 0, -1, 1.5, Infinity]) await assert.rejects(collection.list({ limit }), /limit/);
    assert.equal(await documents.has('things'), false, 'refused writes create nothing');
    assert.equal(await collection.put('😀'.repeat(250), { n: 1 }, at), true, 'astral characters are well formed');
    assert.deepEqual(
      (await collection.list({ after: '😀' })).map((d) => d.id.length),
      [500],
    );
  });

  it('reads never create a collection; an unknown one is an UnknownCollectionError naming the known ones', async () => {
    const parts = setup();
    const ghost = parts.documents.collection('ghost');
    assert.equal(await ghost.get('x'), null);
    assert.deepEqual(await ghost.list(), []);
    assert.equal(await ghost.count(), 0);
    assert.equal(await parts.documents.has('ghost'), false);
    assert.deepEqual(await parts.documents.collections(''), []);

    // A projection that declares no collections serves those that exist.
    const undeclared = createAsyncProjection({ ...parts, projection: balances(), pollIntervalMs: 10 });
    await undeclared.start();
    try {
      await assert.rejects(
        undeclared.collection('balance'),
        (error: unknown) => error instanceof UnknownCollectionError && error.known.length === 0,
      );
      const { position } = await parts.store.append('account-1', [deposit(5)]);
      await undeclared.waitFor(position, { timeoutMs: 30_000 });
      assert.equal(await (await undeclared.collection<Balance>('balance')).count(), 1);
      for (const name of ['nope', 'constructor', 'to_string']) {
        await assert.rejects(
          undeclared.collection(name),
          (error: unknown) =>
            error instanceof UnknownCollectionError &&
            error.code === 'UNKNOWN_COLLECTION' &&
            error.known.join() === 'balance',
          name,
        );
      }
      await assert.rejects(undeclared.collection('__proto__'), ValidationError);
      assert.deepEqual(
        await parts.documents.collections(''),
        ['balances_v1_balance'],
        'reads of unknown names created nothing',
      );
    } finally {
      await undeclared.stop();
    }

    // A projection that declares its collections serves those, written or not yet, and no other.
    const declared = defineProjection({ ...balances(1), name: 'declared', collections: ['balance', 'history'] });
    const projection = createAsyncProjection({ ...setup(), projection: declared, pollIntervalMs: 10 });
    assert.equal(await (await projection.collection('history')).get('x'), null, 'declared and never written: empty');
    assert.deepEqual(await (await projection.collection('history')).list(), []);
    assert.equal(await projection.documents.has('declared_v1_history'), false, 'and still not created');
    await assert.rejects(
      projection.collection('balances'),
      (error: unknown) => error instanceof UnknownCollectionError && error.known.join() === 'balance,history',
    );

    // A handler that writes a collection its projection does not declare fails (its event is parked).
    const sloppy = defineProjection({
      name: 'sloppy',
      version: 1,
      collections: ['a'],
      handlers: { Deposited: async (_event, { documents }) => void (await documents('b').set('x', 1)) },
    });
    const sloppyParts = setup();
    const running = createAsyncProjection({
      ...sloppyParts,
      projection: sloppy,
      pollIntervalMs: 10,
      retry: { maxAttempts: 2, baseDelayMs: 1 },
    });
    await running.start();
    try {
      const { position } = await sloppyParts.store.append('account-1', [deposit(1)]);
      await running.waitFor(position, { timeoutMs: 30_000 });
      assert.match((await running.subscription.parked()).map((p) => p.error.message).join(), /no collection 'b'/);
      assert.equal(await sloppyParts.documents.has('sloppy_v1_b'), false);
    } finally {
      await running.stop();
    }

    for (const collections of [[], ['Bad'], ['a', 'a']])
      assert.throws(
        () => defineProjection({ ...balances(), collections }),
        ValidationError,
        JSON.stringify(collections),
      );
  });

  it('inline: the read model commits with the events, and a failing projection fails the append', async () => {
    const base = createInMemoryStore();
    const documents = createInMemoryDocumentStore();
    const failing = defineProjection({
      name: 'guard',
      version: 1,
      handlers: {
        Deposited: (event) => {
          if ((event.data as { amount: number }).amount < 0) throw new Error('negative deposit');
        },
      },
    });
    const store = withInlineProjections(base, [balances(), failing], documents, () => undefined);
    await store.append('account-1', [deposit(10)]);
    assert.deepEqual((await documents.collection('balances_v1_balance').get('account-1'))?.data, {
      balance: 10,
      movements: 1,
    });
    await assert.rejects(store.append('account-1', [deposit(-1)]), /negative deposit/);
    assert.equal((await base.streamInfo('account-1')).version, 1, 'the append was rolled back');
    await store.transaction(async (tx) => {
      await tx.append('account-1', [deposit(1)]);
      await tx.append('account-2', [deposit(2)]);
    });
    assert.equal(await documents.collection('balances_v1_balance').count(), 2);
  });

  it('live: folds on read', async () => {
    const { store } = setup();
    await store.append('account-1', [deposit(3), deposit(4)]);
    const live = await projectLive(store, balances());
    assert.deepEqual(await live.collection<Balance>('balance').get('account-1'), { balance: 7, movements: 2 });
  });

  it('rebuild: a new version builds from zero while the old one serves, then reads switch and old collections go', async () => {
    const parts = setup();
    const v1 = createAsyncProjection({ ...parts, projection: balances(1), pollIntervalMs: 10 });
    await v1.start();
    for (let i = 0; i < 50; i++) await parts.store.append(`account-${i % 5}`, [deposit(1)]);
    const head = await parts.store.append('account-0', [deposit(1)]);
    await v1.waitFor(head.position);
    await v1.stop();
    const progress: RebuildProgress[] = [];
    const v2 = createAsyncProjection({
      ...parts,
      projection: balances(2, 100),
      pollIntervalMs: 10,
      batchSize: 7,
      onProgress: (p) => progress.push(p),
    });
    const reader = await v1.collection<Balance>('balance');
    const starting = v2.start();
    assert.deepEqual(await reader.get('account-0'), { balance: 11, movements: 11 }, 'v1 serves during the rebuild');
    await parts.store.append('account-0', [deposit(1)]); // writes go on during the rebuild
    await starting;
    const last = await parts.store.append('account-0', [deposit(1)]);
    await v2.waitFor(last.position);
    const switched = await v1.collection<Balance>('balance');
    assert.deepEqual(
      await switched.get('account-0'),
      { balance: 1300, movements: 13 },
      'reads switched to v2, complete',
    );
    assert.equal(await parts.catalog.active('balances'), 2);
    assert.equal(await parts.documents.collection('balances_v1_balance').count(), 0, 'v1 collections dropped');
    assert.ok(progress.length >= 1);
    assert.equal(progress.at(-1)!.done, progress.at(-1)!.total);
    await v2.stop();
    await assert.rejects(
      createAsyncProjection({ ...parts, projection: balances(1) }).start(),
      /older than the serving v2/,
    );
  });
});
