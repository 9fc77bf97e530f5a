// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import { z } from 'zod';
import {
  createCommandBus,
  createProcessManager,
  defaultMiddleware,
  defineCommand,
  defineProcess,
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
  });
}

function schemaOf(store: SqlEventStore): string {
  return `"${store.schema}"`;
}
