// tier: unit
import { describe, it } from 'node:test';
import { DomainError } from '@eventline/core';
import { DeciderSpecification } from '@eventline/core/testing';
import {
  AcceptInvite,
  ConfirmInvite,
  CreateInvite,
  DeclineInvite,
  DenyInvite,
  invitation,
  InviteAccepted,
  InviteConfirmed,
  InviteCreated,
  InviteDeclined,
  InviteDenied,
} from '../src/index.js';

const spec = DeciderSpecification.for(invitation);
const rule = (name: string) => (error: DomainError) => error.rule === name;
const id = { inviteId: 'athena' };
const created = InviteCreated.create({ name: 'Athena', age: 42 });
const accepted = InviteAccepted.create(null);
const declined = InviteDeclined.create(null);

describe('guestlist: invitations', () => {
  it('are created, then accepted or declined', async () => {
    await spec
      .given([])
      .when(CreateInvite.create({ ...id, name: 'Athena', age: 42 }))
      .then([created]);
    await spec.given([created]).when(AcceptInvite.create(id)).then([accepted]);
    await spec.given([created]).when(DeclineInvite.create(id)).then([declined]);
  });

  it('no decline after accept, no accept after decline', async () => {
    await spec
      .given([created, accepted])
      .when(DeclineInvite.create(id))
      .thenThrows(DomainError, rule('ALREADY_ACCEPTED'));
    await spec
      .given([created, declined])
      .when(AcceptInvite.create(id))
      .thenThrows(DomainError, rule('ALREADY_DECLINED'));
  });

  it('repeats are no-ops', async () => {
    await spec
      .given([created])
      .when(CreateInvite.create({ ...id, name: 'Athena' }))
      .then([]);
    await spec.given([created, accepted]).when(AcceptInvite.create(id)).then([]);
    await spec.given([created, declined]).when(DeclineInvite.create(id)).then([]);
    await spec
      .given([created, accepted, InviteConfirmed.create(null)])
      .when(ConfirmInvite.create(id))
      .then([]);
    await spec
      .given([created, accepted, InviteDenied.create(null)])
      .when(DenyInvite.create(id))
      .then([]);
  });

  it('only accepted invites can be confirmed or denied', async () => {
    await spec
      .given([created, accepted])
      .when(ConfirmInvite.create(id))
      .then([InviteConfirmed.create(null)]);
    await spec
      .given([created, accepted])
      .when(DenyInvite.create(id))
      .then([InviteDenied.create(null)]);
    await spec.given([created]).when(ConfirmInvite.create(id)).thenThrows(DomainError, rule('NOT_ACCEPTED'));
    await spec.given([created, declined]).when(DenyInvite.create(id)).thenThrows(DomainError, rule('NOT_ACCEPTED'));
    await spec
      .given([created, accepted, InviteDenied.create(null)])
      .when(ConfirmInvite.create(id))
      .thenThrows(DomainError, rule('ALREADY_DENIED'));
    await spec
      .given([created, accepted, InviteConfirmed.create(null)])
      .when(DenyInvite.create(id))
      .thenThrows(DomainError, rule('ALREADY_CONFIRMED'));
  });

  it('nothing happens to an invite that does not exist', async () => {
    await spec.given([]).when(AcceptInvite.create(id)).thenThrows(DomainError, rule('INVITE_NOT_FOUND'));
    await spec
      .given([created])
      .when(CreateInvite.create({ ...id, name: 'Hades' }))
      .thenThrows(DomainError, rule('INVITE_EXISTS'));
  });
});
