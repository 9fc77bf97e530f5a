// Run by test/packaging.test.ts with plain Node (no tsx, no export conditions) in a project outside the workspace that
// installed the packed tarballs: each store appends and reads back two events; prints one JSON line.
import { createInMemoryStore, defineEvent, eventRegistry } from '@eventline/core';
import { collect, createTestClock } from '@eventline/core/testing';
import { createPGliteStore } from '@eventline/postgres';
import { z } from 'zod';

const Deposited = defineEvent('MoneyDeposited', z.object({ amount: z.number().int().positive() }));
const events = eventRegistry([Deposited]);
const clock = createTestClock();

async function roundTrip(store) {
  try {
    await store.append('account-1', [Deposited.create({ amount: 5 }), Deposited.create({ amount: 7 })], {
      expectedVersion: 'no_stream',
    });
    const stream = await collect(store.readStream('account-1'));
    const all = await collect(store.readAll());
    return { stream: stream.map((e) => [e.type, e.data.amount, e.version]), all: all.length };
  } finally {
    await store.close();
  }
}

const memory = await roundTrip(createInMemoryStore({ events, clock }));
const pglite = await roundTrip(createPGliteStore({ dataDir: 'memory://', events }));
console.log(JSON.stringify({ memory, pglite }));
