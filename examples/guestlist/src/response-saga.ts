/**
 * The talk's ResponseSaga as a process manager: the guest list has room for `limit` guests; each guest who accepts is
 * confirmed while there is room, and denied once it is full. One instance for the whole list (every answer is an input
 * of it, in the log's order), so the count is exact however many guests answer at once.
 *
 * With `answerTimeoutMs`, an invitation not answered in that time is declined by the saga: the timer is set when the
 * invitation is created and cancelled by the guest's answer. A guest who answered just as it fired is not declined:
 * the invitation refuses the decline (it was accepted), and the saga takes that refusal as the answer it was waiting for.
 */
import { defineProcess, type RecordedEvent } from '@eventline/core';
import { ConfirmInvite, DeclineInvite, DenyInvite } from './invitation.js';

export interface ResponseSagaState {
  /** Guests who accepted, in the order of the log. */
  accepted: number;
  /** Guests confirmed so far (at most the limit). */
  confirmed: number;
}

/** The saga's instance: one per guest list. */
export const GUEST_LIST = 'main';

const inviteIdOf = (event: RecordedEvent) => event.streamId.slice('invitation-'.length);
const timerOf = (inviteId: string) => `answer-${inviteId}`;

export function responseSaga(options: { limit: number; answerTimeoutMs?: number }) {
  const { limit, answerTimeoutMs } = options;
  if (!Number.isInteger(limit) || limit < 0)
    throw new RangeError(`the guest list limit must be a whole number, 0 or more, got ${String(limit)}`);
  if (answerTimeoutMs !== undefined && !(Number.isFinite(answerTimeoutMs) && answerTimeoutMs > 0))
    throw new RangeError(`answerTimeoutMs must be a positive number of ms, got ${String(answerTimeoutMs)}`);
  return defineProcess<ResponseSagaState>({
    name: 'guestlist-responses',
    startedBy: ['InviteCreated', 'InviteAccepted', 'InviteDeclined'],
    correlate: (event) => (event.streamId.startsWith('invitation-') ? GUEST_LIST : null),
    initialState: () => ({ accepted: 0, confirmed: 0 }),
    evolve: (state, input) => {
      if (input.kind !== 'event' || input.event.type !== 'InviteAccepted') return state;
      return { accepted: state.accepted + 1, confirmed: state.confirmed + (state.confirmed < limit ? 1 : 0) };
    },
    decide: (input, state) => {
      if (input.kind === 'timer') {
        const { inviteId } = input.data as { inviteId: string };
        return { commands: [DeclineInvite.create({ inviteId })] };
      }
      if (input.kind === 'rejected') return {}; // a decline refused: the guest had answered meanwhile
      const inviteId = inviteIdOf(input.event);
      switch (input.event.type) {
        case 'InviteCreated':
          return answerTimeoutMs === undefined
            ? {}
            : { schedule: [{ id: timerOf(inviteId), name: 'answer', afterMs: answerTimeoutMs, data: { inviteId } }] };
        case 'InviteAccepted':
          return {
            // evolve counted this guest: confirmed while the count is within the limit
            commands: [state.accepted <= limit ? ConfirmInvite.create({ inviteId }) : DenyInvite.create({ inviteId })],
            cancel: [timerOf(inviteId)],
          };
        default:
          return { cancel: [timerOf(inviteId)] };
      }
    },
  });
}
