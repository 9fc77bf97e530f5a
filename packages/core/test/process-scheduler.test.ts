// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import {
  createCommandBus,
  createCommandScheduler,
  createInMemoryProcessStore,
  createInMemoryStore,
  defaultMiddleware,
  defineCommand,
  DomainError,
  UnknownCommandError,
  ValidationError,
  type Command,
  type CommandResult,
  type EventStoreSession,
} from '@eventline/core';
import { collect, createTestClock } from '@eventline/core/testing';

const Expire = defineCommand('Expire', z.object({ inviteId: z.string() }));

function setup(refuse?: (command: Command) => boolean) {
  const clock = createTestClock();
  const store = createInMemoryStore({ clock });
  const bus = createCommandBus({ middleware: defaultMiddleware(store) });
  const handled: Command[] = [];
  bus.register(Expire, async (command, context: { session?: EventStoreSession }): Promise<CommandResult> => {
    if (refuse?.(command)) throw new DomainError('the invite was answered', 'ANSWERED');
    handled.push(command);
    const streamId = `invite-${command.data.inviteId}`;
    const result = await (context.session ?? store).append(streamId, [{ type: 'Expired', data: null }]);
    return { streamId, version: result.version, position: result.position, events: [] };
  });
  const processes = createInMemoryProcessStore();
  const scheduler = (name?: string) =>
    createCommandScheduler({ processes, bus, clock, ...(name === undefined ? {} : { name }) });
  return { clock, store, bus, handled, processes, scheduler };
}

const expired = async (store: ReturnType<typeof createInMemoryStore>) =>
  (await collect(store.readAll())).filter((event) => event.type === 'Expired').map((event) => event.streamId);

describe('command scheduler', () => {
  it('sends a command once at its time, never before, with three schedulers on one store', async () => {
    const { clock, store, handled, scheduler } = setup();
    const schedulers = [scheduler(), scheduler(), scheduler()];
    const command = Expire.create({ inviteId: 'ana' });
    const { id, dueAt } = await schedulers[0]!.scheduleCommand({ afterMs: 60_000 }, command);
    assert.equal(id, command.id);
    assert.equal(dueAt.getTime(), clock.now() + 60_000);
    assert.deepEqual(
      (await schedulers[1]!.scheduled()).map((s) => [s.id, s.dueAt.getTime(), s.command.type]),
      [[id, dueAt.getTime(), 'Expire']],
    );
    await clock.advance(59_999);
    await Promise.all(schedulers.map((s) => s.runOnce()));
    assert.equal(handled.length, 0, 'not early');
    await clock.advance(1);
    const runs = await Promise.all(schedulers.map((s) => s.runOnce()));
    assert.equal(
      runs.reduce((sum, run) => sum + run.fired, 0),
      1,
      'taken by one scheduler',
    );
    await Promise.all(schedulers.map((s) => s.runOnce()));
    assert.deepEqual(await expired(store), ['invite-ana'], 'handled once');
    const sent = handled[0]!;
    assert.equal(sent.id, command.id);
    assert.equal(sent.metadata.idempotencyKey, command.id, 'its id is its idempotency key');
    assert.equal(sent.metadata.correlationId, command.metadata.correlationId);
    assert.deepEqual(await schedulers[2]!.scheduled(), []);
    assert.deepEqual(await schedulers[2]!.commands(), []);
    await clock.advance(3_600_000);
    await Promise.all(schedulers.map((s) => s.runOnce()));
    assert.equal(handled.length, 1, 'never again');
  });

  it('a command past due when no scheduler ran is sent late by the next one (a restart)', async () => {
    const { clock, store, scheduler } = setup();
    const before = scheduler('reminders');
    before.start();
    await before.scheduleCommand(new Date(clock.now() + 1000), Expire.create({ inviteId: 'bia' }));
    await before.stop();
    await clock.advance(3_600_000);
    const other = scheduler('other');
    await other.runOnce();
    assert.deepEqual(await expired(store), [], 'a scheduler of another name does not send it');
    const after = scheduler('reminders');
    assert.deepEqual(await after.runOnce(), { fired: 1, sent: 1 });
    assert.deepEqual(await expired(store), ['invite-bia']);
  });

  it('runs on its own once started: sends a due command without runOnce', async () => {
    const { clock, handled, scheduler } = setup();
    const running = scheduler();
    running.start();
    try {
      await running.scheduleCommand({ afterMs: 500 }, Expire.create({ inviteId: 'gil' }));
      await clock.untilSleeping(2);
      await clock.advance(500);
      for (let i = 0; i < 100 && handled.length === 0; i++) await clock.advance(100);
      assert.equal(handled.length, 1);
    } finally {
      await running.stop();
    }
  });

  it('cancel: a waiting command is not sent; a second cancel or an unknown id is false', async () => {
    const { clock, handled, scheduler } = setup();
    const s = scheduler();
    const { id } = await s.scheduleCommand({ afterMs: 1000 }, Expire.create({ inviteId: 'caio' }));
    const kept = await s.scheduleCommand({ afterMs: 1000 }, Expire.create({ inviteId: 'duda' }));
    assert.equal(await s.cancel(id.toUpperCase()), true);
    assert.equal(await s.cancel(id), false);
    assert.equal(await s.cancel('not-a-uuid'), false);
    assert.deepEqual(
      (await s.scheduled()).map((c) => c.id),
      [kept.id],
    );
    await clock.advance(1000);
    await s.runOnce();
    assert.deepEqual(
      handled.map((c) => (c.data as { inviteId: string }).inviteId),
      ['duda'],
    );
    assert.equal(await s.cancel(kept.id), false, 'sent already');
  });

  it('scheduling a command again before its time moves it; in a transaction of the process store', async () => {
    const { clock, handled, processes, scheduler } = setup();
    const s = scheduler();
    const command = Expire.create({ inviteId: 'eva' });
    await s.scheduleCommand({ afterMs: 1000 }, command);
    await processes.transaction((tx) => s.scheduleCommand({ afterMs: 5000 }, command, { tx }));
    assert.deepEqual(
      (await s.scheduled()).map((c) => c.dueAt.getTime()),
      [clock.now() + 5000],
    );
    await clock.advance(1000);
    await s.runOnce();
    assert.equal(handled.length, 0, 'moved later');
    await clock.advance(4000);
    await s.runOnce();
    assert.equal(handled.length, 1);
  });

  it('a command the domain refuses is parked (no process to compensate), and can be retried', async () => {
    let refusing = true;
    const { clock, handled, scheduler } = setup(() => refusing);
    const s = scheduler();
    const { id } = await s.scheduleCommand({ afterMs: 0 }, Expire.create({ inviteId: 'fil' }));
    await clock.advance(0);
    await s.runOnce();
    const [parked] = await s.commands({ status: 'parked' });
    assert.equal(parked?.command.id, id);
    assert.match(parked?.error?.message ?? '', /refused by the domain \(ANSWERED\): the invite was answered/);
    await s.runOnce();
    assert.equal((await s.commands({ status: 'parked' })).length, 1, 'stays parked');
    refusing = false;
    assert.equal(await s.retryCommand(id), true);
    await s.runOnce();
    assert.equal(handled.length, 1);
    assert.deepEqual(await s.commands(), []);
    assert.equal(await s.retryCommand(id), false);
  });

  it('refuses bad input with typed errors and keeps nothing of it', async () => {
    const { bus, processes, scheduler } = setup();
    const s = scheduler();
    const good = Expire.create({ inviteId: 'x' });
    for (const at of [
      new Date('not a date'),
      '2030-01-01',
      Date.now(),
      null,
      undefined,
      {},
      { afterMs: -1 },
      { afterMs: Number.NaN },
      { afterMs: Infinity },
      { afterMs: '10' },
      new Date(8.64e15),
      { afterMs: 1e16 },
    ])
      await assert.rejects(s.scheduleCommand(at as never, good), ValidationError, `at ${String(at)}`);
    for (const command of [
      null,
      'Expire',
      [],
      { type: 'Expire', data: {}, metadata: {} },
      { ...good, id: 'not-a-uuid' },
      { ...good, type: 'bad type\u0000' },
      { ...good, metadata: null },
      { ...good, data: { when: new Date() } },
      { ...good, data: { bad: '\ud800' } },
      { ...good, metadata: { correlationId: () => 1 } },
      { ...good, metadata: { idempotencyKey: 'has spaces and\u0000' } },
      { ...good, metadata: { idempotencyKey: 'k'.repeat(201) } },
    ])
      await assert.rejects(
        s.scheduleCommand({ afterMs: 1 }, command as never),
        ValidationError,
        JSON.stringify(command),
      );
    await assert.rejects(s.scheduleCommand({ afterMs: 1 }, { ...good, type: 'Unregistered' }), UnknownCommandError);
    assert.deepEqual(await s.scheduled(), []);
    for (const bad of [
      { name: 'has space' },
      { name: '' },
      { commandsInFlight: 0 },
      { pollIntervalMs: { timers: -1 } },
    ])
      assert.throws(() => createCommandScheduler({ processes, bus, ...bad }), ValidationError);
    assert.throws(() => createCommandScheduler({ processes, bus: {} as never }), ValidationError);
    assert.throws(() => createCommandScheduler(null as never), ValidationError);
  });
});
