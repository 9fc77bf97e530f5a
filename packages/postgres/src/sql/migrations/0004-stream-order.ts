/**
 * Migration 4: the log's order follows every stream's order. The log is read in (transaction id, position) order, and
 * a transaction's id is given when it first writes, not when it commits: a transaction that got its id, then appended
 * to a stream after a transaction with a later id had committed to it (another stream written first in a
 * `transaction()` or an append group, or a wait for the stream's lock), put that stream's later versions before its
 * earlier ones in the log, and subscribers, projections and publishers saw them in that order. Now each stream's row
 * keeps the label its last append used (`last_transaction`), and an append labels its events with the greater of its
 * own transaction id and that label (`append_events` is replaced). Still gap-safe: a label is never below its writer's
 * own transaction id, so its events stay behind the boundary (the snapshot's xmin) until their transaction has ended.
 * Existing streams get the greatest label their events have.
 *
 * Released: this text is frozen (test/migrations.test.ts pins its SHA-256). Never edit it: add a new migration.
 */
export const version = 4;
export const name =
  "streams.last_transaction: events labelled with the greater of their transaction's id and their stream's last label, so that the log follows every stream's order";
export const sql = `
ALTER TABLE {{schema}}.streams ADD COLUMN last_transaction xid8 NULL;
UPDATE {{schema}}.streams st
   SET last_transaction = (SELECT e.transaction_id FROM {{schema}}.events e WHERE e.stream_id = st.stream_id ORDER BY e.transaction_id DESC LIMIT 1);
CREATE OR REPLACE FUNCTION {{schema}}.append_events(p_stream_id text, p_expected text, p_ids uuid[], p_events jsonb, p_check boolean DEFAULT true, p_nowait boolean DEFAULT false)
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
    IF NOT p_nowait OR NOT EXISTS (SELECT 1 FROM {{schema}}.streams WHERE stream_id = p_stream_id) THEN
    INSERT INTO {{schema}}.streams (stream_id, category, version, last_transaction)
      VALUES (p_stream_id, split_part(p_stream_id, '-', 1), v_count, pg_current_xact_id())
      ON CONFLICT (stream_id) DO NOTHING
      RETURNING 0, category, last_transaction INTO v_base, v_category, v_tx;
    v_created := FOUND;
    END IF;
  ELSE
    IF p_nowait THEN
      PERFORM 1 FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE SKIP LOCKED;
      IF NOT FOUND AND EXISTS (SELECT 1 FROM {{schema}}.streams WHERE stream_id = p_stream_id) THEN
        RETURN 'busy';
      END IF;
    END IF;
    UPDATE {{schema}}.streams AS st SET version = st.version + v_count, last_transaction = greatest(pg_current_xact_id(), st.last_transaction)
     WHERE st.stream_id = p_stream_id AND st.deleted IS DISTINCT FROM 'hard'
       AND (CASE p_expected
              WHEN 'any' THEN true
              WHEN 'stream_exists' THEN st.version > 0 AND st.deleted IS NULL
              ELSE p_expected::bigint = st.version
            END)
    RETURNING st.version - v_count, st.category, st.deleted, st.last_transaction INTO v_base, v_category, v_deleted, v_tx;
    IF NOT FOUND AND p_expected = 'any' THEN
      INSERT INTO {{schema}}.streams (stream_id, category, version, last_transaction)
        VALUES (p_stream_id, split_part(p_stream_id, '-', 1), v_count, pg_current_xact_id())
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING 0, category, last_transaction INTO v_base, v_category, v_tx;
      v_created := FOUND;
    END IF;
  END IF;
  IF v_base IS NOT NULL THEN
    -- Under the lock: the events, unless one of their ids is already stored (a retry, or a conflict).
    INSERT INTO {{schema}}.events (transaction_id, event_id, stream_id, version, category, type, data, metadata)
    SELECT v_tx, p_ids[u.n], p_stream_id, v_base + u.n, v_category, u.e->>0, u.e->1, u.e->2
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS u(e, n)
     WHERE NOT p_check OR NOT EXISTS (SELECT 1 FROM {{schema}}.events e WHERE e.event_id = ANY (p_ids));
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
  
  IF p_nowait THEN
    SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND AND EXISTS (SELECT 1 FROM {{schema}}.streams WHERE stream_id = p_stream_id) THEN
      RETURN 'busy';
    END IF;
  ELSE
    SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE;
  END IF;
  IF NOT FOUND THEN
    LOOP
      INSERT INTO {{schema}}.streams (stream_id, category) VALUES (p_stream_id, split_part(p_stream_id, '-', 1))
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING * INTO v_stream;
      IF FOUND THEN
        v_created := true;
        EXIT;
      END IF;
      IF p_nowait THEN
        SELECT * INTO v_stream FROM {{schema}}.streams WHERE stream_id = p_stream_id FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
          RETURN 'busy';
        END IF;
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
  v_tx := greatest(pg_current_xact_id(), v_stream.last_transaction);
  UPDATE {{schema}}.streams SET version = v_base + v_count, deleted = NULL, last_transaction = v_tx WHERE stream_id = p_stream_id;
  INSERT INTO {{schema}}.events (transaction_id, event_id, stream_id, version, category, type, data, metadata)
  SELECT v_tx, p_ids[u.n], p_stream_id, v_base + u.n, v_stream.category, u.e->>0, u.e->1, u.e->2
    FROM jsonb_array_elements(p_events) WITH ORDINALITY AS u(e, n);
  RETURN concat_ws(' ', 'ok', v_base + v_count, v_base + 1, currval('{{schema}}.events_position_seq'), v_tx);
END
$fn$;
`;
