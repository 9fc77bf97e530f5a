// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import {
  categoryOf,
  comparePositions,
  ConcurrencyError,
  createInMemoryStore,
  defineEvent,
  eventRegistry,
  formatPosition,
  InvalidStreamIdError,
  isPosition,
  MAX_JSON_DEPTH,
  parsePosition,
  START,
  streamId,
  ValidationError,
  type EventOf,
} from '@eventline/core';
import { assertStreamId, jsonIssues, prepareAppend, positionBeforeTransaction } from '@eventline/core/backend';

describe('stream ids', () => {
  it('split into category and id at the first dash', () => {
    assert.equal(categoryOf('account-42'), 'account');
    assert.equal(categoryOf('payment-0193b7e2-aa7c-7c1e-9d3e-0e5a0c6d1f00'), 'payment');
    assert.equal(streamId('account', 42), 'account-42');
    assert.equal(assertStreamId('guest_list-main'), 'guest_list-main');
  });

  it('name the rule that was broken', () => {
    assert.throws(
      () => assertStreamId('account'),
      (error: unknown) => error instanceof InvalidStreamIdError && /no '-'/.test(error.message),
    );
    assert.throws(() => streamId('9lives', 'x'), /category '9lives'/);
  });
});

describe('positions', () => {
  it('order as strings in (transaction, sequence) order', () => {
    const a = formatPosition(5n, 100n);
    const b = formatPosition(6n, 2n);
    assert.ok(a < b && comparePositions(a, b) === -1);
    assert.deepEqual(parsePosition(b), { transaction: 6n, sequence: 2n });
    assert.ok(START < a);
    assert.ok(positionBeforeTransaction(6n) > a && positionBeforeTransaction(6n) < b);
    assert.equal(positionBeforeTransaction(0n), START);
    assert.ok(isPosition(a) && !isPosition('42'));
    assert.throws(() => parsePosition('nope'), TypeError);
  });
});

describe('JSON checks', () => {
  it('accept plain JSON and report every path that is not', () => {
    assert.deepEqual(jsonIssues({ a: [1, 'x', null, { b: true }], c: undefined }), []);
    const issues = jsonIssues({ a: [1, NaN], d: new Date(0), n: 1n });
    assert.deepEqual(
      issues.map((issue) => issue.path),
      [['a', 1], ['d'], ['n']],
    );
  });

  it('find cycles, holes, NUL and lone surrogates in values and keys, nesting past the limit, and accept shared objects', () => {
    const cycle: Record<string, unknown> = { a: { b: [1] } };
    (cycle.a as { b: unknown[] }).b.push(cycle);
    assert.deepEqual(jsonIssues(cycle, ['data']), [{ path: ['data', 'a', 'b', 1], message: 'circular reference' }]);
    const holed = [1, 2, 3];
    delete holed[1]; // a hole: JSON.stringify would write null, so it would not come back as it went in
    assert.deepEqual(
      jsonIssues({ list: holed }).map((issue) => issue.path),
      [['list', 1]],
    );
    assert.deepEqual(
      jsonIssues({ 'k\u0000': 1, ok: 'a\ud800', [`\udc00`]: 2 }).map((issue) => [
        issue.path,
        issue.message.split(' ')[0],
      ]),
      [
        [['k\u0000'], 'keys'],
        [['ok'], 'strings'],
        [['\udc00'], 'strings'],
      ],
    );
    const nest = (levels: number) => {
      let deep: unknown = 'leaf';
      for (let i = 0; i < levels; i++) deep = i % 2 === 0 ? [deep] : { next: deep };
      return deep;
    };
    assert.deepEqual(jsonIssues(nest(MAX_JSON_DEPTH)), [], 'nesting up to the limit is JSON');
    const tooDeep = jsonIssues(nest(MAX_JSON_DEPTH + 1), ['data']);
    assert.equal(tooDeep.length, 1);
    assert.match(tooDeep[0]!.message, new RegExp(`nested more than ${MAX_JSON_DEPTH} levels`));
    assert.deepEqual(tooDeep[0]!.path.slice(0, 3), ['data', 0, 'next'], 'the path says where, cut short');
    assert.ok(tooDeep[0]!.path.length <= 10);
    assert.equal(jsonIssues(nest(300_000)).length, 1, 'however deep, one issue and no stack overflow');
    const shared = { x: 1 };
    assert.deepEqual(jsonIssues({ a: shared, b: [shared, shared] }), []);
    assert.deepEqual(jsonIssues(Object.assign(Object.create(null) as object, { a: 1 })), []);
  });
});

describe('prepared metadata', () => {
  const metadataOf = async (
    metadata: object | undefined,
    registry?: Parameters<typeof prepareAppend>[3]['registry'],
  ) => {
    const { events } = await prepareAppend(
      'account-1',
      [{ type: 'AccountOpened', data: { owner: 'Ada' }, ...(metadata ? { metadata } : {}) }],
      undefined,
      { registry },
    );
    return events[0]!.metadataJson;
  };

  it("is the metadata as JSON with schemaVersion set: last when new, in place when given, the definition's when it has one", async () => {
    assert.equal(await metadataOf(undefined), '{"schemaVersion":1}');
    assert.equal(await metadataOf({}), '{"schemaVersion":1}');
    assert.equal(await metadataOf({ skipped: undefined }), '{"schemaVersion":1}');
    assert.equal(
      await metadataOf({ correlationId: 'c', nested: { a: [1, null] } }),
      '{"correlationId":"c","nested":{"a":[1,null]},"schemaVersion":1}',
    );
    assert.equal(await metadataOf({ schemaVersion: 2, actor: 'ada' }), '{"schemaVersion":2,"actor":"ada"}');
    const AccountOpened = defineEvent('AccountOpened', z.object({ owner: z.string() }), { schemaVersion: 3 });
    const registry = eventRegistry([AccountOpened]);
    assert.equal(await metadataOf({ schemaVersion: 1, actor: 'ada' }, registry), '{"schemaVersion":3,"actor":"ada"}');
    assert.equal(await metadataOf({ actor: 'ada' }, registry), '{"actor":"ada","schemaVersion":3}');
    for (const bad of [0, 1.5, '2'])
      await assert.rejects(metadataOf({ schemaVersion: bad }), /schemaVersion must be a whole number/);
  });
});

describe('event definitions with zod', () => {
  const AccountOpened = defineEvent(
    'AccountOpened',
    z.object({ owner: z.string(), currency: z.string().default('EUR') }),
    { schemaVersion: 3 },
  );

  it('infer the data type and validate on append', async () => {
    const store = createInMemoryStore({ events: eventRegistry([AccountOpened]) });
    await store.append('account-1', [AccountOpened.create({ owner: 'Ada' })]);
    for await (const event of store.readStream('account-1')) {
      assert.ok(AccountOpened.is(event));
      const typed: EventOf<typeof AccountOpened> = event;
      assert.equal(typed.data.currency, 'EUR');
      assert.equal(typed.metadata.schemaVersion, 3);
    }
    await assert.rejects(store.append('account-1', [AccountOpened.create({ owner: 7 } as never)]), (error: unknown) => {
      assert.ok(error instanceof ValidationError);
      assert.deepEqual(error.issues[0]?.path, ['owner']);
      return true;
    });
  });

  it('refuse bad type names, non-schemas and duplicate registrations', () => {
    assert.throws(() => defineEvent('account opened', z.object({})), ValidationError);
    assert.throws(() => defineEvent('X', {} as never), /Standard Schema/);
    assert.throws(() => defineEvent('X', z.null(), { schemaVersion: 0 }), /schemaVersion/);
    assert.throws(() => eventRegistry([AccountOpened, AccountOpened]), /twice/);
  });

  it('a non-strict registry lets unknown types through unvalidated', async () => {
    const store = createInMemoryStore({ events: eventRegistry([AccountOpened], { strict: false }) });
    await store.append('account-1', [{ type: 'Anything', data: { x: 1 } }]);
    assert.equal((await store.streamInfo('account-1')).version, 1);
  });
});

describe('errors', () => {
  it('carry a code, the input and an actionable message, and serialise', () => {
    const error = new ConcurrencyError('account-1', 3, 5);
    assert.equal(error.name, 'ConcurrencyError');
    assert.match(error.message, /expected to be at version 3 but is at version 5/);
    assert.match(error.message, /Reload/);
    assert.deepEqual(JSON.parse(JSON.stringify(error)), {
      name: 'ConcurrencyError',
      code: 'CONCURRENCY',
      message: error.message,
      streamId: 'account-1',
      expected: 3,
      actual: 5,
    });
  });
});

describe('upcasting configuration is checked when defined', () => {
  const schema = z.object({});
  it('a gap in the upcaster chain names the type and the missing step', () => {
    assert.throws(
      () => defineEvent('AccountOpened', schema, { schemaVersion: 4, upcasters: { 1: (d) => d, 3: (d) => d } }),
      /AccountOpened.*no upcaster from v2 to v3/,
    );
    assert.throws(
      () => defineEvent('AccountOpened', schema, { schemaVersion: 2, upcasters: { 2: (d) => d } }),
      /AccountOpened.*current schema version is v2/,
    );
  });
  it('rename cycles and duplicate renames name the type', () => {
    const a = defineEvent('A', schema, { renamedFrom: ['B'] });
    const b = defineEvent('B', schema, { renamedFrom: ['A'] });
    assert.throws(() => eventRegistry([a, b]), /'A'.*renamed from 'B', which is itself a registered type/);
    assert.throws(() => defineEvent('A', schema, { renamedFrom: ['A'] }), /cycle/);
    const c = defineEvent('C', schema, { renamedFrom: ['Old'] });
    const d = defineEvent('D', schema, { renamedFrom: ['Old'] });
    assert.throws(() => eventRegistry([c, d]), /'D'.*'Old' is already renamed to 'C'/);
  });
  it('an event of the current name stored at v1 is upcast to the current version', () => {
    const registry = eventRegistry([
      defineEvent('Deposited', schema, {
        schemaVersion: 3,
        upcasters: {
          1: (d: { amt: number }) => ({ amount: d.amt }),
          2: (d: { amount: number }) => ({ ...d, currency: 'EUR' }),
        },
      }),
    ]);
    const stored = {
      id: '0',
      type: 'Deposited',
      streamId: 'account-1',
      version: 1,
      position: START,
      recordedAt: new Date(),
      data: { amt: 5 },
      metadata: { schemaVersion: 1 },
    };
    assert.deepEqual(registry.upcast(stored).data, { amount: 5, currency: 'EUR' });
    assert.equal(registry.upcast(stored).metadata.schemaVersion, 3);
    const current = { ...stored, data: { amount: 1, currency: 'USD' }, metadata: { schemaVersion: 3 } };
    assert.equal(registry.upcast(current), current, 'events already current are returned as they are');
  });
});
