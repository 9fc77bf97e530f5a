/** The guest list read models of the talk: the invitation of each guest, and the guest list counts. */
import { defineProjection, type ProjectionDocuments, type RecordedEvent } from '@eventline/core';

export interface InvitationView {
  inviteId: string;
  name: string;
  age: number | null;
  status: 'created' | 'accepted' | 'declined' | 'confirmed' | 'denied';
}

export interface GuestListView {
  guests: number;
  accepted: number;
  declined: number;
  confirmed: number;
  denied: number;
}

const inviteIdOf = (event: RecordedEvent) => event.streamId.slice('invitation-'.length);
const statusOf: Record<string, InvitationView['status']> = {
  InviteAccepted: 'accepted',
  InviteDeclined: 'declined',
  InviteConfirmed: 'confirmed',
  InviteDenied: 'denied',
};

const counted = (status: InvitationView['status']): keyof GuestListView | null =>
  status === 'created' ? null : status;

async function respond(event: RecordedEvent, documents: <T>(name: string) => ProjectionDocuments<T>) {
  const status = statusOf[event.type]!;
  const changed = await documents<InvitationView>('invitation').update(inviteIdOf(event), (current) =>
    current ? { ...current, status } : null,
  );
  if (!changed) return;
  await documents<GuestListView>('guest_list').update('main', (current) => {
    const counts = { guests: 0, accepted: 0, declined: 0, confirmed: 0, denied: 0, ...current };
    const key = counted(status);
    if (key) counts[key]++;
    return counts;
  });
}

export const guestlistReadModels = defineProjection({
  name: 'guestlist',
  version: 1,
  categories: ['invitation'],
  collections: ['invitation', 'guest_list'],
  handlers: {
    InviteCreated: async (event, { documents }) => {
      const data = event.data as { name: string; age?: number };
      const created = await documents<InvitationView>('invitation').set(inviteIdOf(event), {
        inviteId: inviteIdOf(event),
        name: data.name,
        age: data.age ?? null,
        status: 'created',
      });
      if (!created) return;
      await documents<GuestListView>('guest_list').update('main', (current) => {
        const counts = { guests: 0, accepted: 0, declined: 0, confirmed: 0, denied: 0, ...current };
        return { ...counts, guests: counts.guests + 1 };
      });
    },
    InviteAccepted: (event, { documents }) => respond(event, documents),
    InviteDeclined: (event, { documents }) => respond(event, documents),
    InviteConfirmed: (event, { documents }) => respond(event, documents),
    InviteDenied: (event, { documents }) => respond(event, documents),
  },
});
