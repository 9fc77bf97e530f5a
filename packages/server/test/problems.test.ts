// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DuplicateHandlerError,
  LeaseLostError,
  TransactionConflictError,
  UpcasterConfigurationError,
  WaitTimeoutError,
} from '@eventline/core';
import { problemOf, STATUS_OF_CODE } from '@eventline/server';

describe('problems of eventline errors', () => {
  it('every code has its status; none but server misconfiguration is a 500', () => {
    const internal = Object.entries(STATUS_OF_CODE)
      .filter(([, status]) => status === 500)
      .map(([code]) => code)
      .sort();
    // A server set up wrong: two handlers of one command, a broken upcaster chain, a bad uniqueness rule, a process
    // whose decide returns what cannot be kept. Nothing a client sends can cause one of these.
    assert.deepEqual(internal, [
      'DUPLICATE_HANDLER',
      'PROCESS_DECISION',
      'UNIQUENESS_CONFIGURATION',
      'UPCASTER_CONFIGURATION',
    ]);
    for (const status of Object.values(STATUS_OF_CODE))
      assert.ok([400, 404, 409, 410, 413, 422, 500, 503, 504].includes(status));
  });

  it('a lost lease is a 503 a client may retry; a conflict a 409; a wait timeout a 504, each with its detail', () => {
    const lost = problemOf(new LeaseLostError('bank', 'instance-1'));
    assert.equal(lost.status, 503);
    assert.equal(lost.code, 'LEASE_LOST');
    assert.match(lost.detail, /lost its lease/);
    assert.equal(problemOf(new TransactionConflictError('append', 'deadlock')).status, 409);
    assert.equal(problemOf(new WaitTimeoutError('bank', '0000000000000001/0000000000000001', 10)).status, 504);
  });

  it('a server set up wrong answers an internal error that tells nothing of the inside', () => {
    for (const error of [new DuplicateHandlerError('Deposit'), new UpcasterConfigurationError('Opened', 'a cycle')]) {
      const problem = problemOf(error);
      assert.equal(problem.status, 500);
      assert.equal(problem.code, 'INTERNAL');
      assert.doesNotMatch(problem.detail, /Deposit|Opened|cycle/);
    }
  });
});
