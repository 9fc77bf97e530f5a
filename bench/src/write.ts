/**
 * The write side on PostgreSQL (issue 3): command handling through the command bus (load + decide + append) against
 * the store's plain append of the same event, and loading a 10k-event aggregate with and without a snapshot against
 * a raw SELECT of its rows with the same fold.
 */
import { createPostgresStore, createSqlSnapshotStore } from '@eventline/postgres';
import {
  createCommandBus,
  createRepository,
  defaultMiddleware,
  defineAggregate,
  defineCommand,
  newId,
  type CommandOf,
  type StandardSchemaV1,
} from '@eventline/core';
import pg from 'pg';
import { concurrently, DATABASE_URL, interleave, rate, uniqueName, type BenchModule } from './harness.js';

const WRITERS = 8;
const COMMANDS = 3000;
const LOAD_EVENTS = 10_000;
const ROUNDS = 5;

/** A schema-free command definition (validation is not what this figure measures). */
const anything: StandardSchemaV1<{ id: string; amount: number }> = {
  '~standard': {
    version: 1,
    vendor: 'bench',
    validate: (value) => ({ value: value as { id: string; amount: number } }),
  },
};
const Deposit = defineCommand('Deposit', anything);
type Deposited = { type: 'Deposited'; data: { amount: number; note: string } };
const note = 'x'.repeat(150);

const account = (every?: number) =>
  defineAggregate<{ balance: number; count: number }, CommandOf<typeof Deposit>, Deposited>({
    category: 'account',
    ...(every ? { snapshots: { every } } : {}),
    initialState: () => ({ balance: 0, count: 0 }),
    decide: (command) => [{ type: 'Deposited', data: { amount: command.data.amount, note } }],
    evolve: (state, event) => ({ balance: state.balance + event.data.amount, count: state.count + 1 }),
  });

export const writeBench: BenchModule = {
  area: 'write side on PostgreSQL',
  figures: ['write.command.c8', 'write.command.c8.cached', 'write.load10k.full', 'write.load10k.snapshot'],
  async run(ctx) {
    const schema = uniqueName('bench_write');
    const store = createPostgresStore({ connectionString: DATABASE_URL, schema, poolSize: WRITERS + 2 });
    const raw = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
    try {
      await store.migrate();
      if (ctx.wants('write.command.c8')) {
        const repository = createRepository(store, account());
        const bus = createCommandBus({ middleware: defaultMiddleware(store) });
        bus.register(
          Deposit,
          repository.handler((command) => command.data.id),
        );
        const rounds = await interleave(
          ROUNDS,
          (round) =>
            rate(COMMANDS, () =>
              concurrently(WRITERS, COMMANDS, (i) =>
                bus.dispatch(Deposit.create({ id: `c${round}-${i}`, amount: 1 })).then(() => undefined),
              ),
            ),
          (round) =>
            rate(COMMANDS, () =>
              concurrently(WRITERS, COMMANDS, (i) =>
                store
                  .append(`account-r${round}-${i}`, [{ id: newId(), type: 'Deposited', data: { amount: 1, note } }], {
                    expectedVersion: 'no_stream',
                  })
                  .then(() => undefined),
              ),
            ),
        );
        ctx.record('write.command.c8', 'commands/s', rounds.value, rounds.baseline, rounds);
      }
      if (ctx.wants('write.command.c8.cached')) {
        // Each caller works on an aggregate of its own (new each round), command after command, through a repository
        // that keeps states in memory: a command decides on the cached state and appends with its version.
        const repository = createRepository(store, account(), { cache: true });
        const bus = createCommandBus({ middleware: defaultMiddleware(store) });
        bus.register(
          Deposit,
          repository.handler((command) => command.data.id),
        );
        const rounds = await interleave(
          ROUNDS,
          (round) =>
            rate(COMMANDS, () =>
              concurrently(WRITERS, COMMANDS, (_, caller) =>
                bus.dispatch(Deposit.create({ id: `h${round}-${caller}`, amount: 1 })).then(() => undefined),
              ),
            ),
          (round) => {
            const versions = Array.from({ length: WRITERS }, () => 0);
            return rate(COMMANDS, () =>
              concurrently(WRITERS, COMMANDS, async (_, caller) => {
                const expectedVersion = versions[caller] === 0 ? 'no_stream' : versions[caller]!;
                const result = await store.append(
                  `account-hr${round}-${caller}`,
                  [{ id: newId(), type: 'Deposited', data: { amount: 1, note } }],
                  { expectedVersion },
                );
                versions[caller] = result.version;
              }),
            );
          },
        );
        ctx.record('write.command.c8.cached', 'commands/s', rounds.value, rounds.baseline, rounds);
      }
      if (ctx.wants('write.load10k')) {
        ctx.log(`  seeding one stream of ${LOAD_EVENTS} events`);
        for (let done = 0; done < LOAD_EVENTS; done += 1000) {
          await store.append(
            'account-big',
            Array.from({ length: 1000 }, (_, i) => ({
              id: newId(),
              type: 'Deposited',
              data: { amount: done + i, note },
            })),
          );
        }
        const full = createRepository(store, account());
        const snapshots = createSqlSnapshotStore(store);
        const withSnapshot = createRepository(store, account(LOAD_EVENTS), { snapshots });
        await withSnapshot.snapshot('big');
        await store.append(
          'account-big',
          Array.from({ length: 10 }, () => ({ id: newId(), type: 'Deposited', data: { amount: 1, note } })),
        );
        const fold = account();
        const time = async (work: () => Promise<unknown>) => {
          const start = performance.now();
          await work();
          return performance.now() - start;
        };
        const fullRounds = await interleave(
          ROUNDS,
          () => time(() => full.load('big')),
          () =>
            time(async () => {
              const { rows } = await raw.query<{ type: 'Deposited'; data: Deposited['data'] }>(
                `SELECT type, data FROM "${schema}".events WHERE stream_id = $1 ORDER BY version`,
                ['account-big'],
              );
              let state = fold.initialState();
              for (const row of rows) state = fold.evolve(state, row);
              return state;
            }),
        );
        if (ctx.wants('write.load10k.full'))
          ctx.record('write.load10k.full', 'ms', fullRounds.value, fullRounds.baseline, fullRounds);
        if (ctx.wants('write.load10k.snapshot')) {
          const loaded = await withSnapshot.load('big');
          if (!loaded.fromSnapshot || loaded.eventsRead !== 10)
            throw new Error(`the snapshot was not used (read ${loaded.eventsRead} events)`);
          const snapshotRounds = await interleave(
            ROUNDS,
            () => time(() => withSnapshot.load('big')),
            () => time(() => full.load('big')),
          );
          ctx.record('write.load10k.snapshot', 'ms', snapshotRounds.value, snapshotRounds.baseline, snapshotRounds);
        }
      }
    } finally {
      await store.close();
      await raw.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await raw.end();
    }
  },
};
