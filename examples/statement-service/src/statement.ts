/**
 * The statement service, a second process: it consumes the bank's account events from NATS JetStream (consumer group
 * `statements`) and keeps its own statement of each account (every movement with the running balance) in its own
 * database. Each event's effect and its id in the inbox commit in one transaction, so a redelivered or replayed event
 * has no second effect. `GET /statements/:accountId` serves a statement.
 *
 * Environment: PORT (default 3001); DATABASE_URL (PostgreSQL, schema STATEMENT_SCHEMA, default `statement_service`) or
 * the PGlite directory STATEMENT_DATA (default ./.eventline/statement); NATS_URL; BUS_PREFIX (default `bank`).
 */
import { createNatsTransport } from '@eventline/nats';
import { openSqlStore, stopOnSignals } from '@eventline/example-demo';
import { createSqlDocumentStore, createSqlInbox, type SqlClient } from '@eventline/postgres';
import { consumeEvents } from '@eventline/core';
import Fastify from 'fastify';
import { nextStatement, type Statement } from './model.js';

const { store } = await openSqlStore({
  schema: process.env.STATEMENT_SCHEMA ?? 'statement_service',
  dataDir: process.env.STATEMENT_DATA ?? './.eventline/statement',
});
const documents = createSqlDocumentStore(store);
const bus = await createNatsTransport({ prefix: process.env.BUS_PREFIX ?? 'bank' });

const consumer = await consumeEvents<SqlClient>(bus, {
  group: 'statements',
  subjects: ['account.*'],
  inbox: createSqlInbox(store),
  retryDelayMs: 200,
  handle: async (event, { tx }) => {
    const statements = documents.collection<Statement>('statement', tx);
    const accountId = event.streamId.slice('account-'.length);
    const next = nextStatement((await statements.get(accountId))?.data ?? null, event);
    if (next) await statements.put(accountId, next, event.position);
  },
});

const api = Fastify();
api.get('/health', async () => ({ status: 'ok' }));
api.get<{ Params: { accountId: string } }>('/statements/:accountId', async (request, reply) => {
  const found = await documents.collection<Statement>('statement').get(request.params.accountId);
  if (!found)
    return reply
      .code(404)
      .send({ title: 'No statement', detail: `no statement for account '${request.params.accountId}' (yet)` });
  return found.data;
});
const address = await api.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 3001) });
console.log(
  `statement service on ${address}, consuming account events from NATS (prefix ${process.env.BUS_PREFIX ?? 'bank'})`,
);

stopOnSignals(async () => {
  await api.close();
  await consumer.stop();
  await bus.close();
  await store.close();
});
