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
  ValidationError,
  withInlineProjections,
  type ProjectionDefinition,
  type RebuildProgress,
} from 'eventline';

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
  return { store, subscriptions: createInMemorySubscriptionStore(store), documents: createInMemoryDocumentStore(), catalog: createInMemoryProjectionCatalog() };
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

  it('inline: the read model commits with the events, and a failing projection fails the append', async () => {
    const base = createInMemoryStore();
    const documents = createInMemoryDocumentStore();
    const failing = defineProjection({ name: 'guard', version: 1, handlers: { Deposited: (event) => {
      if ((event.data as { amount: number }).amount < 0) throw new Error('negative deposit');
    } } });
    const store = withInlineProjections(base, [balances(), failing], documents, () => undefined);
    await store.append('account-1', [deposit(10)]);
    assert.deepEqual((await documents.collection('balances_v1_balance').get('account-1'))?.data, { balance: 10, movements: 1 });
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
    const v2 = createAsyncProjection({ ...parts, projection: balances(2, 100), pollIntervalMs: 10, batchSize: 7, onProgress: (p) => progress.push(p) });
    const reader = await v1.collection<Balance>('balance');
    const starting = v2.start();
    assert.deepEqual(await reader.get('account-0'), { balance: 11, movements: 11 }, 'v1 serves during the rebuild');
    await parts.store.append('account-0', [deposit(1)]); // writes go on during the rebuild
    await starting;
    const last = await parts.store.append('account-0', [deposit(1)]);
    await v2.waitFor(last.position);
    const switched = await v1.collection<Balance>('balance');
    assert.deepEqual(await switched.get('account-0'), { balance: 1300, movements: 13 }, 'reads switched to v2, complete');
    assert.equal(await parts.catalog.active('balances'), 2);
    assert.equal(await parts.documents.collection('balances_v1_balance').count(), 0, 'v1 collections dropped');
    assert.ok(progress.length >= 1);
    assert.equal(progress.at(-1)!.done, progress.at(-1)!.total);
    await v2.stop();
    await assert.rejects(createAsyncProjection({ ...parts, projection: balances(1) }).start(), /older than the serving v2/);
  });
});
