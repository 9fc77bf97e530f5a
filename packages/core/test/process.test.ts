// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import {
  createCommandBus,
  createInMemoryProcessStore,
  createInMemoryStore,
  createInMemorySubscriptionStore,
  createProcessManager,
  defaultMiddleware,
  defineCommand,
  defineProcess,
  processFromClass,
  type ProcessDecision,
  type ProcessInput,
  type ProcessRoot,
  DomainError,
  processCommandId,
  ValidationError,
  type Command,
  type CommandResult,
  type EventStoreSession,
  type ProcessManager,
  type RecordedEvent,
} from '@eventline/core';
import { collect, createTestClock, describeProcessStoreConformance, until } from '@eventline/core/testing';

const shared = createInMemoryProcessStore();
describeProcessStoreConformance({ name: 'in memory', create: async () => shared });

const Confirm = defineCommand('Confirm', z.object({ inviteId: z.string() }));
const Deny = defineCommand('Deny', z.object({ inviteId: z.string() }));
const Refund = defineCommand('Refund', z.object({ inviteId: z.string() }));

/** The talk's ResponseSaga: confirm accepted guests up to `limit`, deny the rest; decline after a timeout. */
function responses(limit: number, options: { timeoutMs?: number } = {}) {
  return defineProcess({
    name: 'responses',
    startedBy: ['Accepted', 'Created'],
    handles: ['Declined', 'Closed'],
    correlate: (event) => (event.type === 'Closed' ? 'all' : 'all'),
    initialState: () => ({ accepted: 0, confirmed: [] as string[], answered: [] as string[] }),
    evolve: (state, input) => {
      if (input.kind !== 'event') return state;
      const inviteId = input.event.streamId.slice('invite-'.length);
      if (input.event.type === 'Accepted')
        return {
          accepted: state.accepted + 1,
          confirmed: state.accepted < limit ? [...state.confirmed, inviteId] : state.confirmed,
          answered: [...state.answered, inviteId],
        };
      if (input.event.type === 'Declined') return { ...state, answered: [...state.answered, inviteId] };
      return state;
    },
    decide: (input, state) => {
      if (input.kind === 'rejected')
        return { commands: [Refund.create({ inviteId: (input.command.data as { inviteId: string }).inviteId })] };
      if (input.kind === 'timer') {
        const inviteId = (input.data as { inviteId: string }).inviteId;
        return state.answered.includes(inviteId) ? {} : { commands: [Deny.create({ inviteId })] };
      }
      const inviteId = input.event.streamId.slice('invite-'.length);
      switch (input.event.type) {
        case 'Created':
          return options.timeoutMs === undefined
            ? {}
            : {
                schedule: [
                  { id: `answer-${inviteId}`, name: 'answer', afterMs: options.timeoutMs, data: { inviteId } },
                ],
              };
        case 'Accepted':
          return {
            commands: [state.confirmed.includes(inviteId) ? Confirm.create({ inviteId }) : Deny.create({ inviteId })],
            cancel: [`answer-${inviteId}`],
          };
        case 'Declined':
          return { cancel: [`answer-${inviteId}`] };
        default:
          return { complete: true };
      }
    },
  });
}

function setup(
  process: ReturnType<typeof responses>,
  handle?: (command: Command, session: EventStoreSession | undefined) => Promise<void> | void,
) {
  const clock = createTestClock();
  const store = createInMemoryStore({ clock });
  const bus = createCommandBus({ middleware: defaultMiddleware(store) });
  const handled: Command[] = [];
  const handler = async (command: Command, context: { session?: EventStoreSession }): Promise<CommandResult> => {
    await handle?.(command, context.session);
    handled.push(command);
    const target = context.session ?? store;
    const type = command.type === 'Confirm' ? 'Confirmed' : command.type === 'Deny' ? 'Denied' : 'Refunded';
    const streamId = `invite-${(command.data as { inviteId: string }).inviteId}`;
    const result = await target.append(streamId, [{ type, data: null }]);
    return { streamId, version: result.version, position: result.position, events: [] };
  };
  for (const command of [Confirm, Deny, Refund]) bus.register(command, handler);
  const processes = createInMemoryProcessStore();
  const manager = createProcessManager({
    process,
    store,
    subscriptions: createInMemorySubscriptionStore(store, { clock }),
    processes,
    bus,
    clock,
    retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 1 },
    maxCommandAttempts: 3,
    commandRetry: { baseDelayMs: 1000, maxDelayMs: 1000 },
  });
  return { clock, store, bus, handled, processes, manager };
}

async function answer(store: ReturnType<typeof createInMemoryStore>, inviteId: string, type: string) {
  return store.append(`invite-${inviteId}`, [{ type, data: null }]);
}

async function settled(manager: ProcessManager, store: ReturnType<typeof createInMemoryStore>) {
  const head = (await collect(store.readAll())).at(-1);
  if (head) await manager.subscription.waitFor(head.position, { timeoutMs: 10_000 });
  await manager.runOnce();
}

describe('process managers', () => {
  it('confirms accepted guests up to the limit and denies the rest, as in the talk', async () => {
    const { store, handled, manager } = setup(responses(2));
    manager.start();
    try {
      for (const [id, type] of [
        ['ana', 'Accepted'],
        ['bia', 'Declined'],
        ['caio', 'Accepted'],
        ['duda', 'Accepted'],
      ] as const)
        await answer(store, id, type);
      await until(() => handled.length === 3, 'three commands handled');
      await settled(manager, store);
      assert.deepEqual(
        handled.map((c) => [c.type, (c.data as { inviteId: string }).inviteId]),
        [
          ['Confirm', 'ana'],
          ['Confirm', 'caio'],
          ['Deny', 'duda'],
        ],
      );
      const instance = await manager.instance('all');
      assert.equal(instance?.inputs, 4, 'every answer is an input of the one instance');
      assert.deepEqual((instance?.state as { confirmed: string[] }).confirmed, ['ana', 'caio']);
      assert.deepEqual(await manager.commands(), [], 'the outbox is empty once sent');
    } finally {
      await manager.stop();
    }
  });

  it('gives each command a deterministic id, the input as causation and the starting correlation', async () => {
    const { store, handled, manager } = setup(responses(5));
    const first = await store.append('invite-ana', [{ type: 'Accepted', data: null }], {
      metadata: { correlationId: 'party-2026' },
    } as never);
    manager.start();
    try {
      await until(() => handled.length === 1, 'one command');
      const [event] = await collect(store.readStream('invite-ana'));
      const command = handled[0]!;
      assert.equal(command.id, processCommandId('responses', 'all', `event:${event!.id}`, 0));
      assert.equal(command.metadata.causationId, event!.id);
      assert.equal(command.metadata.idempotencyKey, command.id);
      assert.equal(typeof command.metadata.correlationId, 'string');
      assert.ok(first.position);
    } finally {
      await manager.stop();
    }
  });

  it('a redelivered input sends nothing again: the subscription reset to the beginning is a no-op', async () => {
    const { store, handled, manager } = setup(responses(5));
    manager.start();
    try {
      await answer(store, 'ana', 'Accepted');
      await answer(store, 'bia', 'Accepted');
      await until(() => handled.length === 2, 'two commands');
      await settled(manager, store);
      await manager.subscription.reset('beginning');
      await answer(store, 'caio', 'Accepted');
      await until(() => handled.length === 3, 'the third command');
      await settled(manager, store);
      assert.deepEqual(
        handled.map((c) => (c.data as { inviteId: string }).inviteId),
        ['ana', 'bia', 'caio'],
      );
      assert.equal((await manager.instance('all'))?.inputs, 3);
    } finally {
      await manager.stop();
    }
  });

  it('a command sent twice (a crash after sending, before the outbox knew) is handled once by the bus', async () => {
    const { store, bus, handled, processes } = setup(responses(5));
    const command = Confirm.create({ inviteId: 'ana' });
    const id = processCommandId('responses', 'all', 'event:x', 0);
    const sent = { ...command, id, metadata: { ...command.metadata, idempotencyKey: id } };
    await bus.dispatch(sent);
    const again = await bus.dispatch(sent);
    assert.equal(again.duplicate, true);
    assert.equal(handled.length, 1);
    assert.equal((await collect(store.readStream('invite-ana'))).length, 1);
    await processes.close();
  });

  it('a command the domain refuses becomes an input: the process compensates', async () => {
    const { store, handled, manager } = setup(responses(5), (command) => {
      if (command.type === 'Confirm') throw new DomainError('the invite was withdrawn', 'WITHDRAWN');
    });
    manager.start();
    try {
      await answer(store, 'ana', 'Accepted');
      await until(() => handled.some((c) => c.type === 'Refund'), 'the compensation');
      const refund = handled.find((c) => c.type === 'Refund')!;
      assert.equal(refund.id, processCommandId('responses', 'all', `rejected:${refund.metadata.causationId}`, 0));
      assert.deepEqual(await manager.commands(), []);
    } finally {
      await manager.stop();
    }
  });

  it('a command that keeps failing is retried with backoff, then parked; one instance never stops the others', async () => {
    let failing = true;
    const { clock, store, handled, manager } = setup(
      defineProcess({
        ...responses(5),
        name: 'responses',
        correlate: (event: RecordedEvent) => event.streamId,
      }),
      (command) => {
        if (failing && (command.data as { inviteId: string }).inviteId === 'ana') throw new Error('database away');
      },
    );
    await answer(store, 'ana', 'Accepted');
    await answer(store, 'bia', 'Accepted');
    manager.start();
    try {
      await until(() => handled.some((c) => (c.data as { inviteId: string }).inviteId === 'bia'), 'bia confirmed');
      const [pending] = await manager.commands({ status: 'pending' });
      assert.equal(pending?.attempts, 1);
      assert.match(pending?.error?.message ?? '', /database away/);
      for (let i = 0; i < 3; i++) {
        await clock.advance(1000);
        await manager.runOnce();
      }
      const [parked] = await manager.commands({ status: 'parked' });
      assert.equal(parked?.attempts, 3, 'parked after maxCommandAttempts');
      failing = false;
      assert.equal(await manager.retryCommand(parked!.command.id), true);
      await manager.runOnce();
      assert.ok(handled.some((c) => (c.data as { inviteId: string }).inviteId === 'ana'));
      assert.deepEqual(await manager.commands(), []);
    } finally {
      await manager.stop();
    }
  });

  it('an input whose decide throws is retried, then parked by the subscription; the other instances go on', async () => {
    const { clock, store, handled, manager } = setup(
      defineProcess({
        name: 'poison',
        startedBy: ['Accepted'],
        correlate: (event) => event.streamId,
        initialState: () => ({}),
        decide: (input) => {
          if (input.kind === 'event' && input.event.streamId === 'invite-bad') throw new Error('cannot decide');
          return { commands: [Confirm.create({ inviteId: (input as { event: RecordedEvent }).event.streamId })] };
        },
      }) as never,
    );
    await answer(store, 'bad', 'Accepted');
    await answer(store, 'good', 'Accepted');
    manager.start();
    try {
      // The subscription's retries wait on the test clock: move it while waiting.
      await until(async () => {
        await clock.advance(5);
        return handled.length === 1 && (await manager.subscription.status()).parked === 1;
      }, 'the good instance handled and the poison input parked');
      assert.equal(await manager.instance('invite-bad'), null, 'nothing of the failing input was kept');
    } finally {
      await manager.stop();
    }
  });

  it('a timer fires once when due, never early; an answer cancels it; completion makes later inputs a recorded no-op', async () => {
    const { clock, store, handled, manager } = setup(responses(5, { timeoutMs: 60_000 }));
    manager.start();
    try {
      await answer(store, 'ana', 'Created');
      await answer(store, 'bia', 'Created');
      await until(async () => (await manager.timers()).length === 2, 'two timers');
      await answer(store, 'ana', 'Accepted');
      await until(() => handled.length === 1, 'ana confirmed');
      await until(async () => (await manager.timers()).length === 1, 'ana’s timer cancelled');
      await clock.advance(59_999);
      await manager.runOnce();
      assert.equal(handled.length, 1, 'not early');
      await clock.advance(1);
      await manager.runOnce();
      await until(() => handled.length === 2, 'bia denied by the timer');
      assert.deepEqual(
        handled.map((c) => [c.type, (c.data as { inviteId: string }).inviteId]),
        [
          ['Confirm', 'ana'],
          ['Deny', 'bia'],
        ],
      );
      await clock.advance(120_000);
      await manager.runOnce();
      assert.equal(handled.length, 2, 'fired once');
      await answer(store, 'caio', 'Created');
      await store.append('party-1', [{ type: 'Closed', data: null }]);
      await until(async () => (await manager.instance('all'))?.completed === true, 'completed');
      assert.deepEqual(await manager.timers(), [], 'completion cancels the pending timers');
      await answer(store, 'duda', 'Accepted');
      await until(async () => (await manager.instance('all'))?.ignored === 1, 'the late input recorded');
      await clock.advance(120_000);
      await manager.runOnce();
      assert.equal(handled.length, 2, 'nothing sent after completion');
    } finally {
      await manager.stop();
    }
  });

  it('several instances in flight at once, each instance strictly in order; a failing instance holds back no other', async () => {
    const clock = createTestClock();
    const store = createInMemoryStore({ clock });
    // No middleware: the in-memory store runs transactions (the idempotency middleware's) one at a time.
    const bus = createCommandBus();
    let inFlight = 0;
    let most = 0;
    const handled: Array<[string, number]> = [];
    const tried: Array<[string, number]> = [];
    const Step = defineCommand('Step', z.object({ instance: z.string(), n: z.number().int() }));
    bus.register(Step, async (command): Promise<CommandResult> => {
      const { instance, n } = command.data;
      tried.push([instance, n]);
      inFlight++;
      most = Math.max(most, inFlight);
      try {
        // Later instances finish sooner: without per-instance order, their second step would overtake.
        for (let i = 0; i < 20 - Number(instance.slice(1)); i++) await new Promise((resolve) => setImmediate(resolve));
        if (instance === 'i0') throw new Error('downstream away');
        handled.push([instance, n]);
        const result = await store.append(`step-${instance}-${n}`, [{ type: 'Stepped', data: null }]);
        return { streamId: `step-${instance}-${n}`, version: result.version, position: result.position, events: [] };
      } finally {
        inFlight--;
      }
    });
    const manager = createProcessManager({
      process: defineProcess({
        name: 'steps',
        startedBy: ['Go'],
        correlate: (event) => event.streamId.slice('go-'.length),
        initialState: () => ({}),
        decide: (input) =>
          input.kind === 'event'
            ? { commands: [0, 1, 2].map((n) => Step.create({ instance: input.event.streamId.slice(3), n })) }
            : {},
      }),
      store,
      subscriptions: createInMemorySubscriptionStore(store, { clock }),
      processes: createInMemoryProcessStore(),
      bus,
      clock,
      commandsInFlight: 4,
      maxCommandAttempts: 2,
      commandRetry: { baseDelayMs: 1000, maxDelayMs: 1000 },
    });
    for (let i = 0; i < 6; i++) await store.append(`go-i${i}`, [{ type: 'Go', data: null }]);
    const head = (await collect(store.readAll())).at(-1)!;
    manager.subscription.start();
    await manager.subscription.waitFor(head.position, { timeoutMs: 10_000 });
    await manager.subscription.stop();
    for (let pass = 0; pass < 3; pass++) await manager.runOnce();
    assert.equal(most, 4, 'four commands of four instances in flight at once, no more');
    for (let i = 1; i < 6; i++)
      assert.deepEqual(
        handled.filter(([instance]) => instance === `i${i}`).map(([, n]) => n),
        [0, 1, 2],
        `instance i${i} in order`,
      );
    assert.equal(handled.length, 15, 'every other instance done while i0 fails');
    assert.deepEqual(
      tried.filter(([instance]) => instance === 'i0'),
      [['i0', 0]],
      'i0’s later steps wait',
    );
    await clock.advance(1000);
    await manager.runOnce();
    const parked = await manager.commands({ status: 'parked' });
    assert.equal(parked.length, 1, 'parked after its tries');
    assert.deepEqual(
      tried.filter(([instance]) => instance === 'i0'),
      [
        ['i0', 0],
        ['i0', 0],
      ],
      'a parked command holds its instance back',
    );
    assert.equal((await manager.commands({ instance: 'i0', status: 'pending' })).length, 2);
  });

  it('one command in flight with commandsInFlight 1; a bad commandsInFlight is refused', async () => {
    const { store, bus } = setup(responses(1));
    for (const bad of [0, -1, 1001, Number.NaN, '4'])
      assert.throws(
        () =>
          createProcessManager({
            process: responses(1),
            store,
            subscriptions: createInMemorySubscriptionStore(store),
            processes: createInMemoryProcessStore(),
            bus,
            commandsInFlight: bad as number,
          }),
        ValidationError,
      );
  });

  it('a timer cancelled by an earlier input of the same batch does not fire', async () => {
    const clock = createTestClock();
    const store = createInMemoryStore({ clock });
    const bus = createCommandBus({ middleware: defaultMiddleware(store) });
    const fired: string[] = [];
    // An atomic store fires all the due timers in one batch (one transaction); this one claims to be, to take that path.
    const memory = createInMemoryProcessStore();
    const processes = { ...memory, atomic: true };
    const manager = createProcessManager({
      process: defineProcess({
        name: 'race',
        startedBy: ['Start'],
        correlate: () => 'one',
        initialState: () => ({ fired: [] as string[] }),
        evolve: (state, input) => (input.kind === 'timer' ? { fired: [...state.fired, input.id] } : state),
        decide: (input) => {
          if (input.kind === 'event')
            return {
              schedule: [
                { id: 'first', name: 'first', afterMs: 1000 },
                { id: 'second', name: 'second', afterMs: 1000 },
                { id: 'third', name: 'third', afterMs: 1000 },
              ],
            };
          if (input.kind === 'timer') {
            fired.push(input.id);
            if (input.id === 'first') return { cancel: ['second'] };
          }
          return {};
        },
      }),
      store,
      subscriptions: createInMemorySubscriptionStore(store, { clock }),
      processes,
      bus,
      clock,
    });
    const { position } = await store.append('race-1', [{ type: 'Start', data: null }]);
    manager.subscription.start();
    await manager.subscription.waitFor(position, { timeoutMs: 10_000 });
    await manager.subscription.stop();
    assert.equal((await manager.timers()).length, 3);
    await clock.advance(1000);
    assert.deepEqual(await manager.runOnce(), { sent: 0, fired: 3 }, 'all three taken in one batch');
    assert.deepEqual(fired, ['first', 'third'], 'the second was cancelled by the first');
    assert.deepEqual((await manager.instance('one'))?.state, { fired: ['first', 'third'] });
    assert.equal((await manager.instance('one'))?.inputs, 3, 'the start and two timers');
  });

  it('refuses a bad definition and bad options with typed errors', () => {
    const base = { name: 'p', startedBy: ['A'], correlate: () => 'x', initialState: () => ({}), decide: () => ({}) };
    for (const bad of [
      { ...base, name: '' },
      { ...base, name: 'x'.repeat(101) },
      { ...base, name: 'bad\u0000name' },
      { ...base, startedBy: [] },
      { ...base, startedBy: ['not a type'] },
      { ...base, handles: 'A' },
      { ...base, decide: 'no' },
      { ...base, evolve: 1 },
    ])
      assert.throws(() => defineProcess(bad as never), ValidationError);
    const { store, bus } = setup(responses(1));
    assert.throws(
      () =>
        createProcessManager({
          process: responses(1),
          store,
          subscriptions: createInMemorySubscriptionStore(store),
          processes: createInMemoryProcessStore(),
          bus,
          maxCommandAttempts: -1,
        }),
      ValidationError,
    );
  });
});

describe('process managers in the class style', () => {
  class Responses implements ProcessRoot {
    accepted = 0;
    confirmed: string[] = [];
    apply(input: ProcessInput) {
      if (input.kind !== 'event' || input.event.type !== 'Accepted') return;
      this.accepted++;
      if (this.accepted <= 2) this.confirmed.push(input.event.streamId.slice('invite-'.length));
    }
    handle(input: ProcessInput): ProcessDecision {
      if (input.kind !== 'event' || input.event.type !== 'Accepted') return {};
      const inviteId = input.event.streamId.slice('invite-'.length);
      return {
        commands: [this.confirmed.includes(inviteId) ? Confirm.create({ inviteId }) : Deny.create({ inviteId })],
      };
    }
  }

  it('keeps the fields of the object as its state and runs like the decider style', async () => {
    const process = processFromClass({
      name: 'responses',
      startedBy: ['Accepted'],
      correlate: () => 'all',
      create: () => new Responses(),
    });
    const { store, handled, manager } = setup(process as never);
    manager.start();
    try {
      for (const id of ['ana', 'bia', 'caio']) await answer(store, id, 'Accepted');
      await until(() => handled.length === 3, 'three commands');
      assert.deepEqual(
        handled.map((c) => [c.type, (c.data as { inviteId: string }).inviteId]),
        [
          ['Confirm', 'ana'],
          ['Confirm', 'bia'],
          ['Deny', 'caio'],
        ],
      );
      assert.deepEqual((await manager.instance('all'))?.state, { accepted: 3, confirmed: ['ana', 'bia'] });
    } finally {
      await manager.stop();
    }
  });

  it('refuses a create that is not a function, or an object without handle', () => {
    const base = { name: 'p', startedBy: ['A'], correlate: () => 'x' };
    assert.throws(() => processFromClass({ ...base, create: 'no' } as never), ValidationError);
    const noHandle = processFromClass({ ...base, create: () => ({}) as never });
    assert.throws(() => noHandle.initialState() && noHandle.decide({ kind: 'timer' } as never, {}), ValidationError);
  });
});
