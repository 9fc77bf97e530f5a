/**
 * The demo service under concurrent requests, on PostgreSQL and on PGlite: transfers crossing each other between two
 * accounts, and idempotency keys reused, at once and one after the other. Every answer is a 2xx or a 4xx
 * problem+json (never a 5xx), and every 2xx is true to what the log holds.
 */
// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { untilLogSettled } from '@eventline/core/testing';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import type { SqlEventStore } from '@eventline/postgres';
import { createDemo, sqlStorage } from '../src/app.js';
import { sampleCpf } from '@eventline/example-bank';

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases({ timeoutMs: 120_000 });
});
after(async () => {
  await databases.close();
});

interface Answer {
  status: number;
  type: string | undefined;
  body: Record<string, unknown>;
}

for (const backend of ['PostgreSQL', 'PGlite'] as const) {
  describe(`demo service under concurrency (${backend})`, () => {
    const open = async () => {
      const store: SqlEventStore = backend === 'PostgreSQL' ? databases.postgres() : databases.pglite();
      await store.migrate();
      const demo = await createDemo(sqlStorage(store));
      const send = async (type: string, data: unknown, headers: Record<string, string> = {}): Promise<Answer> => {
        const response = await demo.api.inject({
          method: 'POST',
          url: `/commands/${type}`,
          payload: data as object,
          headers,
        });
        return {
          status: response.statusCode,
          type: response.headers['content-type']?.toString(),
          body: response.json() as Record<string, unknown>,
        };
      };
      const balance = async (accountId: string) => BigInt((await demo.bank.accounts.load(accountId)).state.balance);
      return { store, demo, send, balance };
    };

    it('50 concurrent transfers, 25 each way between two accounts: no 5xx, every one done once, money conserved', async () => {
      const { demo, send, balance } = await open();
      try {
        for (const [accountId, owner] of [
          ['ada', 'Ada'],
          ['bob', 'Bob'],
        ] as const) {
          assert.equal(
            (await send('OpenAccount', { accountId, owner, holderTaxId: sampleCpf(accountId) })).status,
            200,
          );
          assert.equal((await send('Deposit', { accountId, amount: 1000 })).status, 200);
        }
        const transfers = Array.from({ length: 50 }, (_, i) =>
          i % 2 === 0 ? { from: 'ada', to: 'bob', amount: i + 1 } : { from: 'bob', to: 'ada', amount: i + 1 },
        );
        const answers = await Promise.all(transfers.map((transfer) => send('TransferMoney', transfer)));
        const statuses = answers.map((answer) => answer.status);
        assert.deepEqual(
          answers
            .filter((answer) => answer.status !== 200)
            .map((answer) => `${answer.status} ${String(answer.body.code)}: ${String(answer.body.detail)}`),
          [],
          'every transfer succeeds: they queue on the accounts instead of deadlocking',
        );
        assert.equal(statuses.length, 50);
        const toBob = transfers.filter((t) => t.to === 'bob').reduce((sum, t) => sum + t.amount, 0);
        const toAda = transfers.filter((t) => t.to === 'ada').reduce((sum, t) => sum + t.amount, 0);
        assert.equal(await balance('ada'), BigInt(1000 - toBob + toAda));
        assert.equal(await balance('bob'), BigInt(1000 + toBob - toAda));
        assert.equal((await balance('ada')) + (await balance('bob')), 2000n, 'money is conserved');
      } finally {
        await demo.close();
      }
    });

    it('an Idempotency-Key reused with another command is a 422 problem+json and changes nothing; the same command replays', async () => {
      const { store, demo, send, balance } = await open();
      try {
        await send('OpenAccount', { accountId: 'ada', owner: 'Ada', holderTaxId: sampleCpf('ada') });
        await send('OpenAccount', { accountId: 'bob', owner: 'Bob', holderTaxId: sampleCpf('bob') });
        const first = await send('Deposit', { accountId: 'ada', amount: 10 }, { 'idempotency-key': 'dep-1' });
        assert.equal(first.status, 200);
        const count = async () => {
          await untilLogSettled(store);
          let n = 0;
          for await (const _ of store.readAll()) n++;
          return n;
        };
        const before = await count();
        for (const [type, data] of [
          ['Deposit', { accountId: 'ada', amount: 999 }],
          ['Deposit', { accountId: 'bob', amount: 10 }],
          ['Withdraw', { accountId: 'ada', amount: 10 }],
        ] as const) {
          const reused = await send(type, data, { 'idempotency-key': 'dep-1' });
          assert.equal(reused.status, 422, JSON.stringify(reused.body));
          assert.match(reused.type ?? '', /^application\/problem\+json/);
          assert.equal(reused.body.code, 'IDEMPOTENCY_KEY_REUSED');
          assert.match(String(reused.body.detail), /new key/);
        }
        assert.equal(await count(), before, 'nothing was stored');
        const replay = await send('Deposit', { amount: 10, accountId: 'ada' }, { 'idempotency-key': 'dep-1' });
        assert.equal(replay.status, 200);
        assert.equal(replay.body.duplicate, true);
        assert.equal(replay.body.position, first.body.position);
        assert.equal(await balance('ada'), 10n);
        assert.equal(await balance('bob'), 0n);
      } finally {
        await demo.close();
      }
    });

    it('20 concurrent requests on one key with two amounts: exactly one effect, and every answer is true to it', async () => {
      const { demo, send, balance } = await open();
      try {
        await send('OpenAccount', { accountId: 'ada', owner: 'Ada', holderTaxId: sampleCpf('ada') });
        const amounts = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? 10 : 999));
        const answers = await Promise.all(
          amounts.map((amount) => send('Deposit', { accountId: 'ada', amount }, { 'idempotency-key': 'race-1' })),
        );
        const stored = await balance('ada');
        assert.ok(stored === 10n || stored === 999n, `one deposit took effect: ${stored}`);
        answers.forEach((answer, i) => {
          assert.ok(answer.status < 500, `${answer.status}: ${JSON.stringify(answer.body)}`);
          if (BigInt(amounts[i]!) === stored) {
            assert.equal(answer.status, 200, JSON.stringify(answer.body));
            const events = answer.body.events as Array<{ data: { amount: string } }>;
            assert.deepEqual(
              events.map((e) => BigInt(e.data.amount)),
              [stored],
            );
          } else {
            assert.equal(answer.status, 422, JSON.stringify(answer.body));
            assert.equal(answer.body.code, 'IDEMPOTENCY_KEY_REUSED');
          }
        });
        assert.equal(answers.filter((answer) => answer.status === 200 && answer.body.duplicate !== true).length, 1);
      } finally {
        await demo.close();
      }
    });
  });
}
