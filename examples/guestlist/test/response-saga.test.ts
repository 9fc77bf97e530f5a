/** The talk's ResponseSaga on PGlite and PostgreSQL: confirm accepted guests up to the limit, deny the rest. */
// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createAsyncProjection, createProcessManager, systemClock } from '@eventline/core';
import { createTestClock, until } from '@eventline/core/testing';
import {
  createSqlDocumentStore,
  createSqlProcessStore,
  createSqlProjectionCatalog,
  createSqlSubscriptionStore,
  type SqlEventStore,
} from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import {
  AcceptInvite,
  CreateInvite,
  createGuestlist,
  DeclineInvite,
  GUEST_LIST,
  guestlistEvents,
  guestlistReadModels,
  responseSaga,
  type GuestListView,
  type InvitationView,
} from '../src/index.js';

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases();
});
after(() => databases.close());

const backends: Array<[string, () => SqlEventStore]> = [
  ['PostgreSQL', () => databases.postgres({ events: guestlistEvents })],
  ['PGlite', () => databases.pglite({ events: guestlistEvents })],
];

function guestlistWithSaga(store: SqlEventStore, options: { limit: number; answerTimeoutMs?: number }) {
  const clock = createTestClock();
  const { bus } = createGuestlist(store);
  const saga = createProcessManager({
    process: responseSaga(options),
    store,
    subscriptions: createSqlSubscriptionStore(store),
    processes: createSqlProcessStore(store),
    bus,
    // The saga's time is the test's; its subscription reads the log on the system's clock.
    clock,
    subscriptionClock: systemClock,
    pollIntervalMs: { commands: 20, timers: 20 },
  });
  const projection = createAsyncProjection({
    projection: guestlistReadModels,
    store,
    subscriptions: createSqlSubscriptionStore(store),
    documents: createSqlDocumentStore(store),
    catalog: createSqlProjectionCatalog(store),
    pollIntervalMs: 50,
  });
  return { clock, bus, saga, projection };
}

async function guestList(
  projection: ReturnType<typeof guestlistWithSaga>['projection'],
): Promise<GuestListView | null> {
  return (await projection.collection<GuestListView>('guest_list')).get('main');
}

for (const [name, create] of backends) {
  describe(`the ResponseSaga on ${name}`, () => {
    it('the talk: 4 invited - 3 accepted, 1 declined - 2 confirmed, 1 denied', async () => {
      const store = create();
      const { bus, saga, projection } = guestlistWithSaga(store, { limit: 2 });
      await projection.start();
      saga.start();
      try {
        for (const [inviteId, guest] of [
          ['athena', 'Athena'],
          ['hades', 'Hades'],
          ['zeus', 'Zeus'],
          ['poseidon', 'Poseidon'],
        ] as const)
          await bus.dispatch(CreateInvite.create({ inviteId, name: guest }));
        await bus.dispatch(AcceptInvite.create({ inviteId: 'athena' }));
        await bus.dispatch(AcceptInvite.create({ inviteId: 'hades' }));
        await bus.dispatch(DeclineInvite.create({ inviteId: 'zeus' }));
        await bus.dispatch(AcceptInvite.create({ inviteId: 'poseidon' }));
        await until(async () => (await guestList(projection))?.denied === 1, 'the third guest denied', 30_000);
        assert.deepEqual(await guestList(projection), {
          guests: 4,
          accepted: 3,
          declined: 1,
          confirmed: 2,
          denied: 1,
        });
        const invitations = await projection.collection<InvitationView>('invitation');
        assert.equal((await invitations.get('athena'))?.status, 'confirmed');
        assert.equal((await invitations.get('hades'))?.status, 'confirmed');
        assert.equal((await invitations.get('poseidon'))?.status, 'denied');
        assert.deepEqual((await saga.instance(GUEST_LIST))?.state, { accepted: 3, confirmed: 2 });
        assert.deepEqual(await saga.commands(), []);
      } finally {
        await saga.stop();
        await projection.stop();
      }
    });

    it('an invitation not answered in time is declined by the saga; an answer in time cancels its timer', async () => {
      const store = create();
      const { clock, bus, saga, projection } = guestlistWithSaga(store, { limit: 2, answerTimeoutMs: 3_600_000 });
      await projection.start();
      saga.start();
      try {
        await bus.dispatch(CreateInvite.create({ inviteId: 'ares', name: 'Ares' }));
        await bus.dispatch(CreateInvite.create({ inviteId: 'hera', name: 'Hera' }));
        await until(async () => (await saga.timers()).length === 2, 'two answer timers');
        await bus.dispatch(AcceptInvite.create({ inviteId: 'hera' }));
        await until(async () => (await saga.timers()).length === 1, 'hera’s timer cancelled by her answer');
        await clock.advance(3_599_999);
        await saga.runOnce();
        assert.equal((await saga.timers()).length, 1, 'not declined early');
        await clock.advance(1);
        await saga.runOnce();
        await until(async () => (await guestList(projection))?.declined === 1, 'ares declined by the saga', 30_000);
        const invitations = await projection.collection<InvitationView>('invitation');
        assert.equal((await invitations.get('ares'))?.status, 'declined');
        assert.equal((await invitations.get('hera'))?.status, 'confirmed');
        assert.deepEqual(await saga.timers(), []);
      } finally {
        await saga.stop();
        await projection.stop();
      }
    });
  });
}
