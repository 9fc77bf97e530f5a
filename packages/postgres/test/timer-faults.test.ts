/**
 * Durable timers with three runner processes on one schema, SIGKILLed and restarted while timers come due, then all
 * of them down until a second set of timers is past due and one started again: every timer fires exactly once
 * (counted in the database), none before its due time, none lost.
 */
// tier: faults
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { until } from '@eventline/core/testing';
import type { PostgresEventStore } from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import { between, FixtureProcess } from './child-process.js';

const WORKER = fileURLToPath(new URL('./fixtures/timer-worker.ts', import.meta.url));
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases();
});
after(() => databases.close());

describe('durable timers across processes (PostgreSQL)', () => {
  it('three runners killed and restarted while 300 timers come due, then 100 fired late after a restart: each once, none early', async (t) => {
    const store: PostgresEventStore = databases.postgres();
    await store.migrate();
    const s = `"${store.schema}"`;
    const workers: FixtureProcess[] = [];
    const start = async (owner: string) => {
      const worker = new FixtureProcess(WORKER, {
        EVENTLINE_TIMERS_URL: DATABASE_URL,
        EVENTLINE_TIMERS_SCHEMA: store.schema,
        EVENTLINE_TIMERS_OWNER: owner,
      });
      workers.push(worker);
      assert.ok(await worker.waitForLine((line) => line === 'ready', 60_000), `worker did not start: ${worker.stderr}`);
      return worker;
    };
    const rang = async () =>
      (
        await store.sql.query<{ count: number }>(`SELECT count(*)::int AS count FROM ${s}.events WHERE type = 'Rang'`)
      )[0]!.count;
    const pending = async (instance: string) =>
      (
        await store.sql.query<{ count: number }>(
          `SELECT count(*)::int AS count FROM ${s}.process_timers WHERE process = 'alarms' AND instance = $1`,
          [instance],
        )
      )[0]!.count;
    try {
      // 1. Three runners; 300 timers due from 3 s to 9 s from now; kills while they fire.
      const running = [await start('a'), await start('b'), await start('c')];
      const startAt = Date.now() + 3000;
      await store.append('alarms-1', [{ type: 'AlarmsSet', data: { first: 0, count: 300, startAt, spreadMs: 6000 } }]);
      await until(async () => (await pending('alarms-1')) === 300, '300 timers set', 30_000);
      let kills = 0;
      while (Date.now() < startAt + 6000) {
        await sleep(between(400, 1200));
        const index = between(0, running.length - 1);
        await running[index]!.kill();
        kills++;
        running[index] = await start(`r${kills}`);
      }
      await until(async () => (await rang()) === 300, 'the first 300 rung', 60_000);
      t.diagnostic(`${kills} kills while the first 300 timers came due`);

      // 2. 100 more timers, then every runner down until they are all past due; one runner started again.
      const lateAt = Date.now() + 2000;
      await store.append('alarms-2', [
        { type: 'AlarmsSet', data: { first: 300, count: 100, startAt: lateAt, spreadMs: 500 } },
      ]);
      await until(async () => (await pending('alarms-2')) === 100, '100 more timers set', 30_000);
      await Promise.all(running.map((worker) => worker.kill()));
      assert.equal(await rang(), 300, 'nothing of the second set rang before it was due');
      await sleep(Math.max(0, lateAt + 500 - Date.now()) + 1000);
      const restarted = await start('after-restart');
      await until(async () => (await rang()) === 400, 'the late 100 rung', 60_000);
      await sleep(500); // a second ring of any timer would show now

      // Exactly once, none early, none lost: one Rang per timer, at or after its due time, and no timer left.
      const rows = await store.sql.query<{ stream_id: string; data: { n: number; dueAt: number }; at: number }>(
        `SELECT stream_id, data, (extract(epoch FROM recorded_at) * 1000)::float8 AS at FROM ${s}.events WHERE type = 'Rang'`,
      );
      assert.equal(rows.length, 400, 'one ring per timer');
      assert.equal(new Set(rows.map((row) => row.stream_id)).size, 400, 'no timer rang twice');
      assert.deepEqual(
        rows.map((row) => row.data.n).sort((a, b) => a - b),
        Array.from({ length: 400 }, (_, i) => i),
        'every timer rang',
      );
      const early = rows.filter((row) => row.at < row.data.dueAt);
      assert.deepEqual(early, [], 'no timer rang before it was due');
      assert.equal((await pending('alarms-1')) + (await pending('alarms-2')), 0, 'no timer left');
      const late = rows.filter((row) => row.data.n >= 300).map((row) => row.at - row.data.dueAt);
      t.diagnostic(`the late 100 fired ${Math.round(Math.min(...late))}–${Math.round(Math.max(...late))} ms after due`);
      await restarted.stop();
    } finally {
      await Promise.all(workers.map((worker) => worker.kill()));
    }
  });
});
