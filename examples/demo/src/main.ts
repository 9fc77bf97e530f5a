/**
 * The demo service (`npm start` at the repository root): the bank and the guest list over HTTP on the embedded PGlite
 * store in ./.eventline/demo, or on PostgreSQL when DATABASE_URL is set. Listens on 127.0.0.1:$PORT (default 3000).
 */
import { accountEvents, paymentEvents } from '@eventline/example-bank';
import { invitationEvents } from '@eventline/example-guestlist';
import {
  createPGliteStore,
  createPostgresStore,
  createSqlDocumentStore,
  createSqlProjectionCatalog,
  createSqlSnapshotStore,
  createSqlSubscriptionStore,
  type SqlEventStore,
} from '@eventline/postgres';
import { eventRegistry } from 'eventline';
import { createDemo } from './app.js';

const events = eventRegistry([...accountEvents, ...paymentEvents, ...invitationEvents]);
const store: SqlEventStore = process.env.DATABASE_URL
  ? createPostgresStore({ connectionString: process.env.DATABASE_URL, schema: process.env.EVENTLINE_SCHEMA ?? 'eventline_demo', events })
  : createPGliteStore({ dataDir: process.env.EVENTLINE_DATA ?? './.eventline/demo', events });
await store.migrate();

const demo = await createDemo({
  store,
  subscriptions: createSqlSubscriptionStore(store),
  documents: createSqlDocumentStore(store),
  catalog: createSqlProjectionCatalog(store),
  snapshots: createSqlSnapshotStore(store),
});
const port = Number(process.env.PORT ?? 3000);
const address = await demo.api.listen({ host: '127.0.0.1', port });
const where = process.env.DATABASE_URL ? `PostgreSQL (schema ${store.schema})` : `PGlite in ${process.env.EVENTLINE_DATA ?? './.eventline/demo'}`;
console.log(`eventline demo on ${address}, storing events in ${where}. Try:
  curl -s -XPOST ${address}/commands/OpenAccount -H 'content-type: application/json' -d '{"accountId":"ada","owner":"Ada"}'
  curl -s -XPOST ${address}/commands/Deposit -H 'content-type: application/json' -d '{"accountId":"ada","amount":100}'
  curl -s ${address}/read-models/bank/balance/ada
Stop with Ctrl-C.`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await demo.close();
  await store.close();
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
