// tier: integration
// Regression: listening again right after the last listener went away (a subscription stopped, another started at
// once) started a second LISTEN loop beside the first, whose connection close() never ended (the process could not exit).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';

describe('PostgreSQL store LISTEN connection', () => {
  let databases: TestDatabases;
  before(async () => {
    databases = await openTestDatabases();
  });
  after(async () => {
    await databases.close();
  });

  it(
    'unlisten then listen at once, many times: close() leaves no LISTEN connection behind',
    { timeout: 60_000 },
    async () => {
      const store = databases.postgres();
      await store.migrate();
      const admin = new pg.Client({
        connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
      });
      await admin.connect();
      try {
        const listening = async () => {
          const rows = await admin.query<{ n: string }>(
            `SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND query LIKE $1`,
            [`%${store.schema}%`],
          );
          return Number(rows.rows[0]!.n);
        };
        let off = store.onAppended(() => undefined);
        for (let i = 0; i < 5; i++) {
          const deadline = Date.now() + 5_000;
          while ((await listening()) === 0 && Date.now() < deadline)
            await new Promise((resolve) => setTimeout(resolve, 20));
          off();
          off = store.onAppended(() => undefined); // at once: the old loop is still ending its connection
          await new Promise((resolve) => setTimeout(resolve, 1_200)); // longer than the reconnect pause
        }
        assert.ok(
          (await listening()) <= 1,
          `one LISTEN connection at most while listening (found ${await listening()})`,
        );
        off();
        await store.close();
        const deadline = Date.now() + 3_000;
        while ((await listening()) > 0 && Date.now() < deadline)
          await new Promise((resolve) => setTimeout(resolve, 50));
        assert.equal(await listening(), 0, 'no LISTEN connection left after close()');
      } finally {
        await admin.end();
      }
    },
  );
});
