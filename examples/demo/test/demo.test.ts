// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createInMemoryDocumentStore,
  createInMemoryProcessStore,
  createInMemoryProjectionCatalog,
  createInMemoryStore,
  createInMemorySubscriptionStore,
} from '@eventline/core';
import { createDemo } from '../src/app.js';
import { sampleCpf } from '@eventline/example-bank';
import { until } from '@eventline/core/testing';

describe('demo service (in memory)', () => {
  it('open, deposit, transfer, then balance and statement over HTTP', async () => {
    const store = createInMemoryStore();
    const demo = await createDemo({
      store,
      subscriptions: createInMemorySubscriptionStore(store),
      documents: createInMemoryDocumentStore(),
      catalog: createInMemoryProjectionCatalog(),
    });
    try {
      const command = async (type: string, data: unknown) => {
        const response = await demo.api.inject({ method: 'POST', url: `/commands/${type}`, payload: data as object });
        assert.equal(response.statusCode, 200, response.body);
        return response.json() as { position: string };
      };
      await command('OpenAccount', { accountId: 'ada', owner: 'Ada', holderTaxId: sampleCpf('ada') });
      await command('OpenAccount', { accountId: 'bob', owner: 'Bob', holderTaxId: sampleCpf('bob') });
      await command('Deposit', { accountId: 'ada', amount: 100 });
      const { position } = await command('TransferMoney', { from: 'ada', to: 'bob', amount: 40 });
      const balance = await demo.api.inject({ url: `/read-models/bank/balance/bob?position=${position}` });
      assert.equal(
        (balance.json() as { balance: string }).balance,
        '40',
        'amounts are sent as numbers and answered as decimal strings',
      );
      const statement = await demo.api.inject({ url: `/read-models/bank/statement/ada?position=${position}` });
      assert.deepEqual(
        (statement.json() as { lines: Array<{ balance: string }> }).lines.map((l) => l.balance),
        ['100', '60'],
      );
      const overdraft = await demo.api.inject({
        method: 'POST',
        url: '/commands/Withdraw',
        payload: { accountId: 'bob', amount: 1000 },
      });
      assert.equal(overdraft.statusCode, 422);
      assert.deepEqual((overdraft.json() as { details: unknown }).details, { balance: '40', amount: '1000' });
      // Beyond 2^53: as a string of digits the amount is exact; as a JSON number it is refused (parsing rounded it).
      await command('Deposit', { accountId: 'bob', amount: '9007199254740993' });
      const exact = await command('Deposit', { accountId: 'bob', amount: 1 });
      const big = await demo.api.inject({ url: `/read-models/bank/balance/bob?position=${exact.position}` });
      assert.equal((big.json() as { balance: string }).balance, '9007199254741034');
      const unsafe = await demo.api.inject({
        method: 'POST',
        url: '/commands/Deposit',
        headers: { 'content-type': 'application/json' },
        payload: '{"accountId":"bob","amount":9007199254740993}',
      });
      assert.equal(unsafe.statusCode, 400, unsafe.body);
      // Refused by the body parser or by the amount's schema: a 400 either way, that says to send a string.
      assert.match((unsafe.json() as { detail: string }).detail, /send (it|the amount) as a string/);
      const tooLong = await demo.api.inject({
        method: 'POST',
        url: '/commands/Deposit',
        payload: { accountId: 'bob', amount: '1'.repeat(101) },
      });
      assert.equal(tooLong.statusCode, 400, tooLong.body);
      const invite = await command('CreateInvite', { inviteId: 'athena', name: 'Athena' });
      const list = await demo.api.inject({ url: `/read-models/guestlist/guest_list/main?position=${invite.position}` });
      assert.equal((list.json() as { guests: number }).guests, 1);
    } finally {
      await demo.close();
    }
  });

  it('the guest list with its ResponseSaga: the four guests of the talk, with room for two', async () => {
    const store = createInMemoryStore();
    const demo = await createDemo(
      {
        store,
        subscriptions: createInMemorySubscriptionStore(store),
        documents: createInMemoryDocumentStore(),
        catalog: createInMemoryProjectionCatalog(),
        processes: createInMemoryProcessStore(),
      },
      { guestlistLimit: 2 },
    );
    try {
      const command = async (type: string, data: unknown) => {
        const response = await demo.api.inject({ method: 'POST', url: `/commands/${type}`, payload: data as object });
        assert.equal(response.statusCode, 200, response.body);
      };
      for (const [inviteId, name] of [
        ['athena', 'Athena'],
        ['hades', 'Hades'],
        ['zeus', 'Zeus'],
        ['poseidon', 'Poseidon'],
      ])
        await command('CreateInvite', { inviteId, name });
      await command('AcceptInvite', { inviteId: 'athena' });
      await command('AcceptInvite', { inviteId: 'hades' });
      await command('DeclineInvite', { inviteId: 'zeus' });
      await command('AcceptInvite', { inviteId: 'poseidon' });
      const list = async () =>
        (await demo.api.inject({ url: '/read-models/guestlist/guest_list/main' })).json() as Record<string, number>;
      await until(async () => (await list()).denied === 1, 'the saga decided for every accepted guest');
      assert.deepEqual(await list(), { guests: 4, accepted: 3, declined: 1, confirmed: 2, denied: 1 });
    } finally {
      await demo.close();
    }
  });

  it('a transfer as a process over HTTP: requested, then carried out step by step', async () => {
    const store = createInMemoryStore();
    const demo = await createDemo({
      store,
      subscriptions: createInMemorySubscriptionStore(store),
      documents: createInMemoryDocumentStore(),
      catalog: createInMemoryProjectionCatalog(),
      processes: createInMemoryProcessStore(),
    });
    try {
      const command = async (type: string, data: unknown) => {
        const response = await demo.api.inject({ method: 'POST', url: `/commands/${type}`, payload: data as object });
        assert.equal(response.statusCode, 200, response.body);
      };
      const balance = async (id: string) =>
        ((await demo.api.inject({ url: `/read-models/bank/balance/${id}` })).json() as { balance?: string }).balance;
      await command('OpenAccount', { accountId: 'ada', owner: 'Ada', holderTaxId: sampleCpf('ada') });
      await command('OpenAccount', { accountId: 'bob', owner: 'Bob', holderTaxId: sampleCpf('bob') });
      await command('Deposit', { accountId: 'ada', amount: 100 });
      await command('RequestTransfer', { transferId: 't1', from: 'ada', to: 'bob', amount: 30 });
      await until(async () => (await balance('bob')) === '30', 'bob credited by the process');
      assert.equal(await balance('ada'), '70');
    } finally {
      await demo.close();
    }
  });
});
