// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import { z } from 'zod';
import {
  createCommandBus,
  createCommandScheduler,
  createProcessManager,
  defaultMiddleware,
  defineCommand,
  defineProcess,
  DomainError,
  systemClock,
  UnknownCommandError,
  ValidationError,
  type Command,
  type CommandResult,
  type EventStoreSession,
  type ProcessManager,
} from '@eventline/core';
import { createTestClock, describeProcessStoreConformance, until } from '@eventline/core/testing';
import {
  createPGliteStore,
  createPostgresStore,
  createSqlProcessStore,
  createSqlSubscriptionStore,
  sqlOf,
  type SqlEventStore,
} from '@eventline/postgres';
import { cleanUp, connectForTests, uniqueSchema } from './helpers.js';

let admin: pg.Client | undefined;
let pglite: PGlite;
const schemas: string[] = [];
const stores: SqlEventStore[] = [];
const running: ProcessManager[] = [];

before(async () => {
  admin = await connectForTests();
  pglite = new PGlite();
});
after(async () => {
  for (const manager of running) await manager.stop().catch(() => undefined);
  await Promise.all(stores.map((store) => store.close()));
  await pglite.close();
  await cleanUp(admin, schemas);
});

const backends: Array<[string, (schema: string) => SqlEventStore]> = [
  [
    'PostgreSQL',
    (schema) => {
      if (!schemas.includes(schema)) schemas.push(schema);
      const store = createPostgresStore({ schema, poolSize: 4 });
      stores.push(store);
      return store;
    },
  ],
  [
    'PGlite',
    (schema) => {
      const store = createPGliteStore({ db: pglite, schema });
      stores.push(store);
      return store;
    },
  ],
];

const Ping = defineCommand('Ping', z.object({ n: z.number().int() }));

for (const [name, create] of backends) {
  const conformanceSchema = uniqueSchema('proc');
  describeProcessStoreConformance({
    name,
    async create() {
      const store = create(conformanceSchema);
      await store.migrate();
      return createSqlProcessStore(store);
    },
  });

  describe(`process managers on ${name}`, () => {
    /** Each `Tick` event sets `count` timers due at once; each fired timer sends one Ping. */
    const ticks = (count: number) =>
      defineProcess({
        name: 'ticks',
        startedBy: ['Tick'],
        correlate: (event) => event.streamId,
        initialState: () => ({ fired: 0 }),
        evolve: (state, input) => (input.kind === 'timer' ? { fired: state.fired + 1 } : state),
        decide: (input) =>
          input.kind === 'event'
            ? {
                schedule: Array.from({ length: count }, (_, i) => ({
                  id: `t${i}`,
                  name: 'tick',
                  afterMs: 1000,
                  data: i,
                })),
              }
            : input.kind === 'timer'
              ? { commands: [Ping.create({ n: input.data as number })] }
              : {},
      });

    function runner(
      store: SqlEventStore,
      clock: ReturnType<typeof createTestClock>,
      handled: Command[],
      owner: string,
    ) {
      const bus = createCommandBus({ middleware: defaultMiddleware(store) });
      bus.register(Ping, async (command, context: { session?: EventStoreSession }): Promise<CommandResult> => {
        handled.push(command);
        const result = await (context.session ?? store).append(`ping-${command.id}`, [{ type: 'Pinged', data: null }]);
        return { streamId: `ping-${command.id}`, version: result.version, position: result.position, events: [] };
      });
      const manager = createProcessManager({
        process: ticks(30),
        store,
        subscriptions: createSqlSubscriptionStore(store),
        processes: createSqlProcessStore(store),
        bus,
        clock,
        lease: { owner, ttlMs: 60_000 },
        pollIntervalMs: { commands: 20, timers: 20 },
      });
      running.push(manager);
      return manager;
    }

    it('three runners on one schema: every timer fires once, its command is handled once, none early', async () => {
      const schema = uniqueSchema('proc');
      const clock = createTestClock();
      const handled: Command[] = [];
      const [one, two, three] = ['a', 'b', 'c'].map((owner) => {
        const store = create(schema);
        return { store, manager: runner(store, clock, handled, owner) };
      });
      await one!.store.migrate();
      for (const { manager } of [one!, two!, three!]) manager.start();
      await one!.store.append('tick-1', [{ type: 'Tick', data: null }]);
      await until(async () => (await one!.manager.timers()).length === 30, '30 timers set');
      await Promise.all([one!, two!, three!].map(({ manager }) => manager.runOnce()));
      assert.equal(handled.length, 0, 'no timer fires before it is due');
      await clock.advance(1000);
      await Promise.all([one!, two!, three!].map(({ manager }) => manager.runOnce()));
      await until(async () => handled.length >= 30 && (await one!.manager.commands()).length === 0, 'all sent');
      await Promise.all([one!, two!, three!].map(({ manager }) => manager.runOnce()));
      const instance = await one!.manager.instance('tick-1');
      assert.equal((instance?.state as { fired: number }).fired, 30, 'each timer was an input once');
      assert.equal(new Set(handled.map((c) => c.id)).size, 30);
      const pings = await one!.store.sql.query<{ count: number }>(
        `SELECT count(*)::int AS count FROM ${schemaOf(one!.store)}.events WHERE type = 'Pinged'`,
      );
      assert.equal(pings[0]?.count, 30, 'thirty Pings in the log, none twice');
      assert.deepEqual(await one!.manager.timers(), []);
      for (const { manager } of [one!, two!, three!]) await manager.stop();
    });

    it('one instance saved twice in one batch keeps the last state; a timer set twice keeps the last setting', async () => {
      const store = create(uniqueSchema('proc'));
      await store.migrate();
      const processes = createSqlProcessStore(store);
      const record = (instance: string, n: number) => ({
        process: 'twice',
        instance,
        state: { n },
        inputs: n,
        ignored: 0,
        correlationId: 'c',
        lastPosition: null,
        completed: false,
        updatedAt: new Date(Date.UTC(2030, 0, 1, 0, 0, n)),
      });
      const timer = (n: number) => ({
        process: 'twice',
        instance: 'a',
        id: 't',
        name: `setting-${n}`,
        dueAt: new Date(Date.UTC(2030, 0, 1, 0, 0, n)),
        data: n,
      });
      // Made together on one transaction, the calls go to the server as one statement each (see `coalesced`).
      await processes.transaction((tx) =>
        Promise.all([
          processes.saveInstance(tx, record('a', 1)),
          processes.saveInstance(tx, record('b', 1)),
          processes.saveInstance(tx, record('a', 2)),
          processes.setTimers(tx, [timer(1)]),
          processes.setTimers(tx, [timer(2)]),
        ]),
      );
      const a = await processes.loadInstance(null, 'twice', 'a');
      assert.deepEqual(a?.state, { n: 2 });
      assert.equal(a?.inputs, 2);
      assert.deepEqual((await processes.loadInstance(null, 'twice', 'b'))?.state, { n: 1 });
      assert.deepEqual(
        (await processes.listTimers('twice')).map((t) => [t.name, t.data]),
        [['setting-2', 2]],
      );
    });

    it('a timer cancelled by an earlier input of the same batch does not fire', async () => {
      const store = create(uniqueSchema('proc'));
      await store.migrate();
      const clock = createTestClock();
      const fired: string[] = [];
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
                schedule: ['first', 'second', 'third'].map((id) => ({ id, name: id, afterMs: 1000 })),
              };
            if (input.kind === 'timer') fired.push(input.id);
            return input.kind === 'timer' && input.id === 'first' ? { cancel: ['second'] } : {};
          },
        }),
        store,
        subscriptions: createSqlSubscriptionStore(store),
        processes: createSqlProcessStore(store),
        bus: createCommandBus(),
        clock,
        subscriptionClock: systemClock,
      });
      running.push(manager);
      const { position } = await store.append('race-1', [{ type: 'Start', data: null }]);
      manager.subscription.start();
      await manager.subscription.waitFor(position, { timeoutMs: 10_000 });
      await manager.subscription.stop();
      await clock.advance(1000);
      assert.deepEqual(await manager.runOnce(), { sent: 0, fired: 3 }, 'the three taken in one batch');
      assert.deepEqual(fired, ['first', 'third']);
      assert.deepEqual((await manager.instance('one'))?.state, { fired: ['first', 'third'] });
    });
  });

  describe(`the command scheduler on ${name}`, () => {
    const Expire = defineCommand('Expire', z.object({ inviteId: z.string() }));

    function scheduler(
      store: SqlEventStore,
      clock: ReturnType<typeof createTestClock>,
      options: { refuse?: boolean; handled?: Command[] } = {},
    ) {
      const bus = createCommandBus({ middleware: defaultMiddleware(store) });
      bus.register(Expire, async (command, context: { session?: EventStoreSession }): Promise<CommandResult> => {
        if (options.refuse) throw new DomainError('answered already', 'ANSWERED');
        options.handled?.push(command);
        const streamId = `invite-${command.data.inviteId}`;
        const result = await (context.session ?? store).append(streamId, [{ type: 'Expired', data: null }]);
        return { streamId, version: result.version, position: result.position, events: [] };
      });
      const processes = createSqlProcessStore(store);
      return { processes, scheduler: createCommandScheduler({ processes, bus, clock, name: 'invites' }) };
    }

    const expiredIn = async (store: SqlEventStore) =>
      (
        await store.sql.query<{ stream_id: string }>(
          `SELECT stream_id FROM ${schemaOf(store)}.events WHERE type = 'Expired' ORDER BY stream_id`,
        )
      ).map((row) => row.stream_id);

    it('three schedulers on one schema: each command sent once, none early; late after a restart', async () => {
      const schema = uniqueSchema('sched');
      const clock = createTestClock();
      const handled: Command[] = [];
      const stores = [create(schema), create(schema), create(schema)];
      await stores[0]!.migrate();
      const schedulers = stores.map((store) => scheduler(store, clock, { handled }).scheduler);
      for (let i = 0; i < 20; i++)
        await schedulers[i % 3]!.scheduleCommand({ afterMs: 1000 + i }, Expire.create({ inviteId: `i${i}` }));
      await Promise.all(schedulers.map((s) => s.runOnce()));
      assert.equal(handled.length, 0, 'not early');
      await clock.advance(1019);
      await Promise.all(schedulers.map((s) => s.runOnce()));
      await Promise.all(schedulers.map((s) => s.runOnce()));
      const expired = await expiredIn(stores[0]!);
      assert.equal(expired.length, 20, 'each command handled once');
      assert.equal(new Set(expired).size, 20);
      assert.deepEqual(await schedulers[1]!.scheduled(), []);
      assert.deepEqual(await schedulers[2]!.commands(), []);

      // A restart: a command due while no scheduler runs goes, late, with the next one on the schema.
      await schedulers[0]!.scheduleCommand({ afterMs: 500 }, Expire.create({ inviteId: 'late' }));
      await clock.advance(3_600_000);
      const next = scheduler(create(schema), clock, { handled }).scheduler;
      assert.deepEqual(await next.runOnce(), { fired: 1, sent: 1 });
      assert.ok((await expiredIn(stores[0]!)).includes('invite-late'));
    });

    it('cancel; scheduled in a transaction that rolls back leaves nothing; one that commits with its writes', async () => {
      const store = create(uniqueSchema('sched'));
      await store.migrate();
      const clock = createTestClock();
      const handled: Command[] = [];
      const { processes, scheduler: s } = scheduler(store, clock, { handled });
      const cancelled = await s.scheduleCommand({ afterMs: 1000 }, Expire.create({ inviteId: 'cancelled' }));
      assert.equal(await s.cancel(cancelled.id), true);
      assert.equal(await s.cancel(cancelled.id), false);
      await assert.rejects(
        processes.transaction(async (tx) => {
          await s.scheduleCommand({ afterMs: 1000 }, Expire.create({ inviteId: 'rolled-back' }), { tx });
          throw new Error('the caller fails');
        }),
        /the caller fails/,
      );
      // The application's own append and the schedule in one transaction of the store.
      await store.transaction(async (session) => {
        await session.append('invite-kept', [{ type: 'Invited', data: null }]);
        await s.scheduleCommand({ afterMs: 1000 }, Expire.create({ inviteId: 'kept' }), { tx: sqlOf(session) });
      });
      assert.deepEqual(
        (await s.scheduled()).map((c) => (c.command.data as { inviteId: string }).inviteId),
        ['kept'],
      );
      await clock.advance(1000);
      await s.runOnce();
      assert.deepEqual(
        handled.map((c) => (c.data as { inviteId: string }).inviteId),
        ['kept'],
      );
    });

    it('a command the domain refuses is parked; bad input is refused with typed errors', async () => {
      const store = create(uniqueSchema('sched'));
      await store.migrate();
      const clock = createTestClock();
      const { scheduler: s } = scheduler(store, clock, { refuse: true });
      const { id } = await s.scheduleCommand(new Date(clock.now()), Expire.create({ inviteId: 'x' }));
      await s.runOnce();
      const [parked] = await s.commands({ status: 'parked' });
      assert.equal(parked?.command.id, id);
      assert.match(parked?.error?.message ?? '', /refused by the domain \(ANSWERED\)/);
      await assert.rejects(s.scheduleCommand(new Date('nope'), Expire.create({ inviteId: 'x' })), ValidationError);
      await assert.rejects(s.scheduleCommand({ afterMs: -5 }, Expire.create({ inviteId: 'x' })), ValidationError);
      await assert.rejects(s.scheduleCommand({ afterMs: 5 }, { type: 'Expire' } as never), ValidationError);
      await assert.rejects(
        s.scheduleCommand({ afterMs: 5 }, { ...Expire.create({ inviteId: 'x' }), type: 'Other' }),
        UnknownCommandError,
      );
      assert.deepEqual(await s.scheduled(), []);
    });
  });
}

function schemaOf(store: SqlEventStore): string {
  return `"${store.schema}"`;
}
