/**
 * The bank process: the demo service (bank and guest list over HTTP, with their own read models) plus a publisher that
 * forwards every committed event to NATS JetStream, in log order; the store is the outbox. `POST /admin/replay`
 * republishes the account history to the bus, marked as a replay, for a downstream service that lost its data.
 *
 * Environment: PORT (default 3000); DATABASE_URL (PostgreSQL, schema BANK_SCHEMA, default `bank`) or the PGlite
 * directory BANK_DATA (default ./.eventline/bank); NATS_URL (default nats://127.0.0.1:4222); BUS_PREFIX (default `bank`).
 */
import { accountEvents, bankUniqueness, paymentEvents, transferEvents } from '@eventline/example-bank';
import { createDemo, openSqlStore, sqlStorage, stopOnSignals } from '@eventline/example-demo';
import { createNatsTransport } from '@eventline/nats';
import { createPublisher, eventRegistry, replayToTransport } from '@eventline/core';

const events = eventRegistry([...accountEvents, ...paymentEvents, ...transferEvents], { strict: false });
const { store } = await openSqlStore({
  events,
  uniqueness: bankUniqueness(process.env.EVENTLINE_CLAIMS_KEY),
  schema: process.env.BANK_SCHEMA ?? 'bank',
  dataDir: process.env.BANK_DATA ?? './.eventline/bank',
});
const storage = sqlStorage(store);
const subscriptions = storage.subscriptions;
const bus = await createNatsTransport({ prefix: process.env.BUS_PREFIX ?? 'bank' });

const demo = await createDemo(storage, { logger: false });
const publisher = createPublisher({ name: 'nats', store, subscriptions, transport: bus, pollIntervalMs: 500 });
publisher.start();

demo.api.post<{ Querystring: { category?: string } }>('/admin/replay', async (request) => {
  const category = request.query.category ?? 'account';
  const result = await replayToTransport({ store, transport: bus, filter: { categories: [category] } });
  return { category, published: result.published, until: result.position };
});

const address = await demo.api.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 3000) });
console.log(`bank on ${address}, publishing to NATS (prefix ${process.env.BUS_PREFIX ?? 'bank'})`);

stopOnSignals(async () => {
  await demo.close();
  await publisher.stop();
  await bus.close();
  await store.close();
});
