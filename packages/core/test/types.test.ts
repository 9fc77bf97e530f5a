// tier: unit
// Type-level tests of the public API: what it infers, and what it refuses. `npm run typecheck` compiles this file, so
// an inference that changes, or a refusal that no longer fails (an unused `@ts-expect-error`), fails CI; `npm test`
// runs it, which checks that the values it builds are what the types say.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import {
  createCommand,
  defineAggregate,
  defineCommand,
  defineEvent,
  defineProjection,
  eventRegistry,
  type Aggregate,
  type Command,
  type CommandOf,
  type EventData,
  type EventInput,
  type EventInputOf,
  type EventOf,
  type EventRegistry,
  type ProjectionContext,
  type ProjectionDefinition,
  type ProjectionDocuments,
  type RecordedEvent,
} from '@eventline/core';

/** True when A and B are the same type (not merely assignable either way). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only when `T` is `true`. */
function expectType<T extends true>(): T | void {}
/** Type-checks what it is given, and never runs it: the refusals below are compiled, not executed. */
function refused(_statements: () => unknown): void {}

const Opened = defineEvent('Opened', z.object({ owner: z.string(), limit: z.number().default(0) }));
const Deposited = defineEvent('Deposited', z.object({ amount: z.number() }));
const Open = defineCommand('Open', z.object({ id: z.string(), owner: z.string() }));
const Deposit = defineCommand('Deposit', z.object({ id: z.string(), amount: z.number() }));

type AccountEvent = EventInputOf<typeof Opened | typeof Deposited>;
type AccountCommand = CommandOf<typeof Open | typeof Deposit>;
interface Account {
  readonly open: boolean;
  readonly balance: number;
}

describe('public types', () => {
  it('defineEvent: the type name as a literal, data from the schema (input for create, output once recorded)', () => {
    expectType<Equal<typeof Opened.type, 'Opened'>>();
    expectType<Equal<EventData<typeof Opened>, { owner: string; limit: number }>>();
    // The schema's input: a field with a default may be left out when creating, and is there once parsed.
    const input = Opened.create({ owner: 'Ada' });
    expectType<Equal<typeof input, EventInput<'Opened', { owner: string; limit: number }>>>();
    expectType<Equal<EventOf<typeof Opened>, RecordedEvent<'Opened', { owner: string; limit: number }>>>();
    // Over a union of definitions, a union of events, discriminated by type.
    expectType<
      Equal<
        EventOf<typeof Opened | typeof Deposited>,
        RecordedEvent<'Opened', { owner: string; limit: number }> | RecordedEvent<'Deposited', { amount: number }>
      >
    >();
    const recorded = {} as RecordedEvent;
    if (Deposited.is(recorded)) expectType<Equal<typeof recorded.data, { amount: number }>>();

    refused(() => {
      // @ts-expect-error: data of the wrong shape
      Opened.create({ owner: 42 });
      // @ts-expect-error: a required field missing
      Deposited.create({});
      // @ts-expect-error: a field the schema does not have
      Deposited.create({ amount: 1, currency: 'EUR' });
      // @ts-expect-error: the schema must be a Standard Schema validator
      defineEvent('Closed', { parse: () => ({}) });
    });
    assert.equal(input.type, 'Opened');
  });

  it('defineCommand and createCommand: the type literal and the data type', () => {
    expectType<Equal<typeof Open.type, 'Open'>>();
    const open = Open.create({ id: '1', owner: 'Ada' }, { idempotencyKey: 'k' });
    expectType<Equal<typeof open, Command<'Open', { id: string; owner: string }>>>();
    assert.equal(open.metadata.idempotencyKey, 'k');
    expectType<
      Equal<
        AccountCommand,
        Command<'Open', { id: string; owner: string }> | Command<'Deposit', { id: string; amount: number }>
      >
    >();
    const plain = createCommand('Rename', { name: 'Bob' });
    expectType<Equal<typeof plain, Command<'Rename', { name: string }>>>();
    const command = {} as Command;
    if (Deposit.is(command)) expectType<Equal<typeof command.data.amount, number>>();

    refused(() => {
      // @ts-expect-error: data of the wrong shape
      Open.create({ id: '1', owner: null });
      // @ts-expect-error: an option that does not exist
      Open.create({ id: '1', owner: 'Ada' }, { key: 'k' });
      // @ts-expect-error: metadata values are JSON
      createCommand('Rename', {}, { metadata: { at: new Date() } });
    });
    assert.equal(plain.type, 'Rename');
  });

  it('eventRegistry takes event definitions only', () => {
    const registry = eventRegistry([Opened, Deposited], { strict: true });
    expectType<Equal<typeof registry, EventRegistry>>();
    refused(() => {
      // @ts-expect-error: a bare event input is not a definition
      eventRegistry([Opened.create({ owner: 'Ada' })]);
      // @ts-expect-error: strict is a boolean
      eventRegistry([Opened], { strict: 'yes' });
    });
    assert.deepEqual(registry.types(), ['Deposited', 'Opened']);
  });

  it('defineAggregate: state, command and event unions from decide and evolve', () => {
    const account = defineAggregate({
      category: 'account',
      initialState: (): Account => ({ open: false, balance: 0 }),
      decide(command: AccountCommand, state: Account): AccountEvent | AccountEvent[] {
        if (Open.is(command)) return state.open ? [] : Opened.create({ owner: command.data.owner });
        return [Deposited.create({ amount: command.data.amount })];
      },
      evolve(state: Account, event: AccountEvent): Account {
        switch (event.type) {
          case 'Opened':
            return { ...state, open: true };
          case 'Deposited':
            expectType<Equal<typeof event.data, { amount: number }>>();
            return { ...state, balance: state.balance + event.data.amount };
        }
      },
    });
    expectType<Equal<typeof account, Aggregate<Account, AccountCommand, AccountEvent>>>();
    expectType<Equal<Parameters<typeof account.evolve>[1], AccountEvent>>();
    expectType<Equal<Parameters<typeof account.decide>[0], AccountCommand>>();

    refused(() => {
      // Inferred, the unions must agree: an event decide returns that evolve does not take is refused.
      defineAggregate({
        category: 'account',
        initialState: (): Account => ({ open: false, balance: 0 }),
        decide: (_command: AccountCommand) => [{ type: 'Closed' as const, data: {} }],
        // @ts-expect-error: evolve does not take the 'Closed' event decide returns
        evolve: (state: Account, _event: AccountEvent) => state,
      });

      // With the unions given, decide and evolve are checked against them.
      defineAggregate<Account, AccountCommand, AccountEvent>({
        category: 'account',
        initialState: () => ({ open: false, balance: 0 }),
        // @ts-expect-error: decide returns an event that is not in the union
        decide: () => [{ type: 'Closed', data: {} }],
        evolve: (state) => state,
      });
      defineAggregate<Account, AccountCommand, AccountEvent>({
        category: 'account',
        initialState: () => ({ open: false, balance: 0 }),
        // @ts-expect-error: an event of the union with data of the wrong shape
        decide: () => ({ type: 'Deposited', data: { amount: '10' } }),
        evolve: (state) => state,
      });
      defineAggregate<Account, AccountCommand, AccountEvent>({
        category: 'account',
        initialState: () => ({ open: false, balance: 0 }),
        decide: () => [],
        // @ts-expect-error: evolve returns something that is not the state
        evolve: () => ({ open: 'yes' }),
      });
      defineAggregate<Account, AccountCommand, AccountEvent>({
        category: 'account',
        // @ts-expect-error: the initial state is not the state
        initialState: () => ({ balance: 0 }),
        decide: () => [],
        evolve: (state) => state,
      });
      defineAggregate<Account, AccountCommand, AccountEvent>({
        category: 'account',
        initialState: () => ({ open: false, balance: 0 }),
        decide(command) {
          // @ts-expect-error: a command type that is not in the union
          if (command.type === 'Close') return [];
          return [];
        },
        evolve: (state) => state,
      });
    });
    assert.equal(account.category, 'account');
  });

  it('defineProjection: handlers get recorded events and typed documents; the transaction type is inferred', () => {
    interface Balance {
      readonly amount: number;
    }
    const balances = defineProjection({
      name: 'balances',
      version: 1,
      collections: ['balance'],
      handlers: {
        Deposited: async (event, { documents }) => {
          expectType<Equal<typeof event, RecordedEvent>>();
          const balance = documents<Balance>('balance');
          expectType<Equal<typeof balance, ProjectionDocuments<Balance>>>();
          await balance.update(event.streamId, (current) => ({ amount: (current?.amount ?? 0) + 1 }));
          // @ts-expect-error: a document of the wrong shape
          await balance.set(event.streamId, { amount: '1' });
        },
      },
    });
    expectType<Equal<typeof balances, ProjectionDefinition<unknown>>>();

    interface Sql {
      query(text: string): Promise<void>;
    }
    const audited = defineProjection({
      name: 'audit',
      version: 2,
      handlers: { Opened: (_event, context: ProjectionContext<Sql>) => context.tx.query('select 1') },
    });
    expectType<Equal<typeof audited, ProjectionDefinition<Sql>>>();
    assert.equal(audited.version, 2);

    refused(() => {
      // @ts-expect-error: the version is a number
      defineProjection({ name: 'bad', version: '1', handlers: { Opened: () => undefined } });
      // @ts-expect-error: a handler is a function of the event
      defineProjection({ name: 'bad', version: 1, handlers: { Opened: 'apply' } });
      // @ts-expect-error: collections are names
      defineProjection({ name: 'bad', version: 1, collections: [1], handlers: { Opened: () => undefined } });
    });
    assert.equal(balances.name, 'balances');
  });
});
