/**
 * The demo service (`npm start` at the repository root): the bank and the guest list over HTTP on the embedded PGlite
 * store in ./.eventline/demo, or on PostgreSQL when DATABASE_URL is set. Listens on 127.0.0.1:$PORT (default 3000).
 */
import { accountEvents, paymentEvents } from '@eventline/example-bank';
import { invitationEvents } from '@eventline/example-guestlist';
import { eventRegistry } from 'eventline';
import { createDemo } from './app.js';
import { openSqlStore, sqlStorage, stopOnSignals } from './process.js';

const events = eventRegistry([...accountEvents, ...paymentEvents, ...invitationEvents]);
const { store, where } = await openSqlStore({
  events,
  schema: process.env.EVENTLINE_SCHEMA ?? 'eventline_demo',
  dataDir: process.env.EVENTLINE_DATA ?? './.eventline/demo',
});

const demo = await createDemo(sqlStorage(store));
const port = Number(process.env.PORT ?? 3000);
const address = await demo.api.listen({ host: '127.0.0.1', port });
console.log(`eventline demo on ${address}, storing events in ${where}. Try:
  curl -s -XPOST ${address}/commands/OpenAccount -H 'content-type: application/json' -d '{"accountId":"ada","owner":"Ada"}'
  curl -s -XPOST ${address}/commands/Deposit -H 'content-type: application/json' -d '{"accountId":"ada","amount":100}'
  curl -s ${address}/read-models/bank/balance/ada
Stop with Ctrl-C.`);

stopOnSignals(async () => {
  await demo.close();
  await store.close();
});
