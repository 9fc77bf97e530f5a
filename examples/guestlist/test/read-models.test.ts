// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createAsyncProjection,
  createInMemoryDocumentStore,
  createInMemoryProjectionCatalog,
  createInMemoryStore,
  createInMemorySubscriptionStore,
  DomainError,
} from '@eventline/core';
import {
  AcceptInvite,
  ConfirmInvite,
  CreateInvite,
  createGuestlist,
  DeclineInvite,
  DenyInvite,
  guestlistReadModels,
  type GuestListView,
  type InvitationView,
} from '../src/index.js';

describe('guestlist read models', () => {
  it('the invitation of each guest and the guest list counts, as in the talk', async () => {
    const store = createInMemoryStore();
    const { bus } = createGuestlist(store);
    const projection = createAsyncProjection({
      projection: guestlistReadModels,
      store,
      subscriptions: createInMemorySubscriptionStore(store),
      documents: createInMemoryDocumentStore(),
      catalog: createInMemoryProjectionCatalog(),
      pollIntervalMs: 10,
    });
    await projection.start();
    for (const [inviteId, name] of [
      ['athena', 'Athena'],
      ['hades', 'Hades'],
      ['zeus', 'Zeus'],
      ['poseidon', 'Poseidon'],
    ] as const) {
      await bus.dispatch(CreateInvite.create({ inviteId, name }));
    }
    await bus.dispatch(AcceptInvite.create({ inviteId: 'athena' }));
    await bus.dispatch(AcceptInvite.create({ inviteId: 'hades' }));
    await bus.dispatch(AcceptInvite.create({ inviteId: 'hades' })); // a repeat: no-op
    await bus.dispatch(DeclineInvite.create({ inviteId: 'zeus' }));
    await assert.rejects(bus.dispatch(AcceptInvite.create({ inviteId: 'zeus' })), DomainError); // no accept after decline
    await bus.dispatch(ConfirmInvite.create({ inviteId: 'athena' }));
    const last = await bus.dispatch(DenyInvite.create({ inviteId: 'hades' }));
    await projection.waitFor(last.position!);
    const invitations = await projection.collection<InvitationView>('invitation');
    assert.deepEqual(await invitations.get('athena'), {
      inviteId: 'athena',
      name: 'Athena',
      age: null,
      status: 'confirmed',
    });
    assert.equal((await invitations.get('poseidon'))?.status, 'created');
    assert.deepEqual(await (await projection.collection<GuestListView>('guest_list')).get('main'), {
      guests: 4,
      accepted: 2,
      declined: 1,
      confirmed: 1,
      denied: 1,
    });
    await projection.stop();
  });
});
