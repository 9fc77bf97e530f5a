/**
 * The demo service (`npm start` at the repository root): the bank and the guest list over HTTP on the embedded PGlite
 * store in ./.eventline/demo, or on PostgreSQL when DATABASE_URL is set. Listens on 127.0.0.1:$PORT (default 3000).
 * A port that is taken, or a data directory another process holds, is said in one line (and exit code 1), not a stack.
 */
import { accountEvents, bankUniqueness, paymentEvents, transferEvents } from '@eventline/example-bank';
import { invitationEvents } from '@eventline/example-guestlist';
import { DataDirectoryLockedError } from '@eventline/postgres';
import { eventRegistry } from '@eventline/core';
import { createDemo } from './app.js';
import { openSqlStore, sqlStorage, stopOnSignals } from './process.js';

const fail = (message: string): never => {
  console.error(`eventline demo: ${message}`);
  process.exit(1);
};

const portText = process.env.PORT ?? '3000';
const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
if (!(port >= 0 && port <= 65535)) fail(`PORT must be a port number from 0 to 65535, got '${portText}'`);

const events = eventRegistry([...accountEvents, ...paymentEvents, ...transferEvents, ...invitationEvents]);
const dataDir = process.env.EVENTLINE_DATA ?? './.eventline/demo';
const limitText = process.env.GUESTLIST_LIMIT ?? '2';
const guestlistLimit = /^[0-9]{1,9}$/.test(limitText) ? Number(limitText) : NaN;
if (!Number.isInteger(guestlistLimit))
  fail(`GUESTLIST_LIMIT must be a whole number of guests, 0 or more, got '${limitText}'`);

const { store, where } = await openSqlStore({
  events,
  // CPFs are unique per open account; EVENTLINE_CLAIMS_KEY (16 bytes or more) keys their hashes.
  uniqueness: bankUniqueness(process.env.EVENTLINE_CLAIMS_KEY),
  schema: process.env.EVENTLINE_SCHEMA ?? 'eventline_demo',
  dataDir,
}).catch((error: unknown) => {
  if (error instanceof DataDirectoryLockedError) {
    return fail(
      `${error.message}\nStop the other process, or give this one another directory: EVENTLINE_DATA=./.eventline/demo2 npm start`,
    );
  }
  throw error;
});

const demo = await createDemo(sqlStorage(store), { guestlistLimit });
let address: string;
try {
  address = await demo.api.listen({ host: '127.0.0.1', port });
} catch (error) {
  const code = (error as NodeJS.ErrnoException).code;
  await demo.close().catch(() => undefined);
  await store.close().catch(() => undefined);
  if (code === 'EADDRINUSE')
    fail(
      `port ${port} on 127.0.0.1 is already in use (is the demo already running?). Stop that process, or choose another port: PORT=${port === 3000 ? 3001 : 3000} npm start`,
    );
  if (code === 'EACCES')
    fail(
      `port ${port} on 127.0.0.1 needs privileges this process does not have; choose a port above 1023: PORT=3000 npm start`,
    );
  fail(`cannot listen on 127.0.0.1:${port}: ${(error as Error).message}`);
}
console.log(`eventline demo on ${address!}, storing events in ${where}. Try:
  curl -s -XPOST ${address!}/commands/OpenAccount -H 'content-type: application/json' -d '{"accountId":"ada","owner":"Ada","holderTaxId":"529.982.247-25"}'
  curl -s -XPOST ${address!}/commands/Deposit -H 'content-type: application/json' -d '{"accountId":"ada","amount":100}'
  curl -s ${address!}/read-models/bank/balance/ada
Stop with Ctrl-C.`);

stopOnSignals(async () => {
  await demo.close();
  await store.close();
});
