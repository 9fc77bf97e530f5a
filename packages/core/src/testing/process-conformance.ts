import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createCommand } from '../command.js';
import { newId } from '../ids.js';
import type { ProcessStore, TimerRecord } from '../process/contract.js';

/** How the suite gets process stores. Each test uses process names of its own, so stores may share a database. */
export interface ProcessStoreFactory<Tx = unknown> {
  readonly name: string;
  /** A process store; a second call gives another client of the same storage (another process, as it were). */
  create(): Promise<ProcessStore<Tx>>;
}

/**
 * The behaviours every process store must have: instances, the outbox (per-instance order, retries, parking), timers
 * (replace, cancel, due, taken once), and, for atomic stores, all of one transaction or none of it.
 */
export function describeProcessStoreConformance<Tx>(factory: ProcessStoreFactory<Tx>): void {
  describe(`process store conformance: ${factory.name}`, () => {
    const opened: Array<ProcessStore<Tx>> = [];
    const open = async () => {
      const store = await factory.create();
      opened.push(store);
      return store;
    };
    after(async () => {
      for (const store of opened) await store.close().catch(() => undefined);
    });
    const processName = () => `p-${newId().slice(-12)}`;
    const at = (ms: number) => new Date(Date.UTC(2030, 0, 1) + ms);
    const command = (type = 'Confirm', data: unknown = { inviteId: 'a' }) => createCommand(type, data);

    it('keeps an instance: state, counts, correlation, position, completion; lists instances in order', async () => {
      const store = await open();
      const process = processName();
      assert.equal(await store.loadInstance(null, process, 'one'), null);
      const state = { accepted: 2, names: ['Ana', 'José 🙂'], nested: { deep: [1, [2, [3]]] } };
      await store.transaction((tx) =>
        store.saveInstance(tx, {
          process,
          instance: 'one',
          state,
          inputs: 1,
          ignored: 0,
          correlationId: 'c-1',
          lastPosition: '0000000000000001/0000000000000002',
          completed: false,
          startedAt: at(0),
          updatedAt: at(0),
        }),
      );
      const loaded = await store.loadInstance(null, process, 'one');
      assert.deepEqual(loaded?.state, state);
      assert.equal(loaded?.inputs, 1);
      assert.equal(loaded?.correlationId, 'c-1');
      assert.equal(loaded?.lastPosition, '0000000000000001/0000000000000002');
      assert.equal(loaded?.completed, false);
      assert.equal(loaded?.startedAt.getTime(), at(0).getTime());
      await store.transaction((tx) =>
        store.saveInstance(tx, {
          ...loaded!,
          state: { accepted: 3 },
          inputs: 2,
          ignored: 1,
          completed: true,
          updatedAt: at(5),
        }),
      );
      const again = await store.loadInstance(null, process, 'one');
      assert.deepEqual(again?.state, { accepted: 3 });
      assert.equal(again?.completed, true);
      assert.equal(again?.ignored, 1);
      assert.equal(again?.startedAt.getTime(), at(0).getTime(), 'startedAt stays');
      assert.equal(again?.updatedAt.getTime(), at(5).getTime());
      for (const id of ['b', 'a', 'c'])
        await store.transaction((tx) =>
          store.saveInstance(tx, { ...again!, instance: id, startedAt: at(1), updatedAt: at(1) }),
        );
      assert.deepEqual(
        (await store.listInstances(process)).map((r) => r.instance),
        ['a', 'b', 'c', 'one'],
      );
      assert.deepEqual(
        (await store.listInstances(process, { after: 'a', limit: 2 })).map((r) => r.instance),
        ['b', 'c'],
      );
      assert.deepEqual(await store.listInstances(processName()), [], 'another process has none');
    });

    it('sends the outbox per instance in order: a command id once, due commands only, a parked one holds its instance back', async () => {
      const store = await open();
      const process = processName();
      const [a1, a2, b1, c1] = [command('A1'), command('A2'), command('B1'), command('C1')];
      await store.transaction((tx) =>
        store.enqueue(tx, [
          { process, instance: 'a', command: a1, notBefore: at(0) },
          { process, instance: 'a', command: a2, notBefore: at(0) },
          { process, instance: 'b', command: b1, notBefore: at(0) },
          { process, instance: 'c', command: c1, notBefore: at(10) },
        ]),
      );
      await store.transaction((tx) => store.enqueue(tx, [{ process, instance: 'a', command: a1, notBefore: at(0) }]));
      assert.equal((await store.listCommands(process)).length, 4, 'an id enqueued again is kept once');
      const next = await store.nextCommands(process, at(0), 10);
      assert.deepEqual(
        next.map((row) => row.command.id),
        [a1.id, b1.id],
        'the oldest of each instance, due now',
      );
      assert.deepEqual(next[0]!.command, a1, 'the command as it was enqueued');
      assert.equal(next[0]!.attempts, 0);
      assert.equal(next[0]!.status, 'pending');
      assert.deepEqual(
        (await store.nextCommands(process, at(10), 10)).map((row) => row.command.id),
        [a1.id, b1.id, c1.id],
      );
      assert.deepEqual(
        (await store.nextCommands(process, at(10), 1)).map((row) => row.command.id),
        [a1.id],
        'limit',
      );
      assert.equal(await store.removeCommand(null, process, a1.id), true);
      assert.equal(await store.removeCommand(null, process, a1.id), false, 'removed once');
      assert.deepEqual(
        (await store.nextCommands(process, at(0), 10)).map((row) => row.command.id),
        [a2.id, b1.id],
      );
      await store.commandFailed(process, a2.id, {
        attempts: 1,
        error: { name: 'Error', message: 'broker away' },
        notBefore: at(100),
        park: false,
      });
      assert.deepEqual(
        (await store.nextCommands(process, at(50), 10)).map((row) => row.command.id),
        [b1.id, c1.id],
        'a command waiting for its retry is not due',
      );
      const retried = (await store.nextCommands(process, at(100), 10)).find((row) => row.command.id === a2.id);
      assert.equal(retried?.attempts, 1);
      assert.deepEqual(retried?.error, { name: 'Error', message: 'broker away' });
      await store.transaction((tx) =>
        store.enqueue(tx, [{ process, instance: 'b', command: command('B2'), notBefore: at(0) }]),
      );
      await store.commandFailed(process, b1.id, {
        attempts: 5,
        error: { name: 'Error', message: 'still failing' },
        notBefore: at(0),
        park: true,
      });
      assert.deepEqual(
        (await store.nextCommands(process, at(1000), 10)).map((row) => row.command.id),
        [a2.id, c1.id],
        'a parked command holds back its instance only',
      );
      assert.deepEqual(
        (await store.listCommands(process, { status: 'parked' })).map((row) => row.command.id),
        [b1.id],
      );
      assert.equal(await store.retryCommand(process, a2.id, at(0)), false, 'only a parked command is retried');
      assert.equal(await store.retryCommand(process, b1.id, at(1000)), true);
      assert.ok((await store.nextCommands(process, at(1000), 10)).some((row) => row.command.id === b1.id));
      assert.deepEqual(await store.nextCommands(processName(), at(1000), 10), [], 'another process has none');
    });

    it('keeps timers: set again replaces, cancel by id or all, due ones earliest first, taken once', async () => {
      const store = await open();
      const process = processName();
      const timer = (instance: string, id: string, due: number, data: unknown = null): TimerRecord => ({
        id,
        process,
        instance,
        name: 'answer-timeout',
        dueAt: at(due),
        data: data as TimerRecord['data'],
      });
      await store.transaction((tx) =>
        store.setTimers(tx, [timer('a', 't1', 30, { n: 1 }), timer('a', 't2', 10), timer('b', 't1', 20)]),
      );
      await store.transaction((tx) => store.setTimers(tx, [timer('a', 't1', 5, { n: 2 })]));
      const listed = await store.listTimers(process);
      assert.deepEqual(
        listed.map((t) => [t.instance, t.id, t.dueAt.getTime() - at(0).getTime()]),
        [
          ['a', 't1', 5],
          ['a', 't2', 10],
          ['b', 't1', 20],
        ],
      );
      assert.deepEqual(listed[0]!.data, { n: 2 }, 'the new timer replaced the old one');
      assert.deepEqual(
        (await store.listTimers(process, { instance: 'b' })).map((t) => t.id),
        ['t1'],
      );
      assert.deepEqual(
        (await store.dueTimers(process, at(10), 10)).map((t) => [t.instance, t.id]),
        [
          ['a', 't1'],
          ['a', 't2'],
        ],
      );
      assert.equal(
        await store.transaction((tx) => store.takeTimer(tx, process, 'b', 't1', at(19))),
        null,
        'not before it is due',
      );
      const taken = await store.transaction((tx) => store.takeTimer(tx, process, 'a', 't1', at(10)));
      assert.equal(taken?.id, 't1');
      assert.deepEqual(taken?.data, { n: 2 });
      assert.equal(
        await store.transaction((tx) => store.takeTimer(tx, process, 'a', 't1', at(10))),
        null,
        'taken once',
      );
      await store.transaction((tx) => store.cancelTimers(tx, process, 'a', ['t2', 'unknown']));
      assert.deepEqual(
        (await store.listTimers(process)).map((t) => [t.instance, t.id]),
        [['b', 't1']],
      );
      await store.transaction((tx) => store.setTimers(tx, [timer('b', 't2', 40)]));
      await store.transaction((tx) => store.cancelTimers(tx, process, 'b', 'all'));
      assert.deepEqual(await store.listTimers(process), []);
    });

    it('a second client sees what the first wrote; a timer taken by two clients at once is taken once', async () => {
      const [one, two] = [await open(), await open()];
      const process = processName();
      const timers: TimerRecord[] = Array.from({ length: 20 }, (_, i) => ({
        id: `t${i}`,
        process,
        instance: `i${i % 4}`,
        name: 'tick',
        dueAt: at(i),
        data: i,
      }));
      await one.transaction((tx) => one.setTimers(tx, timers));
      assert.equal((await two.listTimers(process)).length, 20);
      const take = (store: ProcessStore<Tx>, timer: TimerRecord) =>
        store.transaction((tx) => store.takeTimer(tx, process, timer.instance, timer.id, at(100)));
      const results = await Promise.all(timers.flatMap((timer) => [take(one, timer), take(two, timer)]));
      assert.equal(results.filter((result) => result !== null).length, 20, 'each timer taken once');
      assert.deepEqual(await one.listTimers(process), []);
    });

    it('a transaction that fails leaves nothing of itself, when the store is atomic', async (t) => {
      const store = await open();
      if (!store.atomic) return t.diagnostic('not atomic: writes stay once made (documented)');
      const process = processName();
      const failing = store.transaction(async (tx) => {
        await store.saveInstance(tx, {
          process,
          instance: 'x',
          state: { n: 1 },
          inputs: 1,
          ignored: 0,
          correlationId: 'c',
          lastPosition: null,
          completed: false,
          updatedAt: at(0),
        });
        await store.enqueue(tx, [{ process, instance: 'x', command: command(), notBefore: at(0) }]);
        await store.setTimers(tx, [{ id: 't', process, instance: 'x', name: 'tick', dueAt: at(0), data: null }]);
        throw new Error('the handler failed');
      });
      await assert.rejects(failing, /the handler failed/);
      assert.equal(await store.loadInstance(null, process, 'x'), null);
      assert.deepEqual(await store.listCommands(process), []);
      assert.deepEqual(await store.listTimers(process), []);
    });
  });
}
