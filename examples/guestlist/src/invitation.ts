/**
 * The invitation aggregate of Event Horizon's guestlist example, written in the class style (handle + apply):
 * an invite is created, the guest accepts or declines it (not both; repeats are no-ops), and an accepted invite is then
 * confirmed or denied (only accepted ones; repeats are no-ops).
 */
import {
  aggregateFromClass,
  defineCommand,
  defineEvent,
  DomainError,
  type AggregateRoot,
  type CommandOf,
  type EventInputOf,
} from '@eventline/core';
import { z } from 'zod';

const byId = z.object({ inviteId: z.string().min(1) });
export const CreateInvite = defineCommand(
  'CreateInvite',
  z.object({ inviteId: z.string().min(1), name: z.string().min(1), age: z.number().int().nonnegative().optional() }),
);
export const AcceptInvite = defineCommand('AcceptInvite', byId);
export const DeclineInvite = defineCommand('DeclineInvite', byId);
export const ConfirmInvite = defineCommand('ConfirmInvite', byId);
export const DenyInvite = defineCommand('DenyInvite', byId);

export const InviteCreated = defineEvent(
  'InviteCreated',
  z.object({ name: z.string(), age: z.number().int().nonnegative().optional() }),
);
export const InviteAccepted = defineEvent('InviteAccepted', z.null());
export const InviteDeclined = defineEvent('InviteDeclined', z.null());
export const InviteConfirmed = defineEvent('InviteConfirmed', z.null());
export const InviteDenied = defineEvent('InviteDenied', z.null());
export const invitationEvents = [InviteCreated, InviteAccepted, InviteDeclined, InviteConfirmed, InviteDenied];

export type InvitationCommand = CommandOf<
  typeof CreateInvite | typeof AcceptInvite | typeof DeclineInvite | typeof ConfirmInvite | typeof DenyInvite
>;
export type InvitationEvent = EventInputOf<(typeof invitationEvents)[number]>;

export class Invitation implements AggregateRoot<InvitationCommand, InvitationEvent> {
  name: string | null = null;
  age: number | null = null;
  response: 'none' | 'accepted' | 'declined' = 'none';
  decision: 'none' | 'confirmed' | 'denied' = 'none';

  handle(command: InvitationCommand): InvitationEvent[] {
    const id = command.data.inviteId;
    if (CreateInvite.is(command)) {
      if (this.name === null)
        return [
          InviteCreated.create({
            name: command.data.name,
            ...(command.data.age === undefined ? {} : { age: command.data.age }),
          }),
        ];
      if (this.name === command.data.name) return [];
      throw new DomainError(`invite ${id} already exists for ${this.name}`, 'INVITE_EXISTS');
    }
    if (this.name === null) throw new DomainError(`invite ${id} does not exist`, 'INVITE_NOT_FOUND');
    if (AcceptInvite.is(command)) {
      if (this.response === 'declined')
        throw new DomainError(`${this.name} already declined invite ${id}`, 'ALREADY_DECLINED');
      return this.response === 'accepted' ? [] : [InviteAccepted.create(null)];
    }
    if (DeclineInvite.is(command)) {
      if (this.response === 'accepted')
        throw new DomainError(`${this.name} already accepted invite ${id}`, 'ALREADY_ACCEPTED');
      return this.response === 'declined' ? [] : [InviteDeclined.create(null)];
    }
    if (this.response !== 'accepted')
      throw new DomainError(
        `only accepted invites can be confirmed or denied; invite ${id} is ${this.response === 'none' ? 'not answered' : 'declined'}`,
        'NOT_ACCEPTED',
      );
    if (ConfirmInvite.is(command)) {
      if (this.decision === 'denied') throw new DomainError(`invite ${id} was denied`, 'ALREADY_DENIED');
      return this.decision === 'confirmed' ? [] : [InviteConfirmed.create(null)];
    }
    if (this.decision === 'confirmed') throw new DomainError(`invite ${id} was confirmed`, 'ALREADY_CONFIRMED');
    return this.decision === 'denied' ? [] : [InviteDenied.create(null)];
  }

  apply(event: InvitationEvent): void {
    switch (event.type) {
      case 'InviteCreated':
        this.name = event.data.name;
        this.age = event.data.age ?? null;
        break;
      case 'InviteAccepted':
        this.response = 'accepted';
        break;
      case 'InviteDeclined':
        this.response = 'declined';
        break;
      case 'InviteConfirmed':
        this.decision = 'confirmed';
        break;
      case 'InviteDenied':
        this.decision = 'denied';
        break;
    }
  }
}

export const invitation = aggregateFromClass<Invitation, InvitationCommand, InvitationEvent>({
  category: 'invitation',
  create: () => new Invitation(),
  snapshots: {},
});
