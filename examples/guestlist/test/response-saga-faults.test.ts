/**
 * The ResponseSaga killed with SIGKILL 20 times while 200 guests accept an invitation to a list with room for 120:
 * each kill lands while the saga decides and sends. A new saga process is started after each kill. At the end exactly
 * 120 guests are confirmed and 80 denied, each invitation has one decision, and no command was handled twice.
 */
// tier: faults
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { collect, until } from '@eventline/core/testing';
import type { PostgresEventStore } from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import { between, FixtureProcess } from '../../../packages/postgres/test/child-process.js';
import { AcceptInvite, CreateInvite, createGuestlist, GUEST_LIST, guestlistEvents } from '../src/index.js';

const WORKER = fileURLToPath(new URL('./fixtures/saga-worker.ts', import.meta.url));
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const GUESTS = 200;
const LIMIT = 120;
const KILLS = 20;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases();
});
after(() => databases.close());

describe('the ResponseSaga killed with SIGKILL (PostgreSQL)', () => {
  it(`${KILLS} kills while ${GUESTS} guests accept, room for ${LIMIT}: exactly ${LIMIT} confirmed, the rest denied, no command handled twice`, async (t) => {
    const store: PostgresEventStore = databases.postgres({ events: guestlistEvents });
    await store.migrate();
    const { bus } = createGuestlist(store);
    for (let i = 0; i < GUESTS; i++) await bus.dispatch(CreateInvite.create({ inviteId: `g${i}`, name: `Guest ${i}` }));

    const workers: FixtureProcess[] = [];
    const start = (owner: string) => {
      const worker = new FixtureProcess(WORKER, {
        EVENTLINE_SAGA_URL: DATABASE_URL,
        EVENTLINE_SAGA_SCHEMA: store.schema,
        EVENTLINE_SAGA_LIMIT: String(LIMIT),
        EVENTLINE_SAGA_OWNER: owner,
      });
      workers.push(worker);
      return worker;
    };
    // The guests accept in the background, a few at a time, while the saga is killed and restarted.
    let accepted = 0;
    const accepting = (async () => {
      while (accepted < GUESTS) {
        const batch = Math.min(GUESTS - accepted, between(3, 12));
        await Promise.all(
          Array.from({ length: batch }, (_, i) => bus.dispatch(AcceptInvite.create({ inviteId: `g${accepted + i}` }))),
        );
        accepted += batch;
        await sleep(between(30, 120));
      }
    })();
    try {
      let killedWhileSending = 0;
      for (let kill = 1; kill <= KILLS; kill++) {
        const worker = start(`crash-${kill}`);
        const ready = await worker.waitForLine((line) => line === 'ready', 60_000);
        assert.ok(ready, `worker did not start: ${worker.stderr}`);
        // Killed once it is handling commands (after the lease of the one killed before has expired), or at random.
        const sending = await worker.waitForLine((line) => line.startsWith('handled '), between(1500, 3000));
        if (sending) {
          killedWhileSending++;
          await sleep(between(0, 150));
        }
        assert.ok(worker.alive, `worker exited on its own: ${worker.stderr}`);
        await worker.kill();
      }
      await accepting;
      const last = start('final');
      await until(
        async () => (await decisions(store)).perInvitation.size === GUESTS,
        'a decision for every guest',
        120_000,
      );
      t.diagnostic(`${KILLS} kills, ${killedWhileSending} while the saga was handling commands`);
      assert.ok(killedWhileSending >= KILLS / 2, `only ${killedWhileSending} of ${KILLS} kills hit a sending saga`);

      const { confirmed, denied, perInvitation } = await decisions(store);
      assert.equal(confirmed, LIMIT, `exactly ${LIMIT} confirmed`);
      assert.equal(denied, GUESTS - LIMIT, 'the rest denied');
      for (const [stream, count] of perInvitation) assert.equal(count, 1, `${stream} decided once`);
      // Every command the saga sent was handled once: one idempotency record per command, and no id handled twice.
      const records = await store.sql.query<{ count: number }>(
        `SELECT count(DISTINCT stream_id)::int AS count FROM "${store.schema}".events WHERE stream_id LIKE 'eventlineIdempotency-%' AND type = 'CommandHandled' AND data->>'commandType' IN ('ConfirmInvite', 'DenyInvite')`,
      );
      assert.equal(records[0]?.count, GUESTS, 'one handled command per guest');
      const handled = workers.flatMap((worker) => worker.lines.filter((line) => line.startsWith('handled ')));
      assert.equal(new Set(handled).size, handled.length, 'no command id handled twice, across all the processes');
      const state = await store.sql.query<{ state: unknown; inputs: number }>(
        `SELECT state, inputs::int AS inputs FROM "${store.schema}".process_instances WHERE process = 'guestlist-responses' AND instance = $1`,
        [GUEST_LIST],
      );
      assert.deepEqual(state[0]?.state, { accepted: GUESTS, confirmed: LIMIT });
      assert.equal(state[0]?.inputs, GUESTS * 2, 'each creation and each answer applied once');
      await last.stop();
    } finally {
      accepted = GUESTS;
      await accepting.catch(() => undefined);
      await Promise.all(workers.map((worker) => worker.kill()));
    }
  });
});

async function decisions(store: PostgresEventStore) {
  const events = await collect(store.readAll({ filter: { types: ['InviteConfirmed', 'InviteDenied'] } }));
  const perInvitation = new Map<string, number>();
  for (const event of events) perInvitation.set(event.streamId, (perInvitation.get(event.streamId) ?? 0) + 1);
  return {
    confirmed: events.filter((event) => event.type === 'InviteConfirmed').length,
    denied: events.filter((event) => event.type === 'InviteDenied').length,
    perInvitation,
  };
}
