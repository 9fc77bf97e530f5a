// tier: unit
import assert from 'node:assert/strict';
import { connect } from 'node:net';
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
} from '@eventline/core';
import { createHttpApi } from '@eventline/server';
import { until } from '@eventline/core/testing';

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
const Reset = defineCommand('Reset', z.object({ counterId: z.string().min(1) }));
const totals = defineProjection({
  name: 'counters',
  version: 1,
  handlers: {
    Added: async (event, { documents }) => {
      await documents<{ total: number }>('total').update(event.streamId.slice(8), (current) => ({
        total: (current?.total ?? 0) + (event.data as { by: number }).by,
      }));
    },
  },
});

describe('HTTP API', () => {
  const store = createInMemoryStore();
  const bus = createCommandBus({ middleware: defaultMiddleware(store) });
  bus.register(
    Add,
    createRepository(store, counter).handler((command) => command.data.counterId),
  );
  const other = createCommandBus({ middleware: defaultMiddleware(store) });
  other.register(
    Reset,
    async () =>
      ({ streamId: 'counter-x', version: 0, position: '0000000000000000/0000000000000000', events: [] }) as never,
  );
  const projection = createAsyncProjection({
    projection: totals,
    store,
    subscriptions: createInMemorySubscriptionStore(store),
    documents: createInMemoryDocumentStore(),
    catalog: createInMemoryProjectionCatalog(),
    pollIntervalMs: 10,
  });
  const app = createHttpApi({ store, buses: [bus, other], projections: { counters: projection }, maxWaitMs: 60_000 });
  before(() => projection.start());
  after(async () => {
    await projection.stop();
    await app.close();
  });
  const post = (type: string, payload: unknown, headers: Record<string, string> = {}) =>
    app.inject({
      method: 'POST',
      url: `/commands/${type}`,
      headers: { 'content-type': 'application/json', ...headers },
      payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
    });

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
    assert.deepEqual(
      (stream.json() as { events: Array<{ type: string }> }).events.map((e) => e.type),
      ['Added'],
    );
  });

  it('idempotency keys and correlation ids come from headers', async () => {
    const first = (
      await post('Add', { counterId: 'c2', by: 1 }, { 'idempotency-key': 'k1', 'x-correlation-id': 'corr-1' })
    ).json() as { version: number; events: Array<{ metadata: { correlationId: string } }> };
    const second = (await post('Add', { counterId: 'c2', by: 1 }, { 'idempotency-key': 'k1' })).json() as {
      version: number;
      duplicate?: boolean;
    };
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

  const problem = (response: Awaited<ReturnType<typeof app.inject>>, status: number, code: string, detail?: RegExp) => {
    assert.equal(response.statusCode, status, `${code}: ${response.body}`);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/, response.body);
    const body = response.json() as { code: string; detail: string; status: number };
    assert.equal(body.code, code, response.body);
    assert.equal(body.status, status);
    assert.ok(body.detail.length > 10, response.body);
    if (detail) assert.match(body.detail, detail);
    return body;
  };

  it('a read-your-writes wait times out with a 504 for a position a command returned but the projection has not reached', async () => {
    projection.subscription.pause();
    try {
      const { position } = (await post('Add', { counterId: 'w1', by: 1 })).json() as { position: string };
      problem(
        await app.inject({ url: `/read-models/counters/total/w1?position=${position}&timeoutMs=50` }),
        504,
        'WAIT_TIMEOUT',
        /did not reach/,
      );
    } finally {
      projection.subscription.resume();
    }
  });

  it('timeoutMs and every other query parameter are bounded by the route schema: a 400 naming the parameter', async () => {
    const { position } = (await post('Add', { counterId: 'q1', by: 1 })).json() as { position: string };
    const read = (query: string, path = '/read-models/counters/total/q1') => app.inject({ url: `${path}?${query}` });
    for (const value of [
      'abc',
      'Infinity',
      '-Infinity',
      '1e309',
      '1e12',
      '1e3',
      '-1',
      '60001',
      '1.5',
      '',
      'NaN',
      '0x10',
      ' 5',
      '99999999999999999999',
    ]) {
      problem(await read(`position=${position}&timeoutMs=${value}`), 400, 'VALIDATION', /timeoutMs/);
    }
    problem(
      await read(`position=${position}&timeoutMs=1&timeoutMs=2`),
      400,
      'VALIDATION',
      /'timeoutMs' is given more than once/,
    );
    problem(await read('timeoutMs=100'), 400, 'VALIDATION', /'timeoutMs' needs 'position'/);
    problem(await read(`position=${position}&position=${position}`), 400, 'VALIDATION', /position/);
    problem(await read('position=zz'), 400, 'VALIDATION', /position/);
    problem(await read('postion=x'), 400, 'VALIDATION', /'postion' is not one this route takes/);
    problem(
      await read('after=a', '/read-models/counters/total/q1'),
      400,
      'VALIDATION',
      /'after' is not one this route takes/,
    );
    for (const value of ['0', '1001', 'x', '-5', '1e3x'])
      problem(await read(`limit=${value}`, '/read-models/counters/total'), 400, 'VALIDATION', /limit/);
    problem(await read(`after=${'a'.repeat(501)}`, '/read-models/counters/total'), 400, 'VALIDATION', /after/);
    for (const query of [
      'from=-1',
      'from=abc',
      'from=9007199254740993',
      'limit=0',
      'limit=100000',
      'direction=sideways',
      'direction=forwards&direction=backwards',
      'x=1',
    ]) {
      problem(await read(query, '/streams/counter-q1'), 400, 'VALIDATION');
    }
    problem(
      await app.inject({
        method: 'POST',
        url: '/commands/Add?x=1',
        headers: { 'content-type': 'application/json' },
        payload: '{}',
      }),
      400,
      'VALIDATION',
      /'x'/,
    );
    // In range, they work.
    assert.equal((await read(`position=${position}&timeoutMs=10000`)).statusCode, 200);
    assert.equal((await read('limit=1000', '/read-models/counters/total')).statusCode, 200);
    assert.equal((await read('from=1&limit=1&direction=backwards', '/streams/counter-q1')).statusCode, 200);
  });

  it("a position at or after the store's next position was never returned: a 400, not a wait", async () => {
    const next = await store.nextPosition();
    problem(
      await app.inject({ url: `/read-models/counters/total/c1?position=${next}` }),
      400,
      'VALIDATION',
      /'position'.*never returned/,
    );
    problem(
      await app.inject({
        url: '/read-models/counters/total/c1?position=ffffffffffffffff/0000000000000000&timeoutMs=10000',
      }),
      400,
      'VALIDATION',
      /never returned/,
    );
  });

  it('a client that goes away mid-wait ends the wait: no waiter, listener or timer is left behind', async () => {
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = new URL(address);
    projection.subscription.pause();
    try {
      const { position } = (await post('Add', { counterId: 'gone', by: 1 })).json() as { position: string };
      const socket = connect({ host: '127.0.0.1', port: Number(port) });
      socket.on('error', () => undefined);
      await new Promise<void>((resolve) => socket.once('connect', resolve));
      socket.write(
        `GET /read-models/counters/total/gone?position=${position}&timeoutMs=60000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`,
      );
      await until(async () => (await projection.subscription.status()).waiting === 1, 'the request to start waiting');
      socket.destroy();
      await until(
        async () => (await projection.subscription.status()).waiting === 0,
        'the wait to end when its client went away',
      );
      const listeners = (projection.subscription as unknown as { progressListeners: Set<unknown> }).progressListeners;
      assert.equal(listeners.size, 0);
      assert.equal((await fetch(`${address}/health`)).status, 200);
    } finally {
      projection.subscription.resume();
    }
  });

  it('projection names are looked up as own names only: constructor, __proto__, toString are a 404', async () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
      problem(
        await app.inject({ url: `/read-models/${name}/total/c1` }),
        404,
        'NOT_FOUND',
        /No projection.*known: counters/,
      );
      problem(await app.inject({ url: `/read-models/${name}/total` }), 404, 'NOT_FOUND');
    }
  });

  it('an unknown collection is a 404 and creates nothing', async () => {
    problem(await app.inject({ url: '/read-models/counters/nope/c1' }), 404, 'UNKNOWN_COLLECTION', /known: total/);
    problem(await app.inject({ url: '/read-models/counters/constructor' }), 404, 'UNKNOWN_COLLECTION');
    problem(await app.inject({ url: '/read-models/counters/Bad%20Name/c1' }), 400, 'VALIDATION', /Collection name/);
    assert.equal(await projection.documents.has('counters_v1_nope'), false);
  });

  it('document ids with NUL are a 400', async () => {
    problem(await app.inject({ url: '/read-models/counters/total/a%00b' }), 400, 'VALIDATION', /NUL/);
    problem(await app.inject({ url: '/read-models/counters/total?after=%00' }), 400, 'VALIDATION', /NUL/);
  });

  it('stream ids of up to 255 characters, percent-encoded, are readable', async () => {
    for (const id of [`counter-${'x'.repeat(247)}`, `counter-${'é'.repeat(247)}`, `counter-${'😀'.repeat(123)}x`]) {
      assert.equal(id.length, 255);
      const response = await app.inject({ url: `/streams/${encodeURIComponent(id)}` });
      assert.equal(response.statusCode, 200, response.body);
      assert.equal((response.json() as { streamId: string }).streamId, id);
    }
    problem(
      await app.inject({ url: `/streams/counter-${'x'.repeat(248)}` }),
      400,
      'INVALID_STREAM_ID',
      /256 characters/,
    );
    problem(await app.inject({ url: `/streams/counter-${'x'.repeat(9000)}` }), 414, 'URI_TOO_LONG');
    problem(
      await app.inject({ url: `/streams/counter-${'%C3%A9'.repeat(500)}` }),
      400,
      'INVALID_STREAM_ID',
      /508 characters/,
    );
  });

  it('malformed URLs, unknown routes and methods, unreadable bodies: all problem+json with a code', async () => {
    problem(await app.inject({ url: '/streams/%zz' }), 400, 'MALFORMED_REQUEST', /percent|%/);
    problem(await app.inject({ url: '/%c0' }), 400, 'MALFORMED_REQUEST');
    problem(await app.inject({ url: '/read-models/counters/total/%ED%A0%80' }), 400, 'MALFORMED_REQUEST');
    problem(await app.inject({ url: '/nope' }), 404, 'NOT_FOUND', /POST \/commands\/:type/);
    const wrongMethod = await app.inject({ method: 'DELETE', url: '/streams/counter-c1' });
    problem(wrongMethod, 405, 'METHOD_NOT_ALLOWED', /GET/);
    assert.equal(wrongMethod.headers.allow, 'GET, HEAD');
    problem(await app.inject({ method: 'GET', url: '/commands/Add' }), 405, 'METHOD_NOT_ALLOWED', /POST/);
    problem(await app.inject({ method: 'POST', url: '/health' }), 405, 'METHOD_NOT_ALLOWED');
    problem(
      await app.inject({
        method: 'POST',
        url: '/commands/Add',
        headers: { 'content-type': 'text/plain' },
        payload: '{}',
      }),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
      /application\/json/,
    );
    problem(
      await app.inject({
        method: 'POST',
        url: '/commands/Add',
        headers: { 'content-type': 'application/json; charset=utf-16' },
        payload: '{}',
      }),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
      /UTF-8/,
    );
    problem(
      await app.inject({
        method: 'POST',
        url: '/commands/Add',
        headers: { 'content-type': 'application/json' },
        payload: '',
      }),
      400,
      'MALFORMED_REQUEST',
      /empty/,
    );
    problem(await post('Add', '{"counterId": "c9", "by": 1}}'), 400, 'MALFORMED_REQUEST', /not valid JSON/);
    problem(await post('Add', `{"counterId": "${'x'.repeat(2 * 1024 * 1024)}", "by": 1}`), 413, 'PAYLOAD_TOO_LARGE');
    problem(
      await post('Add', '{"__proto__": {"admin": true}, "counterId": "c9", "by": 1}'),
      400,
      'MALFORMED_REQUEST',
      /__proto__/,
    );
    problem(
      await post('Add', '{"\\u005f_proto__": {}, "counterId": "c9", "by": 1}'),
      400,
      'MALFORMED_REQUEST',
      /__proto__/,
    );
    problem(
      await post('Add', '{"constructor": {"prototype": {}}, "counterId": "c9", "by": 1}'),
      400,
      'MALFORMED_REQUEST',
      /prototype/,
    );
  });

  it('bodies nested deeper than the limit are a 400 that says so, however deep', async () => {
    for (const depth of [101, 10_000, 100_000]) {
      problem(
        await post('Add', `${'['.repeat(depth)}${']'.repeat(depth)}`),
        400,
        'MALFORMED_REQUEST',
        /deeper than 100 levels/,
      );
      problem(
        await post('Add', `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`),
        400,
        'MALFORMED_REQUEST',
        /deeper than 100/,
      );
    }
    // 100 levels (the body's object and 99 arrays in it) are read; the command's schema then drops the unknown key.
    assert.equal(
      (await post('Add', `{"counterId":"c9","by":1,"x":${'['.repeat(99)}${']'.repeat(99)}}`)).statusCode,
      200,
    );
  });

  it('numbers a JSON body cannot carry exactly are refused by name', async () => {
    problem(await post('Add', '{"counterId": "c9", "by": 1e309}'), 400, 'MALFORMED_REQUEST', /1e309.*out of range/);
    problem(
      await post('Add', '{"counterId": "c9", "by": 9007199254740993}'),
      400,
      'MALFORMED_REQUEST',
      /9007199254740993.*string/,
    );
    problem(await post('Add', '{"counterId": "c9", "by": -0}'), 400, 'VALIDATION');
  });

  it('an unknown command type lists the types of every bus', async () => {
    const body = problem(await post('Nope', {}), 404, 'UNKNOWN_COMMAND', /known: Add, Reset/);
    assert.ok(body.detail.includes('Reset'));
    problem(await post('constructor', {}), 404, 'UNKNOWN_COMMAND', /known: Add, Reset/);
    problem(await post('x'.repeat(201), {}), 400, 'VALIDATION', /type/);
  });

  it('command headers are checked: Idempotency-Key, X-Correlation-Id and traceparent', async () => {
    for (const [name, value] of [
      ['idempotency-key', 'x'.repeat(201)],
      ['idempotency-key', 'a b'],
      ['idempotency-key', ''],
      ['idempotency-key', 'k\u0000'],
      ['x-correlation-id', 'é'],
      ['x-correlation-id', 'x'.repeat(201)],
      ['traceparent', 'nope'],
      ['traceparent', '00-00000000000000000000000000000000-0000000000000000-01'],
    ] as const) {
      problem(
        await post('Add', { counterId: 'h1', by: 1 }, { [name]: value }),
        400,
        'VALIDATION',
        new RegExp(`Header '${name}'`),
      );
    }
    const traced = (
      await post(
        'Add',
        { counterId: 'h1', by: 1 },
        { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
      )
    ).json() as { events: Array<{ metadata: { traceparent: string } }> };
    assert.equal(traced.events[0]!.metadata.traceparent, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
  });
});
