/**
 * The tour: a bank account on the embedded store. Run it with `npm run tour` at the repository root.
 * It keeps its data in ./.eventline/tour (delete the folder to start over), or in PostgreSQL when DATABASE_URL is set.
 */
import { ConcurrencyError, defineEvent, eventRegistry, newId, type EventStore } from '@eventline/core';
import { createPGliteStore, createPostgresStore } from '@eventline/postgres';
import { z } from 'zod';

// 1. Declare event types once; their TypeScript types are inferred from the schemas.
const AccountOpened = defineEvent('AccountOpened', z.object({ owner: z.string().min(1) }));
const MoneyDeposited = defineEvent('MoneyDeposited', z.object({ amount: z.number().positive() }));
const MoneyWithdrawn = defineEvent('MoneyWithdrawn', z.object({ amount: z.number().positive() }));
const events = eventRegistry([AccountOpened, MoneyDeposited, MoneyWithdrawn]);

const store: EventStore = process.env.DATABASE_URL
  ? createPostgresStore({ connectionString: process.env.DATABASE_URL, schema: 'eventline_tour', events })
  : createPGliteStore({ dataDir: './.eventline/tour', events });

try {
  const account = `account-${newId()}`;
  const correlationId = newId();

  // 2. Append: a new stream must not exist yet ('no_stream'); the batch is atomic.
  const opened = await store.append(
    account,
    [
      AccountOpened.create({ owner: 'Ada' }, { metadata: { correlationId } }),
      MoneyDeposited.create({ amount: 100 }, { metadata: { correlationId } }),
    ],
    { expectedVersion: 'no_stream' },
  );
  console.log(`opened ${account}: version ${opened.version}, position ${opened.position}`);

  // 3. Optimistic concurrency: writing at a stale version is a typed error, not a silent overwrite.
  await store.append(account, [MoneyWithdrawn.create({ amount: 30 })], { expectedVersion: opened.version });
  try {
    await store.append(account, [MoneyWithdrawn.create({ amount: 500 })], { expectedVersion: opened.version });
  } catch (error) {
    if (!(error instanceof ConcurrencyError)) throw error;
    console.log(
      `stale write refused: ${error.code}, expected ${String(error.expected)}, actual ${String(error.actual)}`,
    );
  }

  // 4. Bad input is refused before anything is stored.
  try {
    await store.append(account, [MoneyDeposited.create({ amount: -5 })]);
  } catch (error) {
    console.log(`invalid event refused: ${(error as Error).message}`);
  }

  // 5. Read the stream back and fold it into a balance.
  let balance = 0;
  for await (const event of store.readStream(account)) {
    if (MoneyDeposited.is(event)) balance += event.data.amount;
    if (MoneyWithdrawn.is(event)) balance -= event.data.amount;
    console.log(`  v${event.version} ${event.type} ${JSON.stringify(event.data)}`);
  }
  console.log(`balance of ${account}: ${balance}`);

  // 6. Read the global log: every stream, in commit order, from any position.
  let count = 0;
  let last = '';
  for await (const event of store.readAll()) {
    count++;
    last = event.position;
  }
  console.log(
    `the global log holds ${count} events (this store has been toured ${count / 3} times); last position ${last}`,
  );
} finally {
  await store.close();
}
