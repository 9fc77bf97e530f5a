/**
 * The raw-driver baseline: an event table with the store's columns, written and read the way a competent user of
 * node-postgres or PGlite would, with no library in between. The same code runs on both: each gives `query(text, params)`.
 */
import type pg from 'pg';
import type { BenchEvent } from './events.js';

export type Row = Record<string, unknown>;
export type Query = (text: string, params?: unknown[]) => Promise<{ rows: Row[] }>;

/**
 * node-postgres with each distinct statement prepared once per connection under a name of its own, as a competent user
 * runs hot statements (and as the store does).
 */
export function preparedQueries(pool: pg.Pool): Query {
  const names = new Map<string, string>();
  return (text, values) => {
    let name = names.get(text);
    if (name === undefined) names.set(text, (name = `bench_${names.size}`));
    return pool.query({ name, text, values });
  };
}

/** The table: the store's columns, a global position for keyset paging, and the uniqueness an event store needs. */
export function rawTableDdl(table: string): string {
  return `CREATE TABLE ${table} (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    stream_id text NOT NULL,
    version integer NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
  )`;
}

const COLUMNS = 'event_id, stream_id, version, type, data, metadata';
const SELECTED = 'global_position, event_id, stream_id, version, type, data, metadata, recorded_at';

/** One INSERT in its own (implicit) transaction. */
export async function rawAppendOne(
  query: Query,
  table: string,
  streamId: string,
  version: number,
  event: BenchEvent,
): Promise<void> {
  await query(`INSERT INTO ${table} (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)`, [
    event.id,
    streamId,
    version,
    event.type,
    JSON.stringify(event.data),
    JSON.stringify(event.metadata),
  ]);
}

/** One multi-row INSERT of the whole batch, versions `firstVersion`, `firstVersion + 1`, ... */
export async function rawAppendBatch(
  query: Query,
  table: string,
  streamId: string,
  firstVersion: number,
  events: readonly BenchEvent[],
): Promise<void> {
  const values: string[] = [];
  const params: unknown[] = [];
  events.forEach((event, i) => {
    const p = i * 6;
    values.push(`($${p + 1}, $${p + 2}, $${p + 3}, $${p + 4}, $${p + 5}, $${p + 6})`);
    params.push(
      event.id,
      streamId,
      firstVersion + i,
      event.type,
      JSON.stringify(event.data),
      JSON.stringify(event.metadata),
    );
  });
  await query(`INSERT INTO ${table} (${COLUMNS}) VALUES ${values.join(', ')}`, params);
}

/** Reads the whole log by keyset paging on the global position, `pageSize` rows a query; stops after `limit`. Returns the count. */
export async function rawReadAll(query: Query, table: string, pageSize: number, limit = Infinity): Promise<number> {
  let after: unknown = 0;
  let count = 0;
  for (;;) {
    const { rows } = await query(
      `SELECT ${SELECTED} FROM ${table} WHERE global_position > $1 ORDER BY global_position LIMIT $2`,
      [after, pageSize],
    );
    for (const _row of rows) if (++count >= limit) return count;
    if (rows.length < pageSize) return count;
    after = rows[rows.length - 1]!.global_position;
  }
}

/** Reads one stream forwards by keyset paging on (stream_id, version). Returns the count. */
export async function rawReadStream(query: Query, table: string, streamId: string, pageSize: number): Promise<number> {
  let after = 0;
  let count = 0;
  for (;;) {
    const { rows } = await query(
      `SELECT ${SELECTED} FROM ${table} WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3`,
      [streamId, after, pageSize],
    );
    count += rows.length;
    if (rows.length < pageSize) return count;
    after = rows[rows.length - 1]!.version as number;
  }
}
