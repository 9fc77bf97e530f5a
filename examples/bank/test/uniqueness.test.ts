/**
 * One CPF per open account, on every store: 50 concurrent openings with one CPF (one wins, 49 are refused naming the
 * winner's stream), the CPF freed by closing and taken by another account, nothing claimed by a rolled-back
 * transaction, and the same claims rebuilt from the log.
 */
// tier: integration
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createInMemoryStore, inTransaction, UniquenessError, type EventStore } from '@eventline/core';
import { openTestDatabases, type TestDatabases } from '@eventline/postgres/testing';
import {
  bankEvents,
  bankUniqueness,
  CloseAccount,
  createBank,
  CPF_SCOPE,
  OpenAccount,
  sampleCpf,
  Withdraw,
  Deposit,
} from '../src/index.js';

let databases: TestDatabases;
before(async () => {
  databases = await openTestDatabases();
});
after(() => databases.close());

const options = { events: bankEvents, uniqueness: bankUniqueness('a test key of at least sixteen bytes') };
const backends: Array<[string, () => EventStore]> = [
  ['memory', () => createInMemoryStore(options)],
  ['PostgreSQL', () => databases.postgres({ ...options, schema: `bank_u_${randomBytes(5).toString('hex')}` })],
  ['PGlite', () => databases.pglite({ ...options, dataDir: 'memory://' })],
];

for (const [name, open] of backends) {
  describe(`one CPF per open account on ${name}`, () => {
    it('50 concurrent openings with one CPF: exactly one succeeds, 49 are refused naming it', async () => {
      const store = open();
      const bank = createBank(store);
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) =>
          bank.bus.dispatch(
            OpenAccount.create({ accountId: `c${i}`, owner: `Holder ${i}`, holderTaxId: '123.456.789-09' }),
          ),
        ),
      );
      const winners = results.flatMap((result, i) => (result.status === 'fulfilled' ? [`account-c${i}`] : []));
      assert.equal(winners.length, 1, 'exactly one account opens');
      for (const result of results) {
        if (result.status === 'fulfilled') continue;
        assert.ok(result.reason instanceof UniquenessError, String(result.reason));
        assert.equal(result.reason.scope, CPF_SCOPE);
        assert.equal(result.reason.owner, winners[0]);
      }
      assert.equal(await store.claimOwner(CPF_SCOPE, '12345678909'), winners[0]);
      assert.equal(await store.claimOwner(CPF_SCOPE, '123.456.789-09'), winners[0]);
      const opened = [];
      for await (const event of store.readAll({ filter: { types: ['AccountOpened'] } })) opened.push(event.streamId);
      assert.deepEqual(opened, winners, 'only the winner opened');
    });

    it('closing frees the CPF for another account; a rolled-back opening claims nothing; a rebuild agrees', async () => {
      const store = open();
      const bank = createBank(store);
      const ada = sampleCpf('ada');
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'ada', owner: 'Ada', holderTaxId: ada }));
      const refused = bank.bus.dispatch(OpenAccount.create({ accountId: 'eve', owner: 'Eve', holderTaxId: ada }));
      await assert.rejects(
        refused,
        (error: unknown) => error instanceof UniquenessError && error.owner === 'account-ada',
      );
      await bank.bus.dispatch(Deposit.create({ accountId: 'ada', amount: 5 }));
      await bank.bus.dispatch(Withdraw.create({ accountId: 'ada', amount: 5 }));
      await bank.bus.dispatch(CloseAccount.create({ accountId: 'ada' }));
      assert.equal(await store.claimOwner(CPF_SCOPE, ada), null, 'closing released it');
      await bank.bus.dispatch(OpenAccount.create({ accountId: 'eve', owner: 'Eve', holderTaxId: ada }));
      assert.equal(await store.claimOwner(CPF_SCOPE, ada), 'account-eve');

      const bob = sampleCpf('bob');
      await assert.rejects(
        inTransaction(store, async (context) => {
          await bank.accounts.handle(
            'bob',
            OpenAccount.create({ accountId: 'bob', owner: 'Bob', holderTaxId: bob }),
            context,
          );
          assert.equal(await context.session!.claimOwner(CPF_SCOPE, bob), 'account-bob');
          throw new Error('rolled back');
        }),
        /rolled back/,
      );
      assert.equal(await store.claimOwner(CPF_SCOPE, bob), null, 'the rollback left no claim');
      assert.equal((await store.streamInfo('account-bob')).exists, false);

      const before = [await store.claimOwner(CPF_SCOPE, ada), await store.claimOwner(CPF_SCOPE, bob)];
      assert.deepEqual(await store.rebuildClaims(), { claims: 1, conflicts: [] });
      assert.deepEqual([await store.claimOwner(CPF_SCOPE, ada), await store.claimOwner(CPF_SCOPE, bob)], before);
      await store.close();
    });
  });
}
