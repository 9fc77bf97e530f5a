// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import {
  aggregateFromClass,
  commandHooks,
  ConcurrencyError,
  createCommand,
  createCommandBus,
  createInMemorySnapshotStore,
  createInMemoryStore,
  createRepository,
  defaultMiddleware,
  defineAggregate,
  defineCommand,
  DomainError,
  DuplicateHandlerError,
  IdempotencyKeyReusedError,
  UnknownCommandError,
  validateCommands,
  ValidationError,
  type AggregateRoot,
  type CommandOf,
  type EventStore,
  type Middleware,
} from '@eventline/core';
import { collect, createTestClock, DeciderSpecification } from '@eventline/core/testing';

const Open = defineCommand('Open', z.object({ id: z.string(), owner: z.string().min(1) }));
const Deposit = defineCommand('Deposit', z.object({ id: z.string(), amount: z.number().positive() }));
const Withdraw = defineCommand('Withdraw', z.object({ id: z.string(), amount: z.number().positive() }));
type AccountCommand = CommandOf<typeof Open> | CommandOf<typeof Deposit> | CommandOf<typeof Withdraw>;
type AccountEvent =
  | { type: 'Opened'; data: { owner: string } }
  | { type: 'Deposited'; data: { amount: number } }
  | { type: 'Withdrawn'; data: { amount: number } };
interface Account {
  open: boolean;
  balance: number;
}

const account = defineAggregate<Account, AccountCommand, AccountEvent>({
  category: 'account',
  snapshots: { every: 5 },
  initialState: () => ({ open: false, balance: 0 }),
  decide(command, state) {
    if (Open.is(command)) return state.open ? [] : [{ type: 'Opened', data: { owner: command.data.owner } }];
    if (!state.open) throw new DomainError('the account is not open', 'ACCOUNT_NOT_OPEN');
    if (Deposit.is(command)) return [{ type: 'Deposited', data: { amount: command.data.amount } }];
    if (command.data.amount > state.balance)
      throw new DomainError(`insufficient funds: balance ${state.balance}`, 'INSUFFICIENT_FUNDS');
    return [{ type: 'Withdrawn', data: { amount: command.data.amount } }];
  },
  evolve(state, event) {
    switch (event.type) {
      case 'Opened':
        return { ...state, open: true };
      case 'Deposited':
        return { ...state, balance: state.balance + event.data.amount };
      case 'Withdrawn':
        return { ...state, balance: state.balance - event.data.amount };
    }
  },
});

/** Retries at once: the jitter drawn as 0 makes every backoff 0 ms. */
const noDelay = { random: () => 0 };

function setup(store: EventStore = createInMemoryStore(), snapshots = createInMemorySnapshotStore()) {
  const accounts = createRepository(store, account, { snapshots, retry: { maxAttempts: 30, ...noDelay } });
  const bus = createCommandBus({ middleware: defaultMiddleware(store, { retry: { maxAttempts: 30, ...noDelay } }) });
  const byId = accounts.handler((command) => command.data.id);
  bus.register(Open, byId);
  bus.register(Deposit, byId);
  bus.register(Withdraw, byId);
  return { store, snapshots, accounts, bus };
}

describe('command bus', () => {
  it('refuses a second handler and unknown command types with typed errors', async () => {
    const { bus } = setup();
    assert.throws(
      () => bus.register(Open, async () => ({ streamId: 'x-1', version: 0, position: null, events: [] })),
      DuplicateHandlerError,
    );
    const error = await bus.dispatch(createCommand('Close', { id: '1' })).catch((e: unknown) => e);
    assert.ok(error instanceof UnknownCommandError);
    assert.equal(error.code, 'UNKNOWN_COMMAND');
    assert.match(error.message, /'Close'.*known: Deposit, Open, Withdraw/);
    await assert.rejects(bus.dispatch(null as never), ValidationError);
  });

  it('validates command data against its schema before the handler runs', async () => {
    const { bus, store } = setup();
    await assert.rejects(
      bus.dispatch(Open.create({ id: '1', owner: '' })),
      (error: unknown) => error instanceof ValidationError && /owner/.test(error.message),
    );
    assert.equal((await store.streamInfo('account-1')).exists, false);
  });

  it('runs middleware outermost first, around the handler', async () => {
    const order: string[] = [];
    const layer =
      (name: string): Middleware =>
      async (command, context, next) => {
        order.push(`${name}:before`);
        const result = await next(command, context);
        order.push(`${name}:after`);
        return result;
      };
    const bus = createCommandBus({ middleware: [layer('a'), layer('b'), validateCommands(), layer('c')] });
    bus.register(Open, async () => {
      order.push('handler');
      return { streamId: 'account-1', version: 1, position: null, events: [] };
    });
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    assert.deepEqual(order, ['a:before', 'b:before', 'c:before', 'handler', 'c:after', 'b:after', 'a:after']);
  });

  it('hooks see every command with its result or error and duration', async () => {
    const seen: string[] = [];
    const store = createInMemoryStore();
    const accounts = createRepository(store, account);
    const bus = createCommandBus({
      middleware: [
        commandHooks({
          onStart: (c) => seen.push(`start ${c.type}`),
          onSuccess: (c, r, ms) => seen.push(`ok ${c.type} v${r.version} ${ms >= 0}`),
          onError: (c, e) => seen.push(`error ${c.type} ${(e as DomainError).rule}`),
        }),
      ],
    });
    bus.register(
      Open,
      accounts.handler((c) => c.data.id),
    );
    bus.register(
      Withdraw,
      accounts.handler((c) => c.data.id),
    );
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    await assert.rejects(bus.dispatch(Withdraw.create({ id: '1', amount: 5 })), DomainError);
    assert.deepEqual(seen, ['start Open', 'ok Open v1 true', 'start Withdraw', 'error Withdraw INSUFFICIENT_FUNDS']);
  });

  it('puts correlation and causation ids from the command on the events', async () => {
    const { bus, store } = setup();
    const command = Open.create(
      { id: '1', owner: 'Ada' },
      {
        metadata: {
          correlationId: 'req-1',
          actor: 'ada',
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        },
      },
    );
    const result = await bus.dispatch(command);
    assert.equal(result.events[0]!.metadata.causationId, command.id);
    for await (const event of store.readStream('account-1')) {
      assert.equal(event.metadata.correlationId, 'req-1');
      assert.equal(event.metadata.causationId, command.id);
      assert.equal(event.metadata.actor, 'ada');
      assert.equal(event.metadata.traceparent, command.metadata.traceparent);
    }
    const generated = Deposit.create({ id: '1', amount: 1 });
    assert.match(
      generated.metadata.correlationId!,
      /^[0-9a-f-]{36}$/,
      'a command without a correlation id gets a new one',
    );
  });

  it('returns the stream, new version, global position and events', async () => {
    const { bus } = setup();
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    const result = await bus.dispatch(Deposit.create({ id: '1', amount: 10 }));
    assert.equal(result.streamId, 'account-1');
    assert.equal(result.version, 2);
    assert.equal(typeof result.position, 'string');
    assert.deepEqual(
      result.events.map((e) => [e.type, e.version, e.data]),
      [['Deposited', 2, { amount: 10 }]],
    );
  });
});

describe('idempotency keys', () => {
  it('a second command with the same key returns the first result and appends nothing, also after a restart', async () => {
    const store = createInMemoryStore();
    const first = setup(store);
    await first.bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    const original = await first.bus.dispatch(Deposit.create({ id: '1', amount: 10 }, { idempotencyKey: 'req-42' }));
    const again = await first.bus.dispatch(Deposit.create({ id: '1', amount: 10 }, { idempotencyKey: 'req-42' }));
    assert.equal(again.duplicate, true);
    assert.deepEqual({ ...again, duplicate: undefined }, { ...original, duplicate: undefined });
    const restarted = setup(store); // a new bus and repository over the same store: nothing kept in process memory
    const afterRestart = await restarted.bus.dispatch(
      Deposit.create({ id: '1', amount: 10 }, { idempotencyKey: 'req-42' }),
    );
    assert.equal(afterRestart.duplicate, true);
    assert.equal((await restarted.accounts.load('1')).state.balance, 10);
  });

  it('concurrent commands with one key are handled once', async () => {
    const { bus, accounts } = setup();
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        bus.dispatch(Deposit.create({ id: '1', amount: 10 }, { idempotencyKey: 'same' })),
      ),
    );
    assert.equal(results.filter((r) => !r.duplicate).length, 1);
    assert.equal((await accounts.load('1')).state.balance, 10);
  });

  it('a failed command records nothing, so it can be retried with the same key', async () => {
    const { bus, accounts } = setup();
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    await assert.rejects(bus.dispatch(Withdraw.create({ id: '1', amount: 5 }, { idempotencyKey: 'w' })), DomainError);
    await bus.dispatch(Deposit.create({ id: '1', amount: 10 }));
    const retried = await bus.dispatch(Withdraw.create({ id: '1', amount: 5 }, { idempotencyKey: 'w' }));
    assert.equal(retried.duplicate, undefined);
    assert.equal((await accounts.load('1')).state.balance, 5);
  });

  it('a key reused for another command type is an IdempotencyKeyReusedError', async () => {
    const { bus } = setup();
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }, { idempotencyKey: 'k' }));
    const error = await bus
      .dispatch(Deposit.create({ id: '1', amount: 1 }, { idempotencyKey: 'k' }))
      .catch((e: unknown) => e);
    assert.ok(error instanceof IdempotencyKeyReusedError, String(error));
    assert.equal(error.code, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal(error.firstCommandType, 'Open');
    assert.equal(error.commandType, 'Deposit');
  });

  it('a key reused with other data or another target is refused and changes nothing; key order does not matter', async () => {
    const { bus, store, accounts } = setup();
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    await bus.dispatch(Open.create({ id: '2', owner: 'Bob' }));
    const first = await bus.dispatch(Deposit.create({ id: '1', amount: 10 }, { idempotencyKey: 'dep' }));
    const before = (await collect(store.readAll())).length;
    for (const reuse of [
      { id: '1', amount: 999 },
      { id: '2', amount: 10 },
    ]) {
      await assert.rejects(bus.dispatch(Deposit.create(reuse, { idempotencyKey: 'dep' })), IdempotencyKeyReusedError);
    }
    await assert.rejects(
      bus.dispatch(Withdraw.create({ id: '1', amount: 10 }, { idempotencyKey: 'dep' })),
      IdempotencyKeyReusedError,
    );
    assert.equal((await collect(store.readAll())).length, before, 'nothing was appended');
    // The same command, its data's keys in another order and with other metadata, is the same command.
    const again = await bus.dispatch(
      createCommand(
        'Deposit',
        { amount: 10, id: '1' },
        { idempotencyKey: 'dep', metadata: { correlationId: 'another' } },
      ),
    );
    assert.equal(again.duplicate, true);
    assert.equal(again.position, first.position);
    assert.equal((await accounts.load('1')).state.balance, 10);
    assert.equal((await accounts.load('2')).state.balance, 0);
  });

  it('concurrent commands with one key and different data: exactly one effect, and every answer is true to it', async () => {
    const { bus, accounts } = setup();
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    const amounts = Array.from({ length: 16 }, (_, i) => (i % 4) + 1);
    const answers = await Promise.allSettled(
      amounts.map((amount) => bus.dispatch(Deposit.create({ id: '1', amount }, { idempotencyKey: 'race' }))),
    );
    const balance = (await accounts.load('1')).state.balance;
    assert.ok(amounts.includes(balance), `one deposit took effect: ${balance}`);
    answers.forEach((answer, i) => {
      if (answer.status === 'fulfilled') {
        assert.equal(amounts[i], balance, 'a success is only ever given to the command that was stored');
        assert.deepEqual(
          answer.value.events.map((e) => e.data),
          [{ amount: balance }],
        );
      } else {
        assert.notEqual(amounts[i], balance);
        assert.ok(answer.reason instanceof IdempotencyKeyReusedError, String(answer.reason));
      }
    });
    assert.equal(answers.filter((a) => a.status === 'fulfilled' && !a.value.duplicate).length, 1);
  });

  it('the fingerprint is of the command as dispatched, before validation adds defaults', async () => {
    const WithDefault = defineCommand(
      'Open',
      z.object({ id: z.string(), owner: z.string().min(1), ref: z.string().default(() => crypto.randomUUID()) }),
    );
    const store = createInMemoryStore();
    const accounts = createRepository(store, account);
    const bus = createCommandBus({ middleware: defaultMiddleware(store) });
    bus.register(
      WithDefault,
      accounts.handler((c) => c.data.id),
    );
    const first = await bus.dispatch(WithDefault.create({ id: '1', owner: 'Ada' }, { idempotencyKey: 'o' }));
    const again = await bus.dispatch(WithDefault.create({ id: '1', owner: 'Ada' }, { idempotencyKey: 'o' }));
    assert.equal(again.duplicate, true);
    assert.equal(again.position, first.position);
  });

  it('keys that are not visible, well-formed text are a ValidationError', async () => {
    const { bus } = setup();
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    for (const key of ['', 'a b', 'x\ud800', 'nul\u0000', 'k'.repeat(201), 'tab\t']) {
      await assert.rejects(
        bus.dispatch(Deposit.create({ id: '1', amount: 1 }, { idempotencyKey: key })),
        (e: unknown) => e instanceof ValidationError && /Idempotency key/.test(e.message),
      );
    }
  });
});

describe('repository', () => {
  it('20 concurrent withdrawals on one account never overdraw it, and every success is in the log', async () => {
    const { bus, store, accounts } = setup();
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    await bus.dispatch(Deposit.create({ id: '1', amount: 100 }));
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () => bus.dispatch(Withdraw.create({ id: '1', amount: 15 }))),
    );
    const succeeded = results.filter((r) => r.status === 'fulfilled');
    for (const r of results)
      if (r.status === 'rejected') assert.equal((r.reason as DomainError).rule, 'INSUFFICIENT_FUNDS');
    assert.equal(succeeded.length, 6, '100 / 15 = 6 withdrawals fit');
    assert.equal((await accounts.load('1')).state.balance, 10);
    let withdrawn = 0;
    for await (const event of store.readStream('account-1')) if (event.type === 'Withdrawn') withdrawn++;
    assert.equal(withdrawn, 6);
  });

  it('gives up after the configured attempts and surfaces the ConcurrencyError', async () => {
    const store = createInMemoryStore();
    let attempts = 0;
    const conflicting: EventStore = {
      ...store,
      readStream: (id, options) => store.readStream(id, options),
      append: async (streamId) => {
        attempts++;
        throw new ConcurrencyError(streamId, 0, 1);
      },
    };
    const clock = createTestClock();
    const accounts = createRepository(conflicting, account, {
      retry: { maxAttempts: 4, baseDelayMs: 10, random: () => 1, clock },
    });
    const refused = assert.rejects(accounts.handle('1', Open.create({ id: '1', owner: 'Ada' })), ConcurrencyError);
    // Exponential backoff (jitter drawn as 1 here): 10, 20 then 40 ms before attempts 2, 3 and 4.
    for (const [retry, delay] of [10, 20, 40].entries()) {
      await clock.untilSleeping(1);
      assert.equal(attempts, retry + 1);
      await clock.advance(delay - 1);
      assert.equal(attempts, retry + 1, `no attempt before ${delay} ms`);
      await clock.advance(1);
    }
    await refused;
    assert.equal(attempts, 4);
    assert.equal(clock.sleepers, 0);
  });

  it('domain errors are not retried and a decision with no events appends nothing', async () => {
    const { accounts, store } = setup();
    await assert.rejects(
      accounts.handle('1', Deposit.create({ id: '1', amount: 1 })),
      (e: unknown) => e instanceof DomainError && e.rule === 'ACCOUNT_NOT_OPEN',
    );
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    const repeat = await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    assert.deepEqual(repeat, { streamId: 'account-1', version: 1, position: null, events: [] });
    assert.equal((await store.streamInfo('account-1')).version, 1);
  });

  it('an explicit expected version refuses a stale command', async () => {
    const { accounts } = setup();
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    await assert.rejects(
      accounts.handle('1', Deposit.create({ id: '1', amount: 1 }), { expectedVersion: 0 }),
      ConcurrencyError,
    );
    assert.equal(
      (await accounts.handle('1', Deposit.create({ id: '1', amount: 1 }), { expectedVersion: 1 })).version,
      2,
    );
  });
});

describe('state cache', () => {
  /** A store that counts the stream reads made through it. */
  function counting(store: EventStore = createInMemoryStore()) {
    const reads = { count: 0 };
    const counted = new Proxy(store, {
      get(target, key) {
        if (key === 'readStream') {
          return (id: string, options?: Parameters<EventStore['readStream']>[1]) => {
            reads.count++;
            return target.readStream(id, options);
          };
        }
        const value: unknown = Reflect.get(target, key);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    return { store: counted, reads };
  }

  it('a command on a cached aggregate decides without reading the stream', async () => {
    const { store, reads } = counting();
    const accounts = createRepository(store, account, { cache: true });
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    assert.equal(reads.count, 1, 'the first command loads');
    for (let i = 0; i < 5; i++) await accounts.handle('1', Deposit.create({ id: '1', amount: 10 }));
    const last = await accounts.handle('1', Withdraw.create({ id: '1', amount: 20 }));
    assert.equal(reads.count, 1, 'the rest decided on the cached state');
    assert.equal(last.version, 7);
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' })); // decides nothing: confirmed on the store
    assert.equal(reads.count, 2);
    assert.equal((await accounts.load('1')).state.balance, 30, 'the log agrees with the cached state');
  });

  it('a state made stale by another writer is refused, reloaded and decided again', async () => {
    const shared = createInMemoryStore();
    const { store, reads } = counting(shared);
    const here = createRepository(store, account, { cache: true, retry: { maxAttempts: 1 } });
    const elsewhere = createRepository(shared, account); // another process
    await here.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    await here.handle('1', Deposit.create({ id: '1', amount: 10 }));
    await elsewhere.handle('1', Withdraw.create({ id: '1', amount: 10 }));
    // The cache says balance 10 at version 2; the store is at version 3 with balance 0.
    await assert.rejects(
      here.handle('1', Withdraw.create({ id: '1', amount: 10 })),
      (e: unknown) => e instanceof DomainError && e.rule === 'INSUFFICIENT_FUNDS',
    );
    const deposit = await here.handle('1', Deposit.create({ id: '1', amount: 5 }));
    assert.equal(
      deposit.version,
      4,
      'decided on the store, not on the stale state; no retry attempt was spent on the stale state',
    );
    assert.equal((await elsewhere.load('1')).state.balance, 5);
    assert.ok(reads.count >= 3);
  });

  it('20 concurrent withdrawals with the cache on never overdraw an account', async () => {
    const store = createInMemoryStore();
    const accounts = createRepository(store, account, { cache: true });
    const bus = createCommandBus({ middleware: defaultMiddleware(store, { retry: { maxAttempts: 30, ...noDelay } }) });
    const byId = accounts.handler((command) => command.data.id);
    bus.register(Open, byId);
    bus.register(Deposit, byId);
    bus.register(Withdraw, byId);
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }));
    await bus.dispatch(Deposit.create({ id: '1', amount: 100 }));
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () => bus.dispatch(Withdraw.create({ id: '1', amount: 15 }))),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 6);
    for (const r of results)
      if (r.status === 'rejected') assert.equal((r.reason as DomainError).rule, 'INSUFFICIENT_FUNDS');
    assert.equal((await accounts.load('1')).state.balance, 10);
    await assert.rejects(
      bus.dispatch(Withdraw.create({ id: '1', amount: 15 })),
      (e: unknown) => e instanceof DomainError,
    );
    assert.equal((await bus.dispatch(Withdraw.create({ id: '1', amount: 10 }))).version, 9);
  });

  it('a refusal or an empty decision on a cached state is made again on the store before it is answered', async () => {
    const shared = createInMemoryStore();
    const here = createRepository(shared, account, { cache: true });
    const elsewhere = createRepository(shared, account); // another process
    await here.handle('1', Open.create({ id: '1', owner: 'Ada' })); // cached: open, balance 0, version 1
    await elsewhere.handle('1', Deposit.create({ id: '1', amount: 100 }));
    const withdrawn = await here.handle('1', Withdraw.create({ id: '1', amount: 50 }));
    assert.equal(withdrawn.version, 3, 'not refused for the stale balance of 0');
    await elsewhere.handle('1', Deposit.create({ id: '1', amount: 1 }));
    const repeat = await here.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    assert.deepEqual([repeat.events.length, repeat.version], [0, 4], "nothing to do, at the store's version");
  });

  it('an explicit expected version is checked against the store, not a stale cached state', async () => {
    const shared = createInMemoryStore();
    const here = createRepository(shared, account, { cache: true });
    const elsewhere = createRepository(shared, account);
    await here.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    await elsewhere.handle('1', Deposit.create({ id: '1', amount: 1 }));
    assert.equal(
      (await here.handle('1', Deposit.create({ id: '1', amount: 1 }), { expectedVersion: 2 })).version,
      3,
      'the store is at 2, whatever the cache held',
    );
    await assert.rejects(
      here.handle('1', Deposit.create({ id: '1', amount: 1 }), { expectedVersion: 2 }),
      ConcurrencyError,
    );
  });

  it('keeps at most maxEntries aggregates, dropping the least recently used', async () => {
    const { store, reads } = counting();
    const accounts = createRepository(store, account, { cache: { maxEntries: 2 } });
    for (const id of ['a', 'b', 'c']) await accounts.handle(id, Open.create({ id, owner: id }));
    reads.count = 0;
    await accounts.handle('c', Deposit.create({ id: 'c', amount: 1 }));
    await accounts.handle('b', Deposit.create({ id: 'b', amount: 1 }));
    assert.equal(reads.count, 0, 'b and c are kept');
    await accounts.handle('a', Deposit.create({ id: 'a', amount: 1 }));
    assert.equal(reads.count, 1, 'a was dropped');
    assert.throws(
      () => createRepository(store, account, { cache: { maxEntries: 0 } }),
      (e: unknown) => e instanceof ValidationError && /maxEntries/.test(e.message),
    );
  });

  it('a command with an idempotency key keeps its new state once its transaction has committed', async () => {
    const { store, reads } = counting();
    const accounts = createRepository(store, account, { cache: true });
    const bus = createCommandBus({ middleware: defaultMiddleware(store) });
    for (const command of [Open, Deposit, Withdraw])
      bus.register(
        command,
        accounts.handler((c) => c.data.id),
      );
    await bus.dispatch(Open.create({ id: '1', owner: 'Ada' }, { idempotencyKey: 'open-1' }));
    await bus.dispatch(Deposit.create({ id: '1', amount: 5 }, { idempotencyKey: 'deposit-1' }));
    await assert.rejects(
      bus.dispatch(Withdraw.create({ id: '1', amount: 50 }, { idempotencyKey: 'withdraw-1' })),
      DomainError,
    );
    const before = reads.count;
    const result = await bus.dispatch(Withdraw.create({ id: '1', amount: 5 }));
    assert.equal(reads.count, before, 'decided on the state the keyed command left, without reading');
    assert.equal(result.version, 3);
    assert.equal((await accounts.load('1')).state.balance, 0);
  });

  it('a command inside a transaction neither uses nor fills the cache, so a rollback leaves nothing behind', async () => {
    const { store, reads } = counting();
    const accounts = createRepository(store, account, { cache: true });
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    await assert.rejects(
      store.transaction(async (session) => {
        await accounts.handle('1', Deposit.create({ id: '1', amount: 100 }), { session });
        throw new Error('rolled back');
      }),
      /rolled back/,
    );
    const before = reads.count;
    await assert.rejects(
      accounts.handle('1', Withdraw.create({ id: '1', amount: 50 })),
      (e: unknown) => e instanceof DomainError && e.rule === 'INSUFFICIENT_FUNDS',
    );
    assert.equal(reads.count, before + 1, 'loaded again from the store');
  });
});

describe('snapshots', () => {
  it('are taken every N events and make loading read only the tail', async () => {
    const { accounts, snapshots } = setup();
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    for (let i = 0; i < 11; i++) await accounts.handle('1', Deposit.create({ id: '1', amount: 1 }));
    assert.equal((await snapshots.load('account-1'))?.version, 10, 'the last multiple of 5 crossed');
    const loaded = await accounts.load('1');
    assert.deepEqual([loaded.fromSnapshot, loaded.eventsRead, loaded.version, loaded.state.balance], [true, 2, 12, 11]);
  });

  it('deleting every snapshot changes no result', async () => {
    const { accounts, snapshots } = setup();
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    for (let i = 0; i < 7; i++) await accounts.handle('1', Deposit.create({ id: '1', amount: 3 }));
    const withSnapshot = await accounts.load('1');
    await snapshots.delete();
    const without = await accounts.load('1');
    assert.deepEqual([without.state, without.version], [withSnapshot.state, withSnapshot.version]);
    assert.equal(without.fromSnapshot, false);
  });

  it('a snapshot of another state version is ignored and replaced', async () => {
    const store = createInMemoryStore();
    const snapshots = createInMemorySnapshotStore();
    const accounts = createRepository(store, account, { snapshots });
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    await accounts.handle('1', Deposit.create({ id: '1', amount: 4 }));
    await snapshots.save({
      streamId: 'account-1',
      version: 2,
      stateVersion: 99,
      state: { open: true, balance: 1_000_000 },
    });
    const loaded = await accounts.load('1');
    assert.deepEqual([loaded.fromSnapshot, loaded.state.balance], [false, 4]);
    assert.deepEqual(await snapshots.load('account-1'), {
      streamId: 'account-1',
      version: 2,
      stateVersion: 1,
      state: { open: true, balance: 4 },
    });
  });

  it('a command in a transaction that rolls back leaves no snapshot ahead of the log', async () => {
    const { accounts, snapshots, store } = setup();
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    for (let i = 0; i < 3; i++) await accounts.handle('1', Deposit.create({ id: '1', amount: 1 }));
    // The fifth event crosses the policy's multiple of 5, inside a transaction that then fails.
    await assert.rejects(
      store.transaction(async (session) => {
        await accounts.handle('1', Deposit.create({ id: '1', amount: 100 }), { session });
        throw new Error('the rest of the transaction failed');
      }),
      /the rest of the transaction failed/,
    );
    assert.equal((await store.streamInfo('account-1')).version, 4, 'rolled back');
    assert.equal(await snapshots.load('account-1'), null, 'no snapshot of the rolled-back state');
    const loaded = await accounts.load('1');
    assert.deepEqual([loaded.version, loaded.state.balance], [4, 3]);
    assert.equal(
      (await accounts.handle('1', Deposit.create({ id: '1', amount: 1 }))).version,
      5,
      'the aggregate still takes commands',
    );
  });

  it('can be taken on demand', async () => {
    const { accounts, snapshots } = setup();
    await accounts.handle('1', Open.create({ id: '1', owner: 'Ada' }));
    assert.equal(await snapshots.load('account-1'), null);
    await accounts.snapshot('1');
    assert.equal((await snapshots.load('account-1'))?.version, 1);
    assert.equal(await accounts.snapshot('404'), null);
  });
});

describe('class-style aggregates', () => {
  type Cmd = CommandOf<typeof Open> | CommandOf<typeof Deposit>;
  class Piggy implements AggregateRoot<Cmd, AccountEvent> {
    open = false;
    coins = 0;
    handle(command: Cmd): AccountEvent[] {
      if (Open.is(command)) return this.open ? [] : [{ type: 'Opened', data: { owner: command.data.owner } }];
      if (!this.open) throw new DomainError('not open', 'NOT_OPEN');
      return [{ type: 'Deposited', data: { amount: command.data.amount } }];
    }
    apply(event: AccountEvent): void {
      if (event.type === 'Opened') this.open = true;
      if (event.type === 'Deposited') this.coins += event.data.amount;
    }
  }
  const piggy = aggregateFromClass<Piggy, Cmd, AccountEvent>({
    category: 'piggy',
    create: () => new Piggy(),
    snapshots: { every: 2 },
  });

  it('share the repository, snapshots included', async () => {
    const snapshots = createInMemorySnapshotStore();
    const repository = createRepository(createInMemoryStore(), piggy, { snapshots });
    await repository.handle('p', Open.create({ id: 'p', owner: 'Ada' }));
    await repository.handle('p', Deposit.create({ id: 'p', amount: 2 }));
    await repository.handle('p', Deposit.create({ id: 'p', amount: 3 }));
    const loaded = await repository.load('p');
    assert.ok(loaded.state instanceof Piggy);
    assert.deepEqual([loaded.state.coins, loaded.fromSnapshot, loaded.eventsRead], [5, true, 1]);
  });

  it('work with the state cache: concurrent commands on one aggregate, each applied once', async () => {
    const store = createInMemoryStore();
    const repository = createRepository(store, piggy, { cache: true, retry: { maxAttempts: 30, ...noDelay } });
    await repository.handle('p', Open.create({ id: 'p', owner: 'Ada' }));
    await Promise.all(
      Array.from({ length: 10 }, (_, i) => repository.handle('p', Deposit.create({ id: 'p', amount: i + 1 }))),
    );
    const last = await repository.handle('p', Deposit.create({ id: 'p', amount: 100 }));
    assert.equal(last.version, 12);
    assert.equal((await repository.load('p')).state.coins, 155, '1 + ... + 10, then 100: each deposit applied once');
    let applied = 0;
    for await (const event of store.readStream('piggy-p'))
      if (event.type === 'Deposited') applied += (event.data as { amount: number }).amount;
    assert.equal(applied, 155);
  });

  it('work with the given/when/then helpers', async () => {
    await DeciderSpecification.for(piggy)
      .given([{ type: 'Opened', data: { owner: 'Ada' } }])
      .when(Deposit.create({ id: 'p', amount: 1 }))
      .then([{ type: 'Deposited', data: { amount: 1 } }]);
    await DeciderSpecification.for(piggy)
      .given([])
      .when(Deposit.create({ id: 'p', amount: 1 }))
      .thenThrows(DomainError, (e) => e.rule === 'NOT_OPEN');
  });
});

describe('given / when / then', () => {
  const spec = DeciderSpecification.for(account);
  const opened: AccountEvent = { type: 'Opened', data: { owner: 'Ada' } };

  it('passes on the expected events or error', async () => {
    await spec
      .given([opened, { type: 'Deposited', data: { amount: 10 } }])
      .when(Withdraw.create({ id: '1', amount: 4 }))
      .then([{ type: 'Withdrawn', data: { amount: 4 } }]);
    await spec
      .given([opened])
      .when(Open.create({ id: '1', owner: 'Ada' }))
      .then([]);
    await spec
      .given([opened])
      .when(Withdraw.create({ id: '1', amount: 4 }))
      .thenThrows(DomainError, (e) => e.rule === 'INSUFFICIENT_FUNDS');
  });

  it('fails with the whole scenario in the message', async () => {
    await assert.rejects(
      spec
        .given([opened])
        .when(Deposit.create({ id: '1', amount: 4 }))
        .then([{ type: 'Deposited', data: { amount: 5 } }]),
      (error: Error) => {
        assert.match(error.message, /given: Opened \{ owner: 'Ada' \}/);
        assert.match(error.message, /when: {2}Deposit/);
        return true;
      },
    );
    await assert.rejects(
      spec
        .given([opened])
        .when(Deposit.create({ id: '1', amount: 4 }))
        .thenThrows(DomainError),
      /expected DomainError, but the command recorded Deposited \{ amount: 4 \}/,
    );
    await assert.rejects(
      spec
        .given([])
        .when(Deposit.create({ id: '1', amount: 4 }))
        .then([]),
      /expected events, but the command threw/,
    );
  });
});
