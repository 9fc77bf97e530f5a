/** The guest list on PGlite and PostgreSQL: commands through the bus, rules, and its read models in the database. */
// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createAsyncProjection, DomainError } from '@eventline/core';
import {
  createSqlDocumentStore,
  createSqlProjectionCatalog,
  createSqlSnapshotStore,
  createSqlSubscriptionStore,
  type SqlEventStore,
} from '@eventline/postgres';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import {
  AcceptInvite,
  ConfirmInvite,
  CreateInvite,
  createGuestlist,
  DeclineInvite,
  guestlistEvents,
  guestlistReadModels,
  type GuestListView,
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

for (const [name, create] of backends) {
  describe(`guestlist on ${name}`, () => {
    it('invitations follow the rules and the guest list counts follow the invitations', async () => {
      const store = create();
      const { bus, invitations } = createGuestlist(store, { snapshots: createSqlSnapshotStore(store) });
      const projection = createAsyncProjection({
        projection: guestlistReadModels,
        store,
        subscriptions: createSqlSubscriptionStore(store),
        documents: createSqlDocumentStore(store),
        catalog: createSqlProjectionCatalog(store),
        pollIntervalMs: 50,
      });
      await projection.start();
      try {
        await bus.dispatch(CreateInvite.create({ inviteId: 'athena', name: 'Athena', age: 42 }));
        await bus.dispatch(CreateInvite.create({ inviteId: 'hades', name: 'Hades' }));
        await bus.dispatch(AcceptInvite.create({ inviteId: 'athena' }));
        await bus.dispatch(DeclineInvite.create({ inviteId: 'hades' }));
        await assert.rejects(
          bus.dispatch(AcceptInvite.create({ inviteId: 'hades' })),
          (e: unknown) => e instanceof DomainError && e.rule === 'ALREADY_DECLINED',
        );
        await assert.rejects(
          bus.dispatch(ConfirmInvite.create({ inviteId: 'hades' })),
          (e: unknown) => e instanceof DomainError && e.rule === 'NOT_ACCEPTED',
        );
        const last = await bus.dispatch(ConfirmInvite.create({ inviteId: 'athena' }));
        await projection.waitFor(last.position!, { timeoutMs: 30_000 });
        assert.deepEqual(await (await projection.collection<GuestListView>('guest_list')).get('main'), {
          guests: 2,
          accepted: 1,
          declined: 1,
          confirmed: 1,
          denied: 0,
        });
        assert.equal((await invitations.load('athena')).state.decision, 'confirmed');
      } finally {
        await projection.stop(); // also when an assertion failed: a running projection keeps the file from ending
      }
    });
  });
}
