/**
 * The write side fed hostile input through its public API: every refusal is a typed EventlineError with a message,
 * never a TypeError or RangeError, and nothing is stored.
 */
// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import {
  createCommand,
  createCommandBus,
  createInMemoryStore,
  createRepository,
  defaultMiddleware,
  defineAggregate,
  defineCommand,
  EventlineError,
  MAX_JSON_DEPTH,
  type Command,
  type CommandOf,
} from '@eventline/core';

const Note = defineCommand('Note', z.object({ id: z.string(), text: z.unknown() }));
const notebook = defineAggregate<{ notes: number }, CommandOf<typeof Note>, { type: 'Noted'; data: { text: unknown } }>(
  {
    category: 'note',
    initialState: () => ({ notes: 0 }),
    decide: (command) => [{ type: 'Noted', data: { text: command.data.text } }],
    evolve: (state) => ({ notes: state.notes + 1 }),
  },
);

function setup() {
  const store = createInMemoryStore();
  const notes = createRepository(store, notebook);
  const bus = createCommandBus({ middleware: defaultMiddleware(store) });
  bus.register(
    Note,
    notes.handler((command) => command.data.id),
  );
  const count = async () => {
    let n = 0;
    for await (const _ of store.readAll()) n++;
    return n;
  };
  return { store, bus, notes, count };
}

async function refusal(promise: Promise<unknown>): Promise<EventlineError> {
  const error = await promise.then(
    () => assert.fail('expected a refusal'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof EventlineError, `a typed error, got ${String(error)}`);
  assert.ok(error.message.length > 20 && error.message.length < 3000, error.message);
  return error;
}

const deep = (levels: number) => {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = { v: value };
  return value;
};

describe('hostile input on the write side', () => {
  it('aggregate ids that make no stream id are refused before anything is read or stored', async () => {
    const { bus, count } = setup();
    for (const id of ['', 'a b', 'x\ud800', 'x\udfffy', 'nul\u0000', 'tab\t', 'x'.repeat(300), '\u202e\u0000']) {
      const error = await refusal(bus.dispatch(Note.create({ id, text: 'hi' })));
      assert.equal(error.code, 'INVALID_STREAM_ID');
    }
    assert.equal(await count(), 0);
  });

  it('commands that are not commands: null, wrong shapes, bigint ids, null metadata, prototype names', async () => {
    const { bus, count } = setup();
    const bad: unknown[] = [
      null,
      42,
      'Note',
      { type: 1 },
      { id: 10n, type: 'Note', data: {}, metadata: {} },
      { id: createCommand('Note', {}).id, type: 'Note', data: { id: '1', text: 'x' }, metadata: null },
      { id: createCommand('Note', {}).id, type: 'Note', data: { id: '1', text: 'x' }, metadata: [] },
      createCommand('__proto__', {}),
      createCommand('constructor', {}),
      createCommand('toString', {}),
    ];
    for (const command of bad) await refusal(bus.dispatch(command as Command));
    assert.throws(
      () => createCommand('Note', {}, { id: 10n as never }),
      (e: unknown) => e instanceof EventlineError && /UUID/.test(e.message),
    );
    assert.equal(await count(), 0);
  });

  it('data that is not JSON or too deep, also under an idempotency key, is a ValidationError', async () => {
    const { bus, count } = setup();
    for (const text of [
      10n,
      Symbol('s'),
      () => 1,
      new Date(),
      deep(MAX_JSON_DEPTH + 1),
      deep(100_000),
      'lone \ud800',
      'nul \u0000',
      NaN,
    ]) {
      await refusal(bus.dispatch(Note.create({ id: '1', text })));
      await refusal(bus.dispatch(Note.create({ id: '1', text }, { idempotencyKey: 'k-1' })));
    }
    assert.equal(await count(), 0);
  });

  it('metadata with hostile keys and values, and idempotency keys of every wrong kind', async () => {
    const { bus, count } = setup();
    // The metadata the events carry (correlation, trace, tenant, actor) is checked like the events' own.
    for (const metadata of [
      { correlationId: 'x\ud800' },
      { tenant: 'a\u0000' },
      { actor: 10n },
      { traceparent: deep(5000) },
    ]) {
      await refusal(bus.dispatch(Note.create({ id: '1', text: 'x' }, { metadata: metadata as never })));
    }
    for (const key of [10n, 42, {}, '', ' ', 'a\u0000', 'b\udc00', 'k'.repeat(201)]) {
      await refusal(bus.dispatch(Note.create({ id: '1', text: 'x' }, { idempotencyKey: key as string })));
    }
    assert.equal(await count(), 0);
  });

  it('after all of it, the same bus still handles a good command', async () => {
    const { bus, notes } = setup();
    await refusal(bus.dispatch(null as never));
    await bus.dispatch(
      Note.create({ id: '1', text: JSON.parse('{"__proto__":{"polluted":1}}') }, { idempotencyKey: 'ok' }),
    );
    assert.equal((await notes.load('1')).state.notes, 1);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });
});
