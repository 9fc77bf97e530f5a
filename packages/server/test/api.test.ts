import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import {
  createAsyncProjection,
  createCommandBus,
  createInMemoryDocumentStore,
  createInMemoryProjectionCatalog,
  createInMemoryStore,
  createInMemorySubscriptionStore,
  createRepository,
  defaultMiddleware,
  defineAggregate,
  defineCommand,
  defineProjection,
  DomainError,
  type CommandOf,
} from 'eventline';
import { createHttpApi } from '@eventline/server';

const Add = defineCommand('Add', z.object({ counterId: z.string().min(1), by: z.number().int().positive() }));
const counter = defineAggregate<{ total: number }, CommandOf<typeof Add>, { type: 'Added'; data: { by: number } }>({
  category: 'counter',
  initialState: () => ({ total: 0 }),
  decide: (command, state) => {
    if (state.total + command.data.by > 100) throw new DomainError('a counter stops at 100', 'COUNTER_FULL');
    return [{ type: 'Added', data: { by: command.data.by } }];
  },
  evolve: (state, event) => ({ total: state.total + event.data.by }),
});
const totals = defineProjection({
  name: 'counters',
  version: 1,
  handlers: {
    Added: async (event, { documents }) => {
      await documents<{ total: number }>('total').update(event.streamId.slice(8), (current) => ({ total: (current?.total ?? 0) + (event.data as { by: number }).by }));
    },
  },
});

describe('HTTP API', () => {
  const store = createInMemoryStore();
  const bus = createCommandBus({ middleware: defaultMiddleware(store) });
  bus.register(Add, createRepository(store, counter).handler((command) => command.data.counterId));
  const projection = createAsyncProjection({ projection: totals, store, subscriptions: createInMemorySubscriptionStore(store), documents: createInMemoryDocumentStore(), catalog: createInMemoryProjectionCatalog(), pollIntervalMs: 10 });
  const app = createHttpApi({ store, buses: [bus], projections: { counters: projection } });
  before(() => projection.start());
  after(async () => {
    await projection.stop();
    await app.close();
  });
  const post = (type: string, payload: unknown, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: `/commands/${type}`, headers: { 'content-type': 'application/json', ...headers }, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) });

  it('a command, then its read model, fresh thanks to the position', async () => {
    const response = await post('Add', { counterId: 'c1', by: 5 });
    assert.equal(response.statusCode, 200);
    const result = response.json() as { streamId: string; version: number; position: string };
    assert.equal(result.streamId, 'counter-c1');
    const read = await app.inject({ url: `/read-models/counters/total/c1?position=${result.position}` });
    assert.equal(read.statusCode, 200);
    assert.deepEqual(read.json(), { total: 5 });
    const list = await app.inject({ url: `/read-models/counters/total?position=${result.position}` });
    assert.equal((list.json() as { items: unknown[] }).items.length, 1);
    const stream = await app.inject({ url: '/streams/counter-c1' });
    assert.deepEqual((stream.json() as { events: Array<{ type: string }> }).events.map((e) => e.type), ['Added']);
  });

  it('idempotency keys and correlation ids come from headers', async () => {
    const first = (await post('Add', { counterId: 'c2', by: 1 }, { 'idempotency-key': 'k1', 'x-correlation-id': 'corr-1' })).json() as { version: number; events: Array<{ metadata: { correlationId: string } }> };
    const second = (await post('Add', { counterId: 'c2', by: 1 }, { 'idempotency-key': 'k1' })).json() as { version: number; duplicate?: boolean };
    assert.equal(first.events[0]!.metadata.correlationId, 'corr-1');
    assert.deepEqual([second.version, second.duplicate], [first.version, true]);
  });

  it('errors are problem+json with a code and a status a client can act on', async () => {
    const cases: Array<[Awaited<ReturnType<typeof post>>, number, string]> = [
      [await post('Add', '{"counterId": "c3", "by": ', {}), 400, 'MALFORMED_REQUEST'],
      [await post('Add', { counterId: '', by: 1 }), 400, 'VALIDATION'],
      [await post('Nope', {}), 404, 'UNKNOWN_COMMAND'],
      [await post('Add', { counterId: 'c3', by: 101 }), 422, 'DOMAIN_RULE'],
      [await app.inject({ url: '/streams/bad id' }), 400, 'INVALID_STREAM_ID'],
      [await app.inject({ url: '/read-models/counters/total/none' }), 404, 'NOT_FOUND'],
      [await app.inject({ url: '/read-models/counters/total/c1?position=nope' }), 400, 'VALIDATION'],
      [await app.inject({ url: '/read-models/counters/total/c1?position=ffffffffffffffff/0000000000000000&timeoutMs=50' }), 504, 'WAIT_TIMEOUT'],
    ];
    for (const [response, status, code] of cases) {
      assert.equal(response.statusCode, status, `${code}: ${response.body}`);
      assert.match(String(response.headers['content-type']), /application\/problem\+json/);
      const problem = response.json() as { code: string; detail: string; status: number };
      assert.equal(problem.code, code);
      assert.equal(problem.status, status);
      assert.ok(problem.detail.length > 10);
    }
    const rule = (await post('Add', { counterId: 'c3', by: 101 })).json() as { rule: string };
    assert.equal(rule.rule, 'COUNTER_FULL');
    assert.equal((await store.streamInfo('counter-c3')).exists, false, 'nothing half-written');
  });
});
