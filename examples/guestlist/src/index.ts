/** The guest list: invitations on a command bus, over any event store. */
import {
  createCommandBus,
  createRepository,
  defaultMiddleware,
  eventRegistry,
  type EventStore,
  type Middleware,
  type SnapshotStore,
} from '@eventline/core';
import {
  AcceptInvite,
  ConfirmInvite,
  CreateInvite,
  DeclineInvite,
  DenyInvite,
  invitation,
  invitationEvents,
} from './invitation.js';

export * from './invitation.js';
export * from './read-models.js';
export * from './response-saga.js';

export const guestlistEvents = eventRegistry(invitationEvents, { strict: false });

export function createGuestlist(
  store: EventStore,
  options: { snapshots?: SnapshotStore; cache?: boolean; middleware?: readonly Middleware[] } = {},
) {
  const { middleware = [], ...repository } = options;
  const invitations = createRepository(store, invitation, repository);
  // Extra middleware runs outermost, around the default chain (validation, retries, idempotency keys).
  const bus = createCommandBus({ middleware: [...middleware, ...defaultMiddleware(store)] });
  const byInvite = invitations.handler((command) => command.data.inviteId);
  for (const command of [CreateInvite, AcceptInvite, DeclineInvite, ConfirmInvite, DenyInvite])
    bus.register(command, byInvite);
  return { bus, invitations };
}
