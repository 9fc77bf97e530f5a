/**
 * The read side on PostgreSQL and PGlite: subscription state, document read models, the projection catalog,
 * snapshots and the consumer inbox, all in the event store's own database and schema, written through the store's
 * transactions — so a subscription's read-model writes, its checkpoint and its parked events commit together.
 * Handlers get the transaction's {@link SqlClient} as their `tx`.
 */
import { createHash } from 'node:crypto';
import {
  LeaseLostError,
  type DocumentCollection,
  type DocumentStore,
  type EventStoreSession,
  type Inbox,
  type JsonValue,
  type ParkedEvent,
  type Position,
  type ProjectionCatalog,
  type RecordedEvent,
  type Snapshot,
  type SnapshotStore,
  type StoredDocument,
  type SubscriptionStore,
} from '@eventline/core';
import { assertCollectionName, assertDocument, assertDocumentId, assertListOptions } from '@eventline/core/backend';
import type { SqlClient, SqlQueryOptions } from './session.js';
import type { SqlEventStore } from './store.js';

/** The read side's statements have fixed texts (per schema and table): prepared once per connection. */
const PREPARED: SqlQueryOptions = { prepare: true };
import * as q from './sql/read-side-statements.js';
import { quoteSchema } from './sql/statements.js';

export type { SqlEventStore };

/** The SQL client of a transaction session, to write read models in the same transaction as appends (inline projections). */
export function sqlOf(session: EventStoreSession): SqlClient {
  const sql = (session as { sql?: SqlClient }).sql;
  if (!sql) throw new TypeError('this session is not a PostgreSQL/PGlite session: it has no sql client');
  return sql;
}

/** Checkpoints, leases (fenced: a batch commits only while its instance holds the lease) and parked events. */
export function createSqlSubscriptionStore(store: SqlEventStore): SubscriptionStore<SqlClient> {
  const s = quoteSchema(store.schema);
  return {
    atomic: true,
    async checkpoint(name) {
      const rows = await store.sql.query<{ position: string }>(q.loadCheckpoint(s), [name], PREPARED);
      return (rows[0]?.position as Position | undefined) ?? null;
    },
    async commit(args, work) {
      return store.transaction(async (session) => {
        const sql = sqlOf(session);
        const lease = await sql.query<{ valid: boolean }>(q.holdLease(s), [args.name, args.owner], PREPARED);
        if (!lease[0]?.valid) throw new LeaseLostError(args.name, args.owner);
        const result = await work(sql);
        if (args.position !== undefined) await sql.query(q.saveCheckpoint(s), [args.name, args.position], PREPARED);
        if (args.park) {
          const { event, error, attempts } = args.park;
          await sql.query(
            q.parkEvent(s),
            [args.name, event.id, JSON.stringify(event), JSON.stringify(error), attempts],
            PREPARED,
          );
        }
        if (args.unpark !== undefined) await sql.query(q.unparkEvent(s), [args.name, args.unpark], PREPARED);
        return result;
      });
    },
    async moveCheckpoint(args) {
      const moved = await store.sql.query(q.moveCheckpoint(s), [args.name, args.owner, args.position], PREPARED);
      if (moved.length === 0) throw new LeaseLostError(args.name, args.owner);
    },
    async setCheckpoint(name, position) {
      if (position === null) await store.sql.query(q.deleteCheckpoint(s), [name], PREPARED);
      else await store.sql.query(q.saveCheckpoint(s), [name, position], PREPARED);
    },
    async acquireLease(name, owner, ttlMs) {
      const rows = await store.sql.query<{ owner: string }>(
        q.acquireLease(s),
        [name, owner, Math.round(ttlMs)],
        PREPARED,
      );
      return rows.length === 1;
    },
    async releaseLease(name, owner) {
      await store.sql.query(q.releaseLease(s), [name, owner], PREPARED);
    },
    async parked(name) {
      const rows = await store.sql.query<{
        event: RecordedEvent & { recordedAt: string };
        error: ParkedEvent['error'];
        attempts: number;
        parked_at: Date | string;
      }>(q.listParked(s), [name], PREPARED);
      return rows.map((row) => ({
        subscription: name,
        event: { ...row.event, recordedAt: new Date(row.event.recordedAt) },
        error: row.error,
        attempts: Number(row.attempts),
        parkedAt: new Date(row.parked_at),
      }));
    },
    onAppended: (listener) => store.onAppended(listener),
    async close() {},
  };
}

/**
 * Document read models: one table per collection (`<schema>.rm_<collection>`: id, data jsonb, version), created by the
 * first write (or by a read inside a transaction, which a handler's write follows). A read on its own never creates
 * one: a collection that does not exist reads as empty. A write carries the position of the event that made it; an
 * older or repeated one is ignored.
 */
export function createSqlDocumentStore(store: SqlEventStore): DocumentStore<SqlClient> {
  const s = quoteSchema(store.schema);
  /** Tables known to exist, committed. A table created inside a transaction is not: that transaction may roll back. */
  const ready = new Set<string>();
  const createdIn = new WeakMap<SqlClient, Set<string>>();
  const ensure = async (tx: SqlClient | undefined, collection: string, table: string) => {
    if (ready.has(table) || (tx && createdIn.get(tx)?.has(table))) return;
    const create = async (client: SqlClient) => {
      const [found] = await client.query<{ exists: boolean }>(q.tableExists(), [`${s}.${table}`], PREPARED);
      if (found?.exists) return true;
      await client.query(q.lockKey(), [`${store.schema}.${table}`]);
      await client.query(q.createDocumentTable(s, table));
      await client.query(q.registerDocumentTable(s), [collection, table]);
      return false;
    };
    if (!tx) {
      await store.transaction((session) => create(sqlOf(session)));
      ready.add(table);
    } else if (await create(tx)) {
      ready.add(table);
    } else {
      let created = createdIn.get(tx);
      if (!created) createdIn.set(tx, (created = new Set()));
      created.add(table);
    }
  };
  /** Whether the table exists, committed (remembered once it does). */
  const exists = async (table: string) => {
    if (ready.has(table)) return true;
    const [found] = await store.sql.query<{ exists: boolean }>(q.tableExists(), [`${s}.${table}`], PREPARED);
    if (found?.exists) ready.add(table);
    return found?.exists === true;
  };
  return {
    collection<T>(name: string, tx?: SqlClient): DocumentCollection<T> {
      assertCollectionName(name);
      const table = tableOf(name);
      const write = async <R>(text: string, values: unknown[]): Promise<R[]> => {
        await ensure(tx, name, table);
        return (tx ?? store.sql).query<R>(text, values, PREPARED);
      };
      /** A read: in a transaction, as a write would (a handler reads, then writes); on its own, never creating. */
      const read = async <R>(text: string, values: unknown[]): Promise<R[]> => {
        if (tx) return write<R>(text, values);
        if (!(await exists(table))) return [];
        try {
          return await store.sql.query<R>(text, values, PREPARED);
        } catch (error) {
          // Dropped since (a rebuild's switch, in this process or another): it reads as empty, as before it existed.
          ready.delete(table);
          if (!(await exists(table))) return [];
          throw error;
        }
      };
      return {
        async get(id) {
          assertDocumentId(name, id);
          const [row] = await read<{ data: T; version: string }>(q.getDocument(s, table), [id]);
          return row ? { id, data: row.data, version: row.version } : null;
        },
        async put(id, data, version) {
          assertDocument(name, id, data);
          return (await write(q.putDocument(s, table), [id, JSON.stringify(data), version])).length === 1;
        },
        async delete(id, version) {
          assertDocumentId(name, id);
          return (await write(q.putDocument(s, table), [id, null, version])).length === 1;
        },
        async list(options = {}) {
          const { after, limit } = assertListOptions(name, options);
          const rows = await read<{ id: string; data: T; version: string }>(q.listDocuments(s, table), [
            after ?? '',
            limit,
          ]);
          return rows.map((row): StoredDocument<T> => ({ id: row.id, data: row.data, version: row.version }));
        },
        async count() {
          const [row] = await read<{ count: number }>(q.countDocuments(s, table), []);
          return Number(row?.count ?? 0);
        },
      };
    },
    async has(name) {
      assertCollectionName(name);
      return exists(tableOf(name));
    },
    async collections(prefix) {
      const rows = await store.sql.query<{ collection: string }>(q.documentTablesLike(s), [prefix]);
      return rows.map((row) => row.collection).sort();
    },
    async dropCollections(prefix) {
      await store.transaction(async (session) => {
        const sql = sqlOf(session);
        for (const row of await sql.query<{ collection: string; table_name: string }>(q.documentTablesLike(s), [
          prefix,
        ])) {
          await sql.query(q.dropDocumentTable(s, row.table_name));
          await sql.query(q.unregisterDocumentTable(s), [row.collection]);
          ready.delete(row.table_name);
        }
      });
    },
  };
}

/** `rm_<collection>`, shortened with a hash when PostgreSQL's 63-character limit needs it. Always a safe identifier. */
function tableOf(collection: string): string {
  const name = `rm_${collection}`;
  if (name.length <= 63) return `"${name}"`;
  return `"${name.slice(0, 50)}_${createHash('sha256').update(collection).digest('hex').slice(0, 12)}"`;
}

/** Which version of each projection serves reads, switched atomically. */
export function createSqlProjectionCatalog(store: SqlEventStore): ProjectionCatalog {
  const s = quoteSchema(store.schema);
  return {
    async active(name) {
      const [row] = await store.sql.query<{ active_version: number }>(q.activeProjection(s), [name], PREPARED);
      return row ? Number(row.active_version) : null;
    },
    async activate(name, version) {
      await store.sql.query(q.activateProjection(s), [name, version], PREPARED);
    },
  };
}

/** Snapshots in the store's database (table `snapshots`, one per stream, the newest kept). */
export function createSqlSnapshotStore(store: SqlEventStore): SnapshotStore {
  const s = quoteSchema(store.schema);
  return {
    async load(streamId, session) {
      const sql = session ? sqlOf(session) : store.sql;
      const [row] = await sql.query<{ version: string | number; state_version: number; state: JsonValue }>(
        q.loadSnapshot(s),
        [streamId],
        PREPARED,
      );
      return row
        ? { streamId, version: Number(row.version), stateVersion: Number(row.state_version), state: row.state }
        : null;
    },
    async save(snapshot: Snapshot) {
      await store.sql.query(
        q.saveSnapshot(s),
        [snapshot.streamId, snapshot.version, snapshot.stateVersion, JSON.stringify(snapshot.state)],
        PREPARED,
      );
    },
    async delete(streamId) {
      if (streamId === undefined) await store.sql.query(q.deleteAllSnapshots(s), [], PREPARED);
      else await store.sql.query(q.deleteSnapshot(s), [streamId], PREPARED);
    },
  };
}

/** The consumer inbox: the id is recorded in the same transaction as the effect, so a redelivery has no second effect. */
export function createSqlInbox(store: SqlEventStore): Inbox<SqlClient> {
  const s = quoteSchema(store.schema);
  return {
    process(group, messageId, effect) {
      return store.transaction(async (session) => {
        const sql = sqlOf(session);
        const fresh = await sql.query(q.recordInbox(s), [group, messageId], PREPARED);
        if (fresh.length === 0) return false;
        await effect(sql);
        return true;
      });
    },
  };
}
