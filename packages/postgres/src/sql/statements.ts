/**
 * The statements the PostgreSQL and PGlite stores run, in one place: both drivers run exactly this text. (The schema
 * itself is made by the migrations in ./migrations/, frozen once released; the read side's statements are in
 * ./read-side-statements.ts.)
 *
 * Each statement is a function of the schema, already validated and double-quoted (see {@link quoteSchema}); user input
 * never goes into the text, only into parameters. {@link statementsFor} binds them to one schema and gives each a name,
 * which node-postgres uses as a prepared-statement name (parsed once per connection).
 */
import { ValidationError } from '@eventline/core';
import { safeQuote, streamHash } from '@eventline/core/backend';

/** The schema used when none is configured. */
export const DEFAULT_SCHEMA = 'eventline';

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Checks a schema name and returns it double-quoted, ready to be put in SQL text.
 * Allowed: a lower-case letter or `_`, then up to 62 lower-case letters, digits or `_`; not `pg_…` (reserved by PostgreSQL).
 * @throws {ValidationError}
 */
export function quoteSchema(schema: unknown): string {
  if (typeof schema !== 'string' || !SCHEMA_NAME.test(schema)) {
    throw new ValidationError(
      `Invalid schema name ${safeQuote(schema)}: use a lower-case letter or '_' followed by up to 62 lower-case letters, digits or '_' (e.g. 'eventline', 'app_events')`,
    );
  }
  if (schema.startsWith('pg_'))
    throw new ValidationError(`Invalid schema name '${schema}': names starting with 'pg_' are reserved by PostgreSQL`);
  return `"${schema}"`;
}

// ---------------------------------------------------------------------------------------------------------------------
// The migration runner's statements (see migrations.ts). `s` is the quoted schema.

/** The migrations ledger; created before the lock-protected migration work reads it. */
export const createMigrationsTable = (s: string) => `
CREATE SCHEMA IF NOT EXISTS ${s};
CREATE TABLE IF NOT EXISTS ${s}.migrations (
  version integer PRIMARY KEY,
  name text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);`;

export const appliedMigrations = (s: string) => `SELECT version FROM ${s}.migrations ORDER BY version`;
export const recordMigration = (s: string) => `INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`;
/** Serialises migrations of one schema across processes; released at commit. The two keys come from the schema name. */
export const migrationLock = () => `SELECT pg_advisory_xact_lock($1::int4, $2::int4)`;

// ---------------------------------------------------------------------------------------------------------------------
// Statements the stores run.

/**
 * The columns of an event as the stores read them, in this order (rows come back as arrays): id, stream id, type,
 * version, position (formatted as eventline's Position, `hhhh…/hhhh…`: the same text as `formatPosition`), recorded at
 * (ms since the epoch, whole) and the data and metadata. The position and the time are computed here rather than by
 * the driver and JavaScript: it is cheaper, and reading is mostly that.
 */
const EVENT_COLUMNS = `e.event_id, e.stream_id, e.type, e.version,
       lpad(to_hex(e.transaction_id::text::int8), 16, '0') || '/' || lpad(to_hex(e.position), 16, '0') AS pos,
       floor(extract(epoch FROM e.recorded_at) * 1000)::int8 AS recorded_ms, e.data, e.metadata`;

/**
 * $1 stream id, $2 expected version as text ('any' | 'no_stream' | 'stream_exists' | digits), $3 the event ids, $4 a
 * JSON array of [type, data, metadata] (built by concatenating the JSON eventline already produced, so nothing is
 * serialised or escaped twice). The result is one text column, `r`, with space-separated fields:
 * `ok|duplicate <version> <first version> <last position> <transaction id>`, `wrong_version <version> <true|false: exists>`,
 * `id_conflict <id,id...>` or `deleted`.
 */
export const appendEvents = (s: string) => `SELECT ${s}.append_events($1, $2, $3::uuid[], $4::jsonb, $5) AS r`;

/**
 * $1 stream ids, $2 expected versions as text, $3 every event id, $4 the number of events of each batch, $5 a JSON array
 * of the batches (each as $4 of {@link appendEvents}). One column, `r`: the results, in order (see append_group).
 */
export const appendGroup = (s: string) =>
  `SELECT ${s}.append_group($1::text[], $2::text[], $3::uuid[], $4::int4[], $5::jsonb) AS r`;

/**
 * An append that claims or releases uniqueness values (migration 6): $1-$4 as for {@link appendEvents}, $5 the claim
 * operations as JSON (`[["r", scope] | ["c", scope, hash hex], ...]`). One column, `r`: the line of appendEvents, or
 * `claimed <scope> <owner>` (nothing of the append was stored).
 */
export const appendClaiming = (s: string) =>
  `SELECT ${s}.append_claiming($1, $2, $3::uuid[], $4::jsonb, $5::jsonb) AS r`;

/** The stream holding a claim: $1 scope, $2 hash as hex. */
export const claimOwner = (s: string) => `SELECT owner FROM ${s}.claims WHERE scope = $1 AND hash = decode($2, 'hex')`;

/**
 * rebuildClaims, first thing in its transaction: waits for every transaction that claimed or released, and holds back
 * those that will, until the rebuild commits (readers of claims go on).
 */
export const lockClaims = (s: string) => `LOCK TABLE ${s}.claims IN EXCLUSIVE MODE`;

/** rebuildClaims: every claim goes, before the log's are inserted again. */
export const clearClaims = (s: string) => `DELETE FROM ${s}.claims`;

/**
 * rebuildClaims: a page of the events that may claim or release, in log order, after ($1 transaction id, $2 position):
 * of the stored types $3, or with `releasesClaims` in their metadata; at most $4. Not gap-safe on purpose: under the
 * lock of {@link lockClaims}, every transaction that touched claims has ended.
 */
export const readClaimEvents = (s: string) =>
  `SELECT ${EVENT_COLUMNS} FROM ${s}.events e
    WHERE (e.transaction_id, e.position) > ($1::xid8, $2::int8)
      AND (e.type = ANY ($3::text[]) OR e.metadata ? 'releasesClaims')
    ORDER BY e.transaction_id, e.position
    LIMIT $4`;

/** rebuildClaims: the claims, $1 scopes, $2 hashes as hex, $3 owners. */
export const insertClaims = (s: string) =>
  `INSERT INTO ${s}.claims (scope, hash, owner)
   SELECT u.scope, decode(u.hash, 'hex'), u.owner FROM unnest($1::text[], $2::text[], $3::text[]) AS u(scope, hash, owner)`;

/** $1 stream id, $2 expected version as text, $3 hard, $4 keep the events (until commit). */
export const deleteStream = (s: string) =>
  `SELECT status, stream_version, stream_exists FROM ${s}.delete_stream($1, $2, $3, $4)`;

/** $1 stream id, $2 expected version as text, $3 metadata JSON. */
export const setStreamMetadata = (s: string) =>
  `SELECT status, stream_version, stream_exists FROM ${s}.set_stream_metadata($1, $2, $3)`;

/** Removes the events of streams hard-deleted in a PGlite transaction, just before it commits. $1 stream ids. */
export const removeStreamEvents = (s: string) => `DELETE FROM ${s}.events WHERE stream_id = ANY ($1::text[])`;

/** The stream's row: read by streamInfo / getStreamMetadata, and at the start of a stream read on PGlite during a transaction. $1 stream id. */
export const streamState = (s: string) =>
  `SELECT version, hidden_before, deleted, metadata FROM ${s}.streams WHERE stream_id = $1`;

/**
 * A page of a stream, forwards. $1 stream id, $2 lowest version, $3 highest version, $4 maxAge in seconds (null: no
 * limit), $5 page size.
 */
export const readStreamForwards = (s: string) =>
  `SELECT ${EVENT_COLUMNS} FROM ${s}.events e
    WHERE e.stream_id = $1 AND e.version >= $2 AND e.version <= $3
      AND ($4::float8 IS NULL OR e.recorded_at >= now() - $4::float8 * interval '1 second')
    ORDER BY e.version
    LIMIT $5`;

/** A page of a stream, backwards; parameters as for {@link readStreamForwards}. */
export const readStreamBackwards = (s: string) =>
  `SELECT ${EVENT_COLUMNS} FROM ${s}.events e
    WHERE e.stream_id = $1 AND e.version >= $2 AND e.version <= $3
      AND ($4::float8 IS NULL OR e.recorded_at >= now() - $4::float8 * interval '1 second')
    ORDER BY e.version DESC
    LIMIT $5`;

/**
 * The first page of a stream read and the stream's row, in one statement (one round trip, one snapshot: the page is
 * exactly as of the row). One row, whose event columns are null, carries the stream's row in four more columns
 * (version, hidden_before, deleted, metadata; null in the event rows); find it by its null id. No row at all: no such
 * stream. The events are those from max($2, the first visible version) to min($3 or the stream's version, its version),
 * at most $4, none when the stream is hard-deleted; the first visible version and the maxAge filter are
 * `firstVisibleVersion` of eventline's validate.ts and the maxAge rule of {@link readStreamForwards}, in SQL.
 */
const readStreamFirstPage = (
  s: string,
  order: 'ASC' | 'DESC',
  p = { streamId: '$1', from: '$2', to: '$3', size: '$4' },
) => `
  WITH st AS (
    SELECT version, hidden_before, deleted, metadata,
           greatest(1, hidden_before, (metadata->>'truncateBefore')::int8, version - (metadata->>'maxCount')::int8 + 1) AS first_visible,
           (metadata->>'maxAge')::float8 AS max_age
      FROM ${s}.streams WHERE stream_id = ${p.streamId})
  SELECT NULL::uuid, NULL::text, NULL::text, NULL::int8, NULL::text, NULL::int8, NULL::jsonb, NULL::jsonb,
         st.version, st.hidden_before, st.deleted, st.metadata
    FROM st
  UNION ALL
  SELECT page.*, NULL, NULL, NULL, NULL
    FROM st CROSS JOIN LATERAL (
      -- Lateral, so that the bounds taken from the row are the index scan's conditions, in a generic plan too.
      SELECT ${EVENT_COLUMNS}
        FROM ${s}.events e
       WHERE st.deleted IS DISTINCT FROM 'hard'
         AND e.stream_id = ${p.streamId} AND e.version >= greatest(${p.from}::int8, st.first_visible) AND e.version <= least(coalesce(${p.to}::int8, st.version), st.version)
         AND (st.max_age IS NULL OR e.recorded_at >= now() - st.max_age * interval '1 second')
       ORDER BY e.version ${order}
       LIMIT ${p.size}) page`;

/**
 * {@link readStreamFirstPage} forwards for several streams in one statement: $1 stream ids, $2 the first version wanted
 * of each, $3 the page size of each. Each row is a row of {@link readStreamFirstForwards} for the stream at index
 * `n - 1` of the arrays, with `n` put last (so the row is used as it is); a stream's rows come together, in the order
 * of its own read.
 */
export const readStreamFirstGroup = (s: string) => `
  SELECT r.*, g.n
    FROM unnest($1::text[], $2::int8[], $3::int4[]) WITH ORDINALITY AS g(stream_id, from_version, page_size, n)
   CROSS JOIN LATERAL (${readStreamFirstPage(s, 'ASC', { streamId: 'g.stream_id', from: 'g.from_version', to: 'NULL', size: 'g.page_size' })}) r`;

/** {@link readStreamFirstPage} forwards: $1 stream id, $2 first version wanted, $3 null, $4 page size. */
export const readStreamFirstForwards = (s: string) => readStreamFirstPage(s, 'ASC');
/** {@link readStreamFirstPage} backwards: $1 stream id, $2 1, $3 last version wanted (null: the stream's version), $4 page size. */
export const readStreamFirstBackwards = (s: string) => readStreamFirstPage(s, 'DESC');

/**
 * A gap-safe page of the global log: events of transactions older than every transaction still open (the snapshot's
 * xmin), after the position ($1 transaction id, $2 sequence), in (transaction id, position) order, optionally only of
 * the types $3 and the categories $4 (null: all), at most $5. One more row, whose event columns are null, carries the
 * snapshot's xmin in a ninth column (null in the event rows); it usually comes last, but find it by its null id.
 */
export const readAllPage = (s: string) => readAllPageOf(s, EVENT_COLUMNS, '');

/**
 * {@link readAllPage} for publishers: data and metadata as JSON text (no parse in the client), and after the xmin
 * column the metadata's correlationId, causationId, traceparent and schemaVersion (for headers and upcasting).
 */
export const readAllPageEncoded = (s: string) =>
  readAllPageOf(
    s,
    EVENT_COLUMNS.replace('e.data, e.metadata', 'e.data::text, e.metadata::text'),
    `, e.metadata->>'correlationId', e.metadata->>'causationId', e.metadata->>'traceparent', e.metadata->>'schemaVersion'`,
    ', NULL, NULL, NULL, NULL',
  );

const readAllPageOf = (s: string, columns: string, extra: string, extraNulls = '') =>
  `(SELECT ${columns}, NULL::text AS snapshot_xmin${extra}
      FROM ${s}.events e
     WHERE (e.transaction_id, e.position) > ($1::xid8, $2::int8)
       AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
       AND ($3::text[] IS NULL OR e.type = ANY ($3::text[]))
       AND ($4::text[] IS NULL OR e.category = ANY ($4::text[]))
     ORDER BY e.transaction_id, e.position
     LIMIT $5)
   UNION ALL
   SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, pg_snapshot_xmin(pg_current_snapshot())::text${extraNulls}`;

/** The snapshot's xmin: every transaction below it has ended. */
export const snapshotXmin = () => `SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin`;

/**
 * What holds readAll readers back: events stored by transactions not below the snapshot's xmin (committed, but behind
 * an older open transaction; the caller's own open transaction, if any, is not counted), and the age in ms of the oldest
 * open transaction that has written something (null when none, or when pg_stat_activity does not show it).
 */
export const readAllHoldback = (s: string) =>
  `SELECT (SELECT count(*) FROM ${s}.events
            WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())
              AND transaction_id IS DISTINCT FROM pg_current_xact_id_if_assigned())::int8 AS held_back,
          (SELECT (extract(epoch FROM clock_timestamp() - min(xact_start)) * 1000)::float8
             FROM pg_stat_activity WHERE backend_xid IS NOT NULL) AS oldest_ms`;

/**
 * The next position's transaction part: the first transaction id not yet assigned (the current snapshot's xmax). Every
 * position returned so far has a smaller one: its transaction (or the label it took, see migration 4) has ended.
 */
export const snapshotXmax = () => `SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax`;

/**
 * lockStreams: transaction-level advisory locks on (the schema's key, a 32-bit key of each stream id), $2, in the order
 * of the array (the caller sorts the keys). One kind of lock, in one order, for every caller: the rows of existing
 * streams and the inserts of new ones then follow without a cycle (two statements, rows then advisory locks for the
 * rest, left a gap in which a stream created meanwhile was locked by neither). Nothing is written: a transaction that
 * only locks leaves nothing behind.
 */
export const lockStreams = () =>
  `SELECT count(pg_advisory_xact_lock($1::int4, u.k))::int AS locked FROM unnest($2::int4[]) WITH ORDINALITY AS u(k, n)`;

// ---------------------------------------------------------------------------------------------------------------------

/** A statement bound to a schema. `name` is unique per schema and statement (node-postgres prepares it under that name). */
export interface Statement {
  readonly name: string;
  readonly text: string;
  /** True for statements that only read (PGlite may run them on an open transaction's connection, see pglite.ts). */
  readonly readOnly: boolean;
  /** Rows as arrays of column values, in column order (the event reads), rather than objects. */
  readonly arrayRows?: boolean;
  /** Raw SQL of the caller's (SqlClient.query): not retried by the store when the database breaks it off. */
  readonly raw?: boolean;
}

export interface Statements {
  readonly schema: string;
  readonly quoted: string;
  readonly appendEvents: Statement;
  readonly appendGroup: Statement;
  readonly appendClaiming: Statement;
  readonly claimOwner: Statement;
  readonly lockClaims: Statement;
  readonly clearClaims: Statement;
  readonly readClaimEvents: Statement;
  readonly insertClaims: Statement;
  readonly deleteStream: Statement;
  readonly setStreamMetadata: Statement;
  readonly removeStreamEvents: Statement;
  readonly streamState: Statement;
  readonly readStreamForwards: Statement;
  readonly readStreamBackwards: Statement;
  readonly readStreamFirstForwards: Statement;
  readonly readStreamFirstBackwards: Statement;
  readonly readStreamFirstGroup: Statement;
  readonly readAllPage: Statement;
  readonly readAllPageEncoded: Statement;
  readonly snapshotXmin: Statement;
  readonly snapshotXmax: Statement;
  readonly readAllHoldback: Statement;
  readonly lockStreams: Statement;
  /** The first key of lockStreams' advisory locks: 'evts' mixed with a hash of the schema. */
  readonly streamLockKey: number;
}

/** Every statement of the store bound to `schema` (validated here). */
export function statementsFor(schema: string): Statements {
  const s = quoteSchema(schema);
  // Prepared-statement names are truncated by PostgreSQL to 63 bytes: long schema names are replaced by a hash.
  const tag = schema.length <= 40 ? schema : `h${streamHash(schema).toString(16)}`;
  const write = (name: string, text: string): Statement => ({
    name: `eventline.${tag}.${name}`,
    text,
    readOnly: false,
  });
  const read = (name: string, text: string): Statement => ({ name: `eventline.${tag}.${name}`, text, readOnly: true });
  const events = (name: string, text: string): Statement => ({
    name: `eventline.${tag}.${name}`,
    text,
    readOnly: true,
    arrayRows: true,
  });
  return {
    schema,
    quoted: s,
    appendEvents: write('append', appendEvents(s)),
    appendGroup: write('append_group', appendGroup(s)),
    appendClaiming: write('append_claiming', appendClaiming(s)),
    // Not read-only: on PGlite a read-only statement may run on an open transaction's connection and would see its
    // claims before they commit; this one waits for the commit instead.
    claimOwner: write('claim_owner', claimOwner(s)),
    lockClaims: write('lock_claims', lockClaims(s)),
    clearClaims: write('clear_claims', clearClaims(s)),
    readClaimEvents: events('claim_events', readClaimEvents(s)),
    insertClaims: write('insert_claims', insertClaims(s)),
    deleteStream: write('delete', deleteStream(s)),
    setStreamMetadata: write('set_metadata', setStreamMetadata(s)),
    removeStreamEvents: write('remove_events', removeStreamEvents(s)),
    streamState: read('stream', streamState(s)),
    readStreamForwards: events('read_fwd', readStreamForwards(s)),
    readStreamBackwards: events('read_bwd', readStreamBackwards(s)),
    readStreamFirstForwards: events('first_fwd', readStreamFirstForwards(s)),
    readStreamFirstBackwards: events('first_bwd', readStreamFirstBackwards(s)),
    readStreamFirstGroup: events('first_group', readStreamFirstGroup(s)),
    readAllPage: events('read_all', readAllPage(s)),
    readAllPageEncoded: events('read_all_enc', readAllPageEncoded(s)),
    snapshotXmin: read('xmin', snapshotXmin()),
    snapshotXmax: read('xmax', snapshotXmax()),
    readAllHoldback: read('holdback', readAllHoldback(s)),
    lockStreams: write('lock_streams', lockStreams()),
    streamLockKey: (streamHash(`streams:${schema}`) ^ 0x65767473) | 0,
  };
}

/** The two int4 keys of the advisory lock that serialises migrations of `schema`: 'evtl' and a hash of the name. */
export function migrationLockKeys(schema: string): [number, number] {
  return [0x6576746c, streamHash(schema) | 0];
}

/** The second key of a stream's lockStreams lock: FNV-1a of its id's UTF-8 bytes, as a signed 32-bit integer. */
export function streamLockKey(streamId: string): number {
  return streamHash(streamId) | 0;
}
