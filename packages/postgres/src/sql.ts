/**
 * Every SQL statement of the PostgreSQL and PGlite stores, in one place: both backends run exactly this text.
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
// Schema objects (migration 1). `s` is the quoted schema.

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

/**
 * Locks the stream's row, creating it when missing (version 0, not yet existing). Concurrent creators serialise: the
 * INSERT waits for a concurrent inserter's transaction, then the row is selected FOR UPDATE. `v_created` tells the
 * caller to delete the row again when the operation is refused, so that a refused write leaves nothing behind.
 */
const lockStream = (s: string, nowait = false) => {
  const select = `SELECT * INTO v_stream FROM ${s}.streams WHERE stream_id = p_stream_id FOR UPDATE`;
  // p_nowait (append_group): SKIP LOCKED, and 'busy' when another transaction holds the row.
  const first = nowait
    ? `
  IF p_nowait THEN
    ${select} SKIP LOCKED;
    IF NOT FOUND AND EXISTS (SELECT 1 FROM ${s}.streams WHERE stream_id = p_stream_id) THEN
      RETURN 'busy';
    END IF;
  ELSE
    ${select};
  END IF;`
    : `
  ${select};`;
  const again = nowait
    ? `
      IF p_nowait THEN
        ${select} SKIP LOCKED;
        IF NOT FOUND THEN
          RETURN 'busy';
        END IF;
        EXIT;
      END IF;`
    : '';
  return `${first}
  IF NOT FOUND THEN
    LOOP
      INSERT INTO ${s}.streams (stream_id, category) VALUES (p_stream_id, split_part(p_stream_id, '-', 1))
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING * INTO v_stream;
      IF FOUND THEN
        v_created := true;
        EXIT;
      END IF;${again}
      ${select};
      EXIT WHEN FOUND;
    END LOOP;
  END IF;`;
};

/**
 * p_nowait, creating a stream: an existing one goes to the slow path (whose lock does not wait) rather than to the
 * INSERT, which would wait for a transaction that holds the row (a conflicting key waits for its writer to end).
 */
const nowaitExisting = (s: string) => `
    IF NOT p_nowait OR NOT EXISTS (SELECT 1 FROM ${s}.streams WHERE stream_id = p_stream_id) THEN`;

/**
 * p_nowait: takes the lock of an existing stream's row before the fast path's UPDATE (which would wait for it), or
 * answers 'busy' when another transaction holds it. A missing row is left to the UPDATE (which then finds nothing).
 */
const nowaitPrelock = (s: string) => `
    IF p_nowait THEN
      PERFORM 1 FROM ${s}.streams WHERE stream_id = p_stream_id FOR UPDATE SKIP LOCKED;
      IF NOT FOUND AND EXISTS (SELECT 1 FROM ${s}.streams WHERE stream_id = p_stream_id) THEN
        RETURN 'busy';
      END IF;
    END IF;`;

/** The fast path's creation of a stream's row at its final version; from migration 4 with its label, this transaction's id (see schemaV4). */
const createStream = (s: string, v4: boolean, indent: string) =>
  v4
    ? `INSERT INTO ${s}.streams (stream_id, category, version, last_transaction)
${indent}  VALUES (p_stream_id, split_part(p_stream_id, '-', 1), v_count, pg_current_xact_id())
${indent}  ON CONFLICT (stream_id) DO NOTHING
${indent}  RETURNING 0, category, last_transaction INTO v_base, v_category, v_tx;`
    : `INSERT INTO ${s}.streams (stream_id, category, version) VALUES (p_stream_id, split_part(p_stream_id, '-', 1), v_count)
${indent}  ON CONFLICT (stream_id) DO NOTHING
${indent}  RETURNING 0, category INTO v_base, v_category;`;

const dropIfCreated = (s: string) =>
  `IF v_created THEN DELETE FROM ${s}.streams WHERE stream_id = p_stream_id; END IF;`;

/**
 * The fast path's expected-version rule against a locked stream row `st` (the `UPDATE` of an existing stream):
 * `expected` is the SQL of the expected version as text ('no_stream' never reaches it).
 */
const expectedHoldsOnRow = (expected: string) => `(CASE ${expected}
              WHEN 'any' THEN true
              WHEN 'stream_exists' THEN st.version > 0 AND st.deleted IS NULL
              ELSE ${expected}::bigint = st.version
            END)`;

/** The expected-version rule of `checkExpectedVersion` in eventline's validate.ts, in SQL. */
const expectedVersionHolds = `CASE p_expected
    WHEN 'any' THEN true
    WHEN 'no_stream' THEN NOT v_exists
    WHEN 'stream_exists' THEN v_exists
    ELSE p_expected::bigint = v_stream.version
  END`;

/**
 * The append function (see its comment in {@link schemaV1}). Migration 1 created it as it was then (`v3` false);
 * migration 3 re-creates it with two parameters:
 * - `p_check` (default true): false skips the look-up of the batch's ids before the INSERT, for appends outside a
 *   transaction, where the unique index refusing a stored id simply fails the statement (the store then asks again
 *   with the check, to tell a retry from a conflict). In a transaction, a refused append must not abort it.
 * - `p_nowait` (default false): true never waits for a stream's row locked by another transaction, and answers `busy`
 *   instead: used by append_group, so that one locked stream does not hold up every append of a group.
 */
const appendEventsFunction = (
  s: string,
  v3: boolean,
  v4 = false,
) => `CREATE ${v4 ? 'OR REPLACE ' : ''}FUNCTION ${s}.append_events(p_stream_id text, p_expected text, p_ids uuid[], p_events jsonb${v3 ? ', p_check boolean DEFAULT true, p_nowait boolean DEFAULT false' : ''})
RETURNS text
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_stream ${s}.streams%ROWTYPE;
  v_created boolean := false;
  v_exists boolean;
  v_count integer := cardinality(p_ids);
  v_base bigint;
  v_category text;
  v_deleted text;
  v_first bigint;
  v_same boolean;
  v_conflicts text;
  v_version bigint;
  v_position bigint;
  v_tx xid8;
BEGIN
  IF p_expected IN ('no_stream', '0') THEN${v3 ? nowaitExisting(s) : ''}
    ${createStream(s, v4, '    ')}
    v_created := FOUND;${v3 ? '\n    END IF;' : ''}
  ELSE${v3 ? nowaitPrelock(s) : ''}
    UPDATE ${s}.streams AS st SET version = st.version + v_count${v4 ? ', last_transaction = greatest(pg_current_xact_id(), st.last_transaction)' : ''}
     WHERE st.stream_id = p_stream_id AND st.deleted IS DISTINCT FROM 'hard'
       AND ${expectedHoldsOnRow('p_expected')}
    RETURNING st.version - v_count, st.category, st.deleted${v4 ? ', st.last_transaction' : ''} INTO v_base, v_category, v_deleted${v4 ? ', v_tx' : ''};
    IF NOT FOUND AND p_expected = 'any' THEN
      ${createStream(s, v4, '      ')}
      v_created := FOUND;
    END IF;
  END IF;
  IF v_base IS NOT NULL THEN
    -- Under the lock: the events, unless one of their ids is already stored (a retry, or a conflict).${
      v4
        ? ''
        : `
    v_tx := pg_current_xact_id();`
    }
    INSERT INTO ${s}.events (transaction_id, event_id, stream_id, version, category, type, data, metadata)
    SELECT v_tx, p_ids[u.n], p_stream_id, v_base + u.n, v_category, u.e->>0, u.e->1, u.e->2
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS u(e, n)
     WHERE ${v3 ? 'NOT p_check OR ' : ''}NOT EXISTS (SELECT 1 FROM ${s}.events e WHERE e.event_id = ANY (p_ids));
    IF FOUND THEN
      IF v_deleted = 'soft' THEN
        -- Appending re-creates a soft-deleted stream.
        UPDATE ${s}.streams SET deleted = NULL WHERE stream_id = p_stream_id;
      END IF;
      -- The rows took their positions in order, so the last one's is the sequence's last value in this session.
      RETURN concat_ws(' ', 'ok', v_base + v_count, v_base + 1, currval('${s}.events_position_seq'), v_tx);
    END IF;
    IF v_created THEN
      DELETE FROM ${s}.streams WHERE stream_id = p_stream_id;
    ELSE
      UPDATE ${s}.streams SET version = v_base WHERE stream_id = p_stream_id;
    END IF;
    v_created := false;
  END IF;

  -- The slow path: lock (or create) the stream's row, then check in order.
  ${v3 ? lockStream(s, true) : lockStream(s)}
  IF v_stream.deleted = 'hard' THEN
    RETURN 'deleted';
  END IF;
  v_exists := v_stream.version > 0 AND v_stream.deleted IS NULL;
  IF EXISTS (SELECT 1 FROM ${s}.events e WHERE e.event_id = ANY (p_ids)) THEN
    SELECT e.version INTO v_first FROM ${s}.events e WHERE e.event_id = p_ids[1] AND e.stream_id = p_stream_id;
    SELECT coalesce(bool_and(coalesce(e.stream_id = p_stream_id AND e.version = v_first + u.n - 1, false)), false),
           string_agg(u.id::text, ',' ORDER BY u.n) FILTER (WHERE e.event_id IS NOT NULL)
      INTO v_same, v_conflicts
      FROM unnest(p_ids) WITH ORDINALITY AS u(id, n)
      LEFT JOIN ${s}.events e ON e.event_id = u.id;
    IF v_same THEN
      SELECT e.version, e.position, e.transaction_id INTO v_version, v_position, v_tx
        FROM ${s}.events e WHERE e.event_id = p_ids[v_count];
      RETURN concat_ws(' ', 'duplicate', v_version, v_first, v_position, v_tx);
    END IF;
    ${dropIfCreated(s)}
    RETURN 'id_conflict ' || v_conflicts;
  END IF;
  IF NOT (${expectedVersionHolds}) THEN
    ${dropIfCreated(s)}
    RETURN concat_ws(' ', 'wrong_version', v_stream.version, v_exists::text);
  END IF;
  v_base := v_stream.version;${
    v4
      ? `
  v_tx := greatest(pg_current_xact_id(), v_stream.last_transaction);
  UPDATE ${s}.streams SET version = v_base + v_count, deleted = NULL, last_transaction = v_tx WHERE stream_id = p_stream_id;`
      : `
  UPDATE ${s}.streams SET version = v_base + v_count, deleted = NULL WHERE stream_id = p_stream_id;
  v_tx := pg_current_xact_id();`
  }
  INSERT INTO ${s}.events (transaction_id, event_id, stream_id, version, category, type, data, metadata)
  SELECT v_tx, p_ids[u.n], p_stream_id, v_base + u.n, v_stream.category, u.e->>0, u.e->1, u.e->2
    FROM jsonb_array_elements(p_events) WITH ORDINALITY AS u(e, n);
  RETURN concat_ws(' ', 'ok', v_base + v_count, v_base + 1, currval('${s}.events_position_seq'), v_tx);
END
$fn$;`;

export const schemaV1 = (s: string) => `
CREATE TABLE ${s}.streams (
  stream_id text PRIMARY KEY,
  category text NOT NULL,
  version bigint NOT NULL DEFAULT 0,
  hidden_before bigint NOT NULL DEFAULT 0,
  deleted text NULL CHECK (deleted IN ('soft', 'hard')),
  metadata jsonb NOT NULL DEFAULT '{}'
) WITH (fillfactor = 80);

CREATE TABLE ${s}.events (
  position bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ${s}.events_position_seq),
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  event_id uuid NOT NULL UNIQUE,
  stream_id text NOT NULL,
  version bigint NOT NULL,
  category text NOT NULL,
  type text NOT NULL,
  data jsonb NOT NULL,
  metadata jsonb NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (transaction_id, position),
  UNIQUE (stream_id, version)
);

-- Every statement in these functions is an index lookup by design, whatever the arguments. They use generic plans
-- (re-planning on each call, PostgreSQL's choice for some of them, costs more than the whole append) made without
-- sequential scans (a plan cached while a table is still nearly empty would otherwise scan it as it grows).

-- Appends a batch in one call: p_ids are the event ids, p_events a JSON array of [type, data, metadata], one per id.
-- Returns its outcome as one line of text (see appendEvents below): 'ok', 'duplicate' (this exact batch is already
-- stored: its original result), 'deleted' (tombstone), 'wrong_version' (with the stream's version and whether it
-- exists) or 'id_conflict' (with the ids already stored elsewhere). It never raises for a refused append, so that a
-- refusal inside a transaction does not abort it; a concurrent insert of the same ids into another stream raises 23505.
--
-- The common cases take a fast path: a new stream is created at its final version by one INSERT; an existing stream
-- whose expected version holds is locked and bumped by one UPDATE. Either holds the stream's row lock, so the
-- idempotency check that follows sees every earlier append of the stream; then one INSERT writes the events. Anything
-- else (a retry, a conflict, a refusal, a tombstone, a soft-deleted stream created again, a race with a concurrent
-- creator) is undone and decided on the slow path, under the lock, in the order of the in-memory store: tombstone,
-- idempotency, expected version.
${appendEventsFunction(s, false)}

-- Soft delete (hide the events, numbering continues) or hard delete (tombstone; the events are removed unless
-- p_keep_events, which PGlite transactions use to remove them at commit). Statuses as for append_events.
CREATE FUNCTION ${s}.delete_stream(
  p_stream_id text, p_expected text, p_hard boolean, p_keep_events boolean,
  OUT status text, OUT stream_version bigint, OUT stream_exists boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_stream ${s}.streams%ROWTYPE;
  v_created boolean := false;
  v_exists boolean;
BEGIN
  ${lockStream(s)}
  IF v_stream.deleted = 'hard' THEN
    status := 'deleted';
    RETURN;
  END IF;
  v_exists := v_stream.version > 0 AND v_stream.deleted IS NULL;
  stream_version := v_stream.version;
  stream_exists := v_exists;
  IF NOT (${expectedVersionHolds}) THEN
    status := 'wrong_version';
    ${dropIfCreated(s)}
    RETURN;
  END IF;
  IF p_hard THEN
    IF NOT p_keep_events THEN
      DELETE FROM ${s}.events WHERE stream_id = p_stream_id;
    END IF;
    UPDATE ${s}.streams SET deleted = 'hard' WHERE stream_id = p_stream_id;
  ELSIF v_exists THEN
    UPDATE ${s}.streams SET deleted = 'soft', hidden_before = v_stream.version + 1 WHERE stream_id = p_stream_id;
  ELSE
    ${dropIfCreated(s)}
  END IF;
  status := 'ok';
END
$fn$;

-- Replaces a stream's metadata (allowed before the stream exists). Statuses as for append_events.
CREATE FUNCTION ${s}.set_stream_metadata(
  p_stream_id text, p_expected text, p_metadata text,
  OUT status text, OUT stream_version bigint, OUT stream_exists boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_stream ${s}.streams%ROWTYPE;
  v_created boolean := false;
  v_exists boolean;
BEGIN
  ${lockStream(s)}
  IF v_stream.deleted = 'hard' THEN
    status := 'deleted';
    RETURN;
  END IF;
  v_exists := v_stream.version > 0 AND v_stream.deleted IS NULL;
  stream_version := v_stream.version;
  stream_exists := v_exists;
  IF NOT (${expectedVersionHolds}) THEN
    status := 'wrong_version';
    ${dropIfCreated(s)}
    RETURN;
  END IF;
  UPDATE ${s}.streams SET metadata = p_metadata::jsonb WHERE stream_id = p_stream_id;
  status := 'ok';
END
$fn$;
`;

/**
 * Migration 3: `append_events` gains `p_check` and `p_nowait` (see {@link appendEventsFunction}), and `append_group`
 * appends several independent batches in one call and one transaction (group commit: see append-groups.ts).
 */
export const schemaV3 = (s: string) => `
DROP FUNCTION ${s}.append_events(text, text, uuid[], jsonb);
${appendEventsFunction(s, true)}

-- Appends a group of independent batches, in the order given: p_streams, p_expected and p_counts have one entry per
-- batch, p_ids all the event ids one batch after the other, p_events a JSON array of the batches (each as for
-- append_events). Returns one result per batch, each what append_events returns, or 'busy': the stream's row is locked
-- by another transaction, and rather than make the whole group wait, that batch is left for the caller to send alone.
-- The ids are not looked up first (p_check false): a stored id fails the group, which the store then sends again
-- batch by batch. The store sorts a group by stream id, so that two groups take their rows' locks in the same order.
CREATE FUNCTION ${s}.append_group(p_streams text[], p_expected text[], p_ids uuid[], p_counts integer[], p_events jsonb)
RETURNS text[]
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_results text[] := '{}';
  v_at integer := 1;
BEGIN
  FOR i IN 1 .. cardinality(p_streams) LOOP
    v_results := v_results || ${s}.append_events(p_streams[i], p_expected[i], p_ids[v_at : v_at + p_counts[i] - 1], p_events -> (i - 1), false, true);
    v_at := v_at + p_counts[i];
  END LOOP;
  RETURN v_results;
END
$fn$;
`;

/**
 * Migration 4: the log's order follows every stream's order. The log is read in (transaction id, position) order, and
 * a transaction's id is given when it first writes, not when it commits: a transaction that got its id, then appended
 * to a stream after a transaction with a later id had committed to it (another stream written first in a
 * `transaction()` or an append group, or a wait for the stream's lock), put that stream's later versions before its
 * earlier ones in the log, and subscribers, projections and publishers saw them in that order. Now each stream's row
 * keeps the label its last append used (`last_transaction`), and an append labels its events with the greater of its
 * own transaction id and that label. Still gap-safe: a label is never below its writer's own transaction id, so its
 * events stay behind the boundary (the snapshot's xmin) until their transaction has ended. Existing streams get the
 * greatest label their events have.
 */
export const schemaV4 = (s: string) => `
ALTER TABLE ${s}.streams ADD COLUMN last_transaction xid8 NULL;
UPDATE ${s}.streams st
   SET last_transaction = (SELECT e.transaction_id FROM ${s}.events e WHERE e.stream_id = st.stream_id ORDER BY e.transaction_id DESC LIMIT 1);
${appendEventsFunction(s, true, true)}
`;

/**
 * Migration 5: `append_group` does the common cases of a whole group in one statement instead of one `append_events`
 * call per append, whose statements each start and end an executor of their own: in groups of 8 one-event appends,
 * 15–20% less CPU for the server process (about 75 instead of 90 µs an append, new or existing streams; a raw
 * multi-row INSERT of the same rows, 38 µs; see bench/README.md, session 7). The appends that take the fast path of
 * `append_events` (a new stream created at its
 * final version; an existing, not deleted stream whose row is free and whose expected version holds, bumped) are
 * written together: one INSERT of the new streams' rows, one UPDATE of the existing ones, one INSERT of all their
 * events, in the group's order. Every other append of the group, and every append to a stream named twice in it, is
 * then passed to `append_events` one by one as before, which decides it exactly as when it is sent alone (and answers
 * 'busy' rather than wait for a row another transaction holds). The results are the same as before, line for line.
 *
 * Locks: the fast path takes its rows' locks in the group's order (by stream id) and never waits for an existing row
 * (SKIP LOCKED); creating a row waits only for a concurrent creator of the same stream, as before. Appends left to the
 * one-by-one pass come after: two groups racing to create the same streams, one on its fast path, the other on its
 * slow path, can wait for each other. PostgreSQL then fails one of them (deadlock detected), and the store sends that
 * group's appends again alone, as for any failed group.
 */
export const schemaV5 = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.append_group(p_streams text[], p_expected text[], p_ids uuid[], p_counts integer[], p_events jsonb)
RETURNS text[]
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_results text[];
  v_at integer := 1;
BEGIN
  WITH u AS (
    -- Each append: its stream, expected version, event count, place in the group, its ids' offset in p_ids, and
    -- whether its stream is named only once in the group (only those take the fast path).
    SELECT t.stream_id, t.expected, t.cnt, t.n,
           (sum(t.cnt) OVER (ORDER BY t.n))::integer - t.cnt AS off,
           count(*) OVER (PARTITION BY t.stream_id) = 1 AS single
      FROM unnest(p_streams, p_expected, p_counts) WITH ORDINALITY AS t(stream_id, expected, cnt, n)
  ), created AS (
    INSERT INTO ${s}.streams (stream_id, category, version, last_transaction)
    SELECT u.stream_id, split_part(u.stream_id, '-', 1), u.cnt, pg_current_xact_id()
      FROM u
     WHERE u.single AND u.expected IN ('no_stream', '0', 'any')
       AND NOT EXISTS (SELECT 1 FROM ${s}.streams x WHERE x.stream_id = u.stream_id)
     ORDER BY u.n
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING stream_id, 0::bigint AS base, category, last_transaction AS tx
  ), bumped AS (
    UPDATE ${s}.streams AS st
       SET version = st.version + u.cnt, last_transaction = greatest(pg_current_xact_id(), st.last_transaction)
      FROM u
     WHERE st.stream_id = u.stream_id AND u.single AND u.expected <> 'no_stream'
       AND st.stream_id IN (SELECT l.stream_id FROM ${s}.streams l WHERE l.stream_id = ANY (p_streams) ORDER BY l.stream_id FOR UPDATE SKIP LOCKED)
       AND st.deleted IS NULL
       AND ${expectedHoldsOnRow('u.expected')}
    RETURNING st.stream_id, st.version - u.cnt AS base, st.category, st.last_transaction AS tx
  ), taken AS (
    SELECT * FROM created UNION ALL SELECT * FROM bumped
  ), written AS (
    INSERT INTO ${s}.events (transaction_id, event_id, stream_id, version, category, type, data, metadata)
    SELECT w.tx, p_ids[u.off + e.k], u.stream_id, w.base + e.k, w.category, e.e->>0, e.e->1, e.e->2
      FROM u JOIN taken w USING (stream_id)
      CROSS JOIN LATERAL jsonb_array_elements(p_events -> (u.n::integer - 1)) WITH ORDINALITY AS e(e, k)
     ORDER BY u.n, e.k
    RETURNING stream_id, position
  )
  SELECT array_agg(CASE WHEN w.stream_id IS NULL THEN NULL ELSE concat_ws(' ', 'ok', w.base + u.cnt, w.base + 1, p.last, w.tx) END ORDER BY u.n)
    INTO v_results
    FROM u
    LEFT JOIN taken w USING (stream_id)
    LEFT JOIN (SELECT stream_id, max(position) AS last FROM written GROUP BY stream_id) p USING (stream_id);

  -- The rest, one by one, in the group's order.
  FOR i IN 1 .. cardinality(p_streams) LOOP
    IF v_results[i] IS NULL THEN
      v_results[i] := ${s}.append_events(p_streams[i], p_expected[i], p_ids[v_at : v_at + p_counts[i] - 1], p_events -> (i - 1), false, true);
    END IF;
    v_at := v_at + p_counts[i];
  END LOOP;
  RETURN v_results;
END
$fn$;
`;

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
 * position returned so far has a smaller one: its transaction (or the label it took, see schemaV4) has ended.
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
