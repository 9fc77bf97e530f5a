/**
 * Upgrades from every released schema version, on PostgreSQL and on PGlite: a schema made by migrations 1..N only (as
 * the release that shipped N left it), with events, checkpoints, snapshots, documents, a projection and an inbox entry
 * written the way that release wrote them, is opened by the current store, which migrates it to the latest version;
 * everything written before is then intact and usable. Needs the server (see helpers.ts).
 */
// tier: integration
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import { EventIdConflictError, formatPosition, newId } from '@eventline/core';
import { collect } from '@eventline/core/testing';
import {
  LATEST_MIGRATION,
  createPGliteStore,
  createPostgresStore,
  createSqlDocumentStore,
  createSqlInbox,
  createSqlProjectionCatalog,
  createSqlSnapshotStore,
  createSqlSubscriptionStore,
  migrations,
  quoteSchema,
  type SqlEventStore,
} from '@eventline/postgres';
import * as q from '../src/sql/read-side-statements.js';
import { DATABASE_URL, cleanUp, connectForTests, uniqueSchema } from './helpers.js';

/** A connection as the set-up needs it: several statements without parameters, or one with. */
interface Raw {
  exec(sql: string): Promise<void>;
  query<R>(text: string, values?: unknown[]): Promise<R[]>;
}

/** The schema as the release that shipped migration `version` left it: the ledger, then migrations 1..version. */
async function createAtVersion(raw: Raw, schema: string, version: number): Promise<void> {
  const s = quoteSchema(schema);
  await raw.exec(
    `CREATE SCHEMA ${s}; CREATE TABLE ${s}.migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
  );
  for (const migration of migrations.filter((m) => m.version <= version)) {
    await raw.exec(migration.sql(s));
    await raw.query(`INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
  }
}

interface Written {
  readonly ids: { a: string[]; b: string[] };
}

/**
 * Writes what a store at `version` would have: events through that version's append function (its four-parameter
 * form, which every version has), a soft delete, stream metadata; from version 2 the read side's rows.
 */
async function writeAtVersion(raw: Raw, schema: string, version: number): Promise<Written> {
  const s = quoteSchema(schema);
  const append = async (
    streamId: string,
    expected: string,
    events: Array<{ id: string; type: string; data: unknown }>,
  ) => {
    const [row] = await raw.query<{ r: string }>(`SELECT ${s}.append_events($1, $2, $3::uuid[], $4::jsonb) AS r`, [
      streamId,
      expected,
      `{${events.map((e) => e.id).join(',')}}`,
      JSON.stringify(events.map((e) => [e.type, e.data, { schemaVersion: 1 }])),
    ]);
    assert.match(row!.r, /^ok /, `append to ${streamId} at version ${version}`);
  };
  const ids = { a: [newId(), newId(), newId()], b: [newId()] };
  await append('acct-a', 'no_stream', [
    { id: ids.a[0]!, type: 'Opened', data: { owner: 'Ada' } },
    { id: ids.a[1]!, type: 'Deposited', data: { amount: 5 } },
  ]);
  await append('acct-b', 'any', [{ id: ids.b[0]!, type: 'Opened', data: { owner: 'Bob' } }]);
  await append('acct-a', '2', [{ id: ids.a[2]!, type: 'Deposited', data: { amount: 7 } }]);
  const [meta] = await raw.query<{ status: string }>(`SELECT status FROM ${s}.set_stream_metadata($1, $2, $3)`, [
    'acct-a',
    'any',
    JSON.stringify({ custom: { tier: 'gold' } }),
  ]);
  assert.equal(meta!.status, 'ok');
  await append('acct-gone', 'no_stream', [{ id: newId(), type: 'Opened', data: { owner: 'Cy' } }]);
  const [deleted] = await raw.query<{ status: string }>(`SELECT status FROM ${s}.delete_stream($1, $2, $3, $4)`, [
    'acct-gone',
    'any',
    false,
    false,
  ]);
  assert.equal(deleted!.status, 'ok');
  if (version >= 2) {
    await raw.query(q.saveCheckpoint(s), ['balances', formatPosition(1n, 2n)]);
    await raw.query(q.saveSnapshot(s), ['acct-a', 2, 1, JSON.stringify({ balance: 5 })]);
    await raw.query(q.activateProjection(s), ['balances', 3]);
    await raw.query(q.recordInbox(s), ['mailer', 'message-1']);
    // A document table as the document store creates it (`rm_<collection>`), with one document.
    await raw.exec(q.createDocumentTable(s, '"rm_accounts"'));
    await raw.query(q.registerDocumentTable(s), ['accounts', '"rm_accounts"']);
    await raw.query(q.putDocument(s, '"rm_accounts"'), ['acct-a', JSON.stringify({ balance: 12 }), 'v0001']);
  }
  return { ids };
}

/** The store migrates the schema from `version`, and everything written before is there and usable. */
async function assertUpgraded(store: SqlEventStore, version: number, written: Written): Promise<void> {
  assert.deepEqual(
    await store.migrate(),
    Array.from({ length: LATEST_MIGRATION - version }, (_, i) => version + i + 1),
    'the missing migrations, in order',
  );
  assert.deepEqual(await store.migrate(), [], 'then up to date');

  // The events, in stream order and in the log.
  const a = await collect(store.readStream('acct-a'));
  assert.deepEqual(
    a.map((e) => [e.id, e.version, e.type, e.data]),
    [
      [written.ids.a[0], 1, 'Opened', { owner: 'Ada' }],
      [written.ids.a[1], 2, 'Deposited', { amount: 5 }],
      [written.ids.a[2], 3, 'Deposited', { amount: 7 }],
    ],
  );
  const log = await collect(store.readAll());
  assert.equal(log.length, 5);
  assert.deepEqual(
    log.filter((e) => e.streamId === 'acct-a').map((e) => e.id),
    written.ids.a,
  );
  assert.deepEqual(await store.getStreamMetadata('acct-a'), { custom: { tier: 'gold' } });
  assert.deepEqual(await store.streamInfo('acct-gone'), {
    streamId: 'acct-gone',
    exists: false,
    version: 1,
    deleted: 'soft',
  });
  assert.deepEqual(await collect(store.readStream('acct-gone')), []);

  // Idempotency carries over: a retry of a batch stored before is its original result; its ids elsewhere, a conflict.
  const retried = await store.append('acct-b', [{ id: written.ids.b[0]!, type: 'Opened', data: { owner: 'Bob' } }]);
  assert.equal(retried.duplicate, true);
  assert.equal(retried.version, 1);
  await assert.rejects(
    store.append('acct-c', [{ id: written.ids.b[0]!, type: 'Opened', data: { owner: 'Bob' } }]),
    EventIdConflictError,
  );

  // The store goes on writing: appends alone, in a transaction, after the old events in the log.
  const next = await store.append('acct-a', [{ type: 'Deposited', data: { amount: 1 } }], { expectedVersion: 3 });
  assert.equal(next.version, 4);
  assert.ok(next.position > log[log.length - 1]!.position);
  await store.transaction(async (tx) => {
    await tx.append('acct-b', [{ type: 'Deposited', data: { amount: 2 } }], { expectedVersion: 1 });
    await tx.append('acct-new', [{ type: 'Opened', data: { owner: 'Di' } }], { expectedVersion: 'no_stream' });
  });
  const reopened = await store.append('acct-gone', [{ type: 'Opened', data: { owner: 'Cy' } }]);
  assert.equal(reopened.version, 2, 'a soft-deleted stream is re-created, its numbering continued');
  assert.equal((await collect(store.readAll())).length, 9);
  assert.deepEqual(
    (await collect(store.readStream('acct-a'))).map((e) => e.version),
    [1, 2, 3, 4],
  );

  // The read side: what was written before, then new writes.
  const subscriptions = createSqlSubscriptionStore(store);
  const documents = createSqlDocumentStore(store);
  const snapshots = createSqlSnapshotStore(store);
  const catalog = createSqlProjectionCatalog(store);
  const inbox = createSqlInbox(store);
  if (version >= 2) {
    assert.equal(await subscriptions.checkpoint('balances'), formatPosition(1n, 2n));
    assert.deepEqual(await documents.collection('accounts').get('acct-a'), {
      id: 'acct-a',
      data: { balance: 12 },
      version: 'v0001',
    });
    assert.deepEqual(await snapshots.load('acct-a'), {
      streamId: 'acct-a',
      version: 2,
      stateVersion: 1,
      state: { balance: 5 },
    });
    assert.equal(await catalog.active('balances'), 3);
    assert.equal(await inbox.process('mailer', 'message-1', async () => assert.fail('processed twice')), false);
  }
  await subscriptions.setCheckpoint('balances', next.position);
  assert.equal(await subscriptions.checkpoint('balances'), next.position);
  assert.equal(await documents.collection('accounts').put('acct-a', { balance: 13 }, 'v0002'), true);
  assert.equal((await documents.collection('accounts').get('acct-a'))?.version, 'v0002');
  assert.equal(await documents.collection('accounts').count(), 1);
  await snapshots.save({ streamId: 'acct-a', version: 4, stateVersion: 1, state: { balance: 13 } });
  assert.equal((await snapshots.load('acct-a'))?.version, 4);
  await catalog.activate('balances', 4);
  assert.equal(await catalog.active('balances'), 4);
  assert.equal(await inbox.process('mailer', 'message-2', async () => undefined), true);
}

const released = migrations.map((m) => m.version);

describe('upgrades from every released schema version', () => {
  describe('PostgreSQL', () => {
    let admin: pg.Client;
    const schemas: string[] = [];
    const stores: SqlEventStore[] = [];
    before(async () => {
      admin = await connectForTests();
    });
    after(async () => {
      await Promise.all(stores.map((s) => s.close()));
      await cleanUp(admin, schemas);
    });
    const raw = (): Raw => ({
      exec: async (sql) => {
        await admin.query(sql);
      },
      query: async <R>(text: string, values: unknown[] = []) => (await admin.query(text, values)).rows as R[],
    });

    for (const version of released) {
      it(`from version ${version}`, async () => {
        const schema = uniqueSchema(`upg${version}`);
        schemas.push(schema);
        await createAtVersion(raw(), schema, version);
        const written = await writeAtVersion(raw(), schema, version);
        const store = createPostgresStore({ schema, connectionString: DATABASE_URL, poolSize: 4 });
        stores.push(store);
        await assertUpgraded(store, version, written);
      });
    }
  });

  describe('PGlite', () => {
    for (const version of released) {
      it(`from version ${version}`, async () => {
        const db = new PGlite('memory://');
        try {
          const raw: Raw = {
            exec: async (sql) => {
              await db.exec(sql);
            },
            query: async <R>(text: string, values: unknown[] = []) => (await db.query<R>(text, values)).rows,
          };
          const schema = 'eventline';
          await createAtVersion(raw, schema, version);
          const written = await writeAtVersion(raw, schema, version);
          const store = createPGliteStore({ db, schema });
          try {
            await assertUpgraded(store, version, written);
          } finally {
            await store.close();
          }
        } finally {
          await db.close();
        }
      });
    }
  });
});
