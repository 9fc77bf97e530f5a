/**
 * Migration 1: the event store. `streams` (one row per stream: version, soft/hard deletion, metadata) and `events`
 * (the log: positions are (transaction id, sequence), see the statements' readAllPage), and the functions the store
 * writes through: `append_events` (as it was then: without `p_check` and `p_nowait`, which migration 3 added),
 * `delete_stream` and `set_stream_metadata`. Their SQL comments say how each decides.
 *
 * Every function first locks the stream's row, creating it when missing (version 0, not yet existing): concurrent
 * creators serialise (the INSERT waits for a concurrent inserter's transaction, then the row is selected FOR UPDATE),
 * and `v_created` tells the function to delete the row again when the operation is refused, so that a refused write
 * leaves nothing behind.
 *
 * Released: this text is frozen (test/migrations.test.ts pins its SHA-256). Never edit it: add a new migration.
 */
export const version = 1;
export const name = 'event store: streams, events, append_events / delete_stream / set_stream_metadata';
export const sql = `
CREATE TABLE {{schema}}.streams (
  stream_id text PRIMARY KEY,
  category text NOT NULL,
  version bigint NOT NULL DEFAULT 0,
  hidden_before bigint NOT NULL DEFAULT 0,
  deleted text NULL CHECK (deleted IN ('soft', 'hard')),
  metadata jsonb NOT NULL DEFAULT '{}'
) WITH (fillfactor = 80);

CREATE TABLE {{schema}}.events (
  position bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME {{schema}}.events_position_seq),
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
CREATE FUNCTION {{schema}}.append_events(p_stream_id text, p_expected text, p_ids uuid[], p_events jsonb)
RETURNS text
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_stream {{schema}}.streams%ROWTYPE;
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
  IF p_expected IN ('no_stream', '0') THEN
    INSERT INTO {{schema}}.streams (stream_id, category, version) VALUES (p_stream_id, split_part(p_stream_id, '-', 1), v_count)
      ON CONFLICT (stream_id) DO NOTHING
      RETURNING 0, category INTO v_base, v_category;
    v_created := FOUND;
  ELSE
    UPDATE {{schema}}.streams AS st SET version = st.version + v_count
     WHERE st.stream_id = p_stream_id AND st.deleted IS DISTINCT FROM 'hard'
       AND (CASE p_expected
              WHEN 'any' THEN true
              WHEN 'stream_exists' THEN st.version > 0 AND st.deleted IS NULL
              ELSE p_expected::bigint = st.version
            END)
    RETURNING st.version - v_count, st.category, st.deleted INTO v_base, v_category, v_deleted;
    IF NOT FOUND AND p_expected = 'any' THEN
      INSERT INTO {{schema}}.streams (stream_id, category, version) VALUES (p_stream_id, split_part(p_stream_id, '-', 1), v_count)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING 0, category INTO v_base, v_category;
      v_created := FOUND;
    END IF;
  END IF;
  IF v_base IS NOT NULL THEN
    -- Under the lock: the events, unless one of their ids is already stored (a retry, or a conflict).
    v_tx := pg_current_xact_id();
    INSERT INTO {{schema}}.events (transaction_id, event_id, stream_id, version, category, type, data, metadata)
    SELECT v_tx, p_ids[u.n], p_stream_id, v_base + u.n, v_category, u.e->>0, u.e->1, u.e->2
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS u(e, n)
     WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.events e WHERE e.event_id = ANY (p_ids));
    IF FOUND THEN
      IF v_deleted = 'soft' THEN
        -- Appending re-creates a soft-deleted stream.
        UPDATE {{schema}}.streams SET deleted = NULL WHERE stream_id = p_stream_id;
      END IF;
      -- The rows took their positions in order, so the last one's is the sequence's last value in this session.
      RETURN concat_ws(' ', 'ok', v_base + v_count, v_base + 1, currval('{{schema}}.events_position_seq'), v_tx);
    END IF;
    IF v_created THEN
      DELETE FROM {{schema}}.streams WHERE stream_id = p_stream_id;
    ELSE
      UPDATE {{schema}}.streams SET version = v_base WHERE stream_id = p_stream_id;
    END IF;
    v_created := false;
  END IF;

  -- The slow path: lock (or create) the stream's row, then check in order.
  
  SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE;
  IF NOT FOUND THEN
    LOOP
      INSERT INTO {{schema}}.streams (stream_id, category) VALUES (p_stream_id, split_part(p_stream_id, '-', 1))
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING * INTO v_stream;
      IF FOUND THEN
        v_created := true;
        EXIT;
      END IF;
      SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE;
      EXIT WHEN FOUND;
    END LOOP;
  END IF;
  IF v_stream.deleted = 'hard' THEN
    RETURN 'deleted';
  END IF;
  v_exists := v_stream.version > 0 AND v_stream.deleted IS NULL;
  IF EXISTS (SELECT 1 FROM {{schema}}.events e WHERE e.event_id = ANY (p_ids)) THEN
    SELECT e.version INTO v_first FROM {{schema}}.events e WHERE e.event_id = p_ids[1] AND e.stream_id = p_stream_id;
    SELECT coalesce(bool_and(coalesce(e.stream_id = p_stream_id AND e.version = v_first + u.n - 1, false)), false),
           string_agg(u.id::text, ',' ORDER BY u.n) FILTER (WHERE e.event_id IS NOT NULL)
      INTO v_same, v_conflicts
      FROM unnest(p_ids) WITH ORDINALITY AS u(id, n)
      LEFT JOIN {{schema}}.events e ON e.event_id = u.id;
    IF v_same THEN
      SELECT e.version, e.position, e.transaction_id INTO v_version, v_position, v_tx
        FROM {{schema}}.events e WHERE e.event_id = p_ids[v_count];
      RETURN concat_ws(' ', 'duplicate', v_version, v_first, v_position, v_tx);
    END IF;
    IF v_created THEN DELETE FROM {{schema}}.streams WHERE stream_id = p_stream_id; END IF;
    RETURN 'id_conflict ' || v_conflicts;
  END IF;
  IF NOT (CASE p_expected
    WHEN 'any' THEN true
    WHEN 'no_stream' THEN NOT v_exists
    WHEN 'stream_exists' THEN v_exists
    ELSE p_expected::bigint = v_stream.version
  END) THEN
    IF v_created THEN DELETE FROM {{schema}}.streams WHERE stream_id = p_stream_id; END IF;
    RETURN concat_ws(' ', 'wrong_version', v_stream.version, v_exists::text);
  END IF;
  v_base := v_stream.version;
  UPDATE {{schema}}.streams SET version = v_base + v_count, deleted = NULL WHERE stream_id = p_stream_id;
  v_tx := pg_current_xact_id();
  INSERT INTO {{schema}}.events (transaction_id, event_id, stream_id, version, category, type, data, metadata)
  SELECT v_tx, p_ids[u.n], p_stream_id, v_base + u.n, v_stream.category, u.e->>0, u.e->1, u.e->2
    FROM jsonb_array_elements(p_events) WITH ORDINALITY AS u(e, n);
  RETURN concat_ws(' ', 'ok', v_base + v_count, v_base + 1, currval('{{schema}}.events_position_seq'), v_tx);
END
$fn$;

-- Soft delete (hide the events, numbering continues) or hard delete (tombstone; the events are removed unless
-- p_keep_events, which PGlite transactions use to remove them at commit). Statuses as for append_events.
CREATE FUNCTION {{schema}}.delete_stream(
  p_stream_id text, p_expected text, p_hard boolean, p_keep_events boolean,
  OUT status text, OUT stream_version bigint, OUT stream_exists boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_stream {{schema}}.streams%ROWTYPE;
  v_created boolean := false;
  v_exists boolean;
BEGIN
  
  SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE;
  IF NOT FOUND THEN
    LOOP
      INSERT INTO {{schema}}.streams (stream_id, category) VALUES (p_stream_id, split_part(p_stream_id, '-', 1))
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING * INTO v_stream;
      IF FOUND THEN
        v_created := true;
        EXIT;
      END IF;
      SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE;
      EXIT WHEN FOUND;
    END LOOP;
  END IF;
  IF v_stream.deleted = 'hard' THEN
    status := 'deleted';
    RETURN;
  END IF;
  v_exists := v_stream.version > 0 AND v_stream.deleted IS NULL;
  stream_version := v_stream.version;
  stream_exists := v_exists;
  IF NOT (CASE p_expected
    WHEN 'any' THEN true
    WHEN 'no_stream' THEN NOT v_exists
    WHEN 'stream_exists' THEN v_exists
    ELSE p_expected::bigint = v_stream.version
  END) THEN
    status := 'wrong_version';
    IF v_created THEN DELETE FROM {{schema}}.streams WHERE stream_id = p_stream_id; END IF;
    RETURN;
  END IF;
  IF p_hard THEN
    IF NOT p_keep_events THEN
      DELETE FROM {{schema}}.events WHERE stream_id = p_stream_id;
    END IF;
    UPDATE {{schema}}.streams SET deleted = 'hard' WHERE stream_id = p_stream_id;
  ELSIF v_exists THEN
    UPDATE {{schema}}.streams SET deleted = 'soft', hidden_before = v_stream.version + 1 WHERE stream_id = p_stream_id;
  ELSE
    IF v_created THEN DELETE FROM {{schema}}.streams WHERE stream_id = p_stream_id; END IF;
  END IF;
  status := 'ok';
END
$fn$;

-- Replaces a stream's metadata (allowed before the stream exists). Statuses as for append_events.
CREATE FUNCTION {{schema}}.set_stream_metadata(
  p_stream_id text, p_expected text, p_metadata text,
  OUT status text, OUT stream_version bigint, OUT stream_exists boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_stream {{schema}}.streams%ROWTYPE;
  v_created boolean := false;
  v_exists boolean;
BEGIN
  
  SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE;
  IF NOT FOUND THEN
    LOOP
      INSERT INTO {{schema}}.streams (stream_id, category) VALUES (p_stream_id, split_part(p_stream_id, '-', 1))
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING * INTO v_stream;
      IF FOUND THEN
        v_created := true;
        EXIT;
      END IF;
      SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE;
      EXIT WHEN FOUND;
    END LOOP;
  END IF;
  IF v_stream.deleted = 'hard' THEN
    status := 'deleted';
    RETURN;
  END IF;
  v_exists := v_stream.version > 0 AND v_stream.deleted IS NULL;
  stream_version := v_stream.version;
  stream_exists := v_exists;
  IF NOT (CASE p_expected
    WHEN 'any' THEN true
    WHEN 'no_stream' THEN NOT v_exists
    WHEN 'stream_exists' THEN v_exists
    ELSE p_expected::bigint = v_stream.version
  END) THEN
    status := 'wrong_version';
    IF v_created THEN DELETE FROM {{schema}}.streams WHERE stream_id = p_stream_id; END IF;
    RETURN;
  END IF;
  UPDATE {{schema}}.streams SET metadata = p_metadata::jsonb WHERE stream_id = p_stream_id;
  status := 'ok';
END
$fn$;
`;
