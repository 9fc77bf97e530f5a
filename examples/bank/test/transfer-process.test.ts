/**
 * The `bank-transfers` process's logic on its own (each input, the state it leads to and the command it sends), and
 * the deciders of its steps: the transfer aggregate and the account's refund.
 */
// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createCommand,
  DomainError,
  formatPosition,
  newId,
  type Command,
  type ProcessDecision,
  type ProcessInput,
  type RecordedEvent,
} from '@eventline/core';
import { DeciderSpecification } from '@eventline/core/testing';
import {
  account,
  AccountClosed,
  AccountOpened,
  CloseAccount,
  CompleteTransfer,
  FailTransfer,
  MoneyDeposited,
  MoneyTransferredOut,
  MoneyTransferRefunded,
  RefundTransfer,
  RequestTransfer,
  transfer,
  TransferCompleted,
  TransferFailed,
  TransferRequested,
  TRANSFER_PROCESS,
  transferProcess,
  TransferIn,
  TransferOut,
  type TransferProcessState,
} from '../src/index.js';

const CORRELATION = 'request-1';
let sequence = 0n;

function recorded(streamId: string, type: string, data: unknown, correlationId = CORRELATION): RecordedEvent {
  sequence++;
  return {
    id: newId(),
    type,
    streamId,
    version: 1,
    position: formatPosition(1n, sequence),
    recordedAt: new Date(0),
    data,
    metadata: { correlationId, causationId: newId() },
  };
}

const event = (...args: Parameters<typeof recorded>): ProcessInput => ({ kind: 'event', event: recorded(...args) });
const rejected = (command: Command, rule: string, message: string): ProcessInput => ({
  kind: 'rejected',
  command,
  error: { code: 'DOMAIN_RULE', rule, message },
});

const requested = () => event('transfer-t1', 'TransferRequested', { from: 'a', to: 'b', amount: '30' });
const out = (
  extra: Partial<Record<'amount' | 'transferId', string>> = {},
  streamId = 'account-a',
  correlation?: string,
) => event(streamId, 'MoneyTransferredOut', { transferId: 't1', to: 'b', amount: '30', ...extra }, correlation);
const arrived = () => event('account-b', 'MoneyTransferredIn', { transferId: 't1', from: 'a', amount: '30' });

/** Feeds inputs to the process as its manager does (evolve, then decide on the new state), from a new instance. */
function run(inputs: readonly ProcessInput[], from: TransferProcessState = transferProcess.initialState()) {
  let state = from;
  const decisions: ProcessDecision[] = [];
  for (const input of inputs) {
    state = transferProcess.evolve(state, input);
    decisions.push(transferProcess.decide(input, state));
  }
  return { state, decisions, last: decisions.at(-1)! };
}

/** A decision's commands as type and data (their ids are the manager's to give). */
const sent = (decision: ProcessDecision) => (decision.commands ?? []).map(({ type, data }) => ({ type, data }));
const command = (created: Command) => ({ type: created.type, data: created.data });

describe('bank-transfers: the process on its own', () => {
  it('is started by TransferRequested and finds an instance by the transfer id, in either stream', () => {
    assert.equal(transferProcess.name, TRANSFER_PROCESS);
    assert.deepEqual(transferProcess.startedBy, ['TransferRequested']);
    const correlate = (input: ProcessInput) => transferProcess.correlate((input as { event: RecordedEvent }).event);
    assert.equal(correlate(requested()), 't1');
    assert.equal(correlate(out()), 't1');
    assert.equal(correlate(event('account-a', 'MoneyDeposited', { amount: '1' })), null);
    // A one-transaction transfer may use an id longer than an instance id: not one of ours, and no error.
    assert.equal(correlate(out({ transferId: 'x'.repeat(201) })), null);
  });

  it('completes: TransferOut, then TransferIn, then CompleteTransfer, then the instance ends', () => {
    const steps = run([requested(), out(), arrived(), event('transfer-t1', 'TransferCompleted', {})]);
    assert.deepEqual(steps.decisions.map(sent), [
      [command(TransferOut.create({ accountId: 'a', transferId: 't1', to: 'b', amount: '30' }))],
      [command(TransferIn.create({ accountId: 'b', transferId: 't1', from: 'a', amount: '30' }))],
      [command(CompleteTransfer.create({ transferId: 't1' }))],
      [],
    ]);
    assert.equal(steps.last.complete, true);
    assert.equal(steps.state.step, 'completed');
    assert.equal(steps.state.failure, null);
  });

  it('a withdrawal refused (insufficient funds) fails the transfer and touches nothing else', () => {
    const start = run([requested()]);
    const withdraw = start.last.commands![0]!;
    const refused = run([rejected(withdraw, 'INSUFFICIENT_FUNDS', 'insufficient funds in account a')], start.state);
    assert.deepEqual(sent(refused.last), [
      command(
        FailTransfer.create({
          transferId: 't1',
          rule: 'INSUFFICIENT_FUNDS',
          reason: 'insufficient funds in account a',
          refunded: false,
        }),
      ),
    ]);
    const ended = run([event('transfer-t1', 'TransferFailed', {})], refused.state);
    assert.deepEqual(ended.last, { complete: true });
    assert.equal(ended.state.step, 'failed');
  });

  it('a deposit refused (target closed) refunds the source, then fails the transfer as refunded', () => {
    const deposited = run([requested(), out()]);
    const deposit = deposited.last.commands![0]!;
    const refused = run([rejected(deposit, 'ACCOUNT_CLOSED', 'account b is closed')], deposited.state);
    assert.deepEqual(sent(refused.last), [
      command(
        RefundTransfer.create({
          accountId: 'a',
          transferId: 't1',
          to: 'b',
          amount: '30',
          reason: 'account b is closed',
        }),
      ),
    ]);
    const refunded = run(
      [event('account-a', 'MoneyTransferRefunded', { transferId: 't1', to: 'b', amount: '30', reason: 'closed' })],
      refused.state,
    );
    assert.deepEqual(sent(refunded.last), [
      command(
        FailTransfer.create({
          transferId: 't1',
          rule: 'ACCOUNT_CLOSED',
          reason: 'account b is closed',
          refunded: true,
        }),
      ),
    ]);
    assert.equal(run([event('transfer-t1', 'TransferFailed', {})], refunded.state).last.complete, true);
  });

  it('an input that is not the awaited step sends nothing: a copy, another transfer’s event, a stale refusal', () => {
    const depositing = run([requested(), out()]).state;
    const nothing = (input: ProcessInput, state = depositing) => {
      const after = run([input], state);
      assert.deepEqual(after.last, {});
      assert.equal(after.state.step, state.step);
    };
    nothing(out()); // the withdrawal again (a copy): no second deposit
    nothing(requested()); // the request again
    nothing(rejected(TransferOut.create({ accountId: 'a', transferId: 't1', to: 'b', amount: '30' }), 'X', 'x'));
    nothing(event('transfer-t1', 'TransferCompleted', {})); // not before the money arrived
    const withdrawing = run([requested()]).state;
    nothing(out({ amount: '31' }), withdrawing); // another amount
    nothing(out({}, 'account-c'), withdrawing); // another account
    nothing(out({}, 'account-a', 'someone-else'), withdrawing); // a TransferMoney that reused the id
    nothing(arrived(), withdrawing); // money in before money out
    nothing(rejected(createCommand('TransferIn', {}), 'ACCOUNT_CLOSED', 'closed'), withdrawing);
    nothing({ kind: 'timer', id: 'x', name: 'x', data: null, dueAt: new Date(0) }, withdrawing);
  });

  it('keeps the amount exact beyond 2^53, as a decimal string', () => {
    const amount = '123456789012345678901234567890';
    const steps = run([event('transfer-t1', 'TransferRequested', { from: 'a', to: 'b', amount })]);
    assert.equal((steps.last.commands![0]!.data as { amount: string }).amount, amount);
  });
});

describe('bank-transfers: the steps’ deciders', () => {
  const spec = DeciderSpecification.for(transfer);
  const request = RequestTransfer.create({ transferId: 't1', from: 'a', to: 'b', amount: 30 });
  const made = TransferRequested.create({ from: 'a', to: 'b', amount: '30' });
  const rule = (name: string) => (error: DomainError) => error.rule === name;

  it('a request is recorded once; the same again is a no-op, another under its id is refused', async () => {
    await spec.given([]).when(request).then([made]);
    await spec.given([made]).when(request).then([]);
    await spec
      .given([made])
      .when(RequestTransfer.create({ transferId: 't1', from: 'a', to: 'b', amount: 31 }))
      .thenThrows(DomainError, rule('TRANSFER_EXISTS'));
  });

  it('a transfer ends once: completed or failed, each repeat a no-op, never both', async () => {
    const completed = TransferCompleted.create({});
    const failed = TransferFailed.create({ rule: 'ACCOUNT_CLOSED', reason: 'closed', refunded: true });
    const fail = FailTransfer.create({ transferId: 't1', rule: 'ACCOUNT_CLOSED', reason: 'closed', refunded: true });
    await spec
      .given([made])
      .when(CompleteTransfer.create({ transferId: 't1' }))
      .then([completed]);
    await spec
      .given([made, completed])
      .when(CompleteTransfer.create({ transferId: 't1' }))
      .then([]);
    await spec.given([made, completed]).when(fail).thenThrows(DomainError, rule('TRANSFER_COMPLETED'));
    await spec.given([made]).when(fail).then([failed]);
    await spec.given([made, failed]).when(fail).then([]);
    await spec
      .given([made, failed])
      .when(CompleteTransfer.create({ transferId: 't1' }))
      .thenThrows(DomainError, rule('TRANSFER_FAILED'));
    await spec
      .given([])
      .when(CompleteTransfer.create({ transferId: 't1' }))
      .thenThrows(DomainError, rule('TRANSFER_NOT_FOUND'));
  });

  it('refuses bad ids and the same account on both sides before anything is recorded', () => {
    for (const data of [
      { transferId: 't 1', from: 'a', to: 'b', amount: 1 },
      { transferId: 't\u0000', from: 'a', to: 'b', amount: 1 },
      { transferId: 'x'.repeat(201), from: 'a', to: 'b', amount: 1 },
      { transferId: 't', from: 'a\ud800', to: 'b', amount: 1 },
      { transferId: 't', from: 'a', to: 'a', amount: 1 },
      { transferId: 't', from: 'a', to: 'b', amount: 0 },
    ]) {
      const result = RequestTransfer.schema['~standard'].validate(data) as { issues?: unknown[] };
      assert.ok(result.issues && result.issues.length > 0, JSON.stringify(data));
    }
  });

  it('an account takes the refund of its transfer, even closed since (emptied by that transfer)', async () => {
    const accounts = DeciderSpecification.for(account);
    const opened = AccountOpened.create({ owner: 'Ada' });
    const refund = RefundTransfer.create({ accountId: 'a', transferId: 't1', to: 'b', amount: '30', reason: 'closed' });
    const back = MoneyTransferRefunded.create({ transferId: 't1', to: 'b', amount: '30', reason: 'closed' });
    const gone = MoneyTransferredOut.create({ transferId: 't1', to: 'b', amount: '30' });
    const had = MoneyDeposited.create({ amount: '30' });
    await accounts.given([opened, had, gone]).when(refund).then([back]);
    await accounts
      .given([opened, had, gone, AccountClosed.create({})])
      .when(refund)
      .then([back]);
    await accounts
      .given([opened, had, gone, AccountClosed.create({}), back])
      .when(CloseAccount.create({ accountId: 'a' }))
      .thenThrows(DomainError, rule('ACCOUNT_CLOSED'));
  });
});
