/**
 * Migration 6: uniqueness claims. `claims (scope, hash, owner)`: one row per value held, keyed by its scope and the
 * hash of its normalised value (HMAC-SHA-256 or SHA-256, computed by the store: the value never reaches the database),
 * owned by a stream. `append_claiming` appends and claims in one statement: `append_events` first (so that a retry of
 * a stored batch returns its first result, whoever holds its value now), then the claim operations in order, each
 * release a DELETE of the stream's claims in a scope, each claim an INSERT that the primary key decides: a concurrent
 * claimant of the same value waits for the first to end, then finds its row. A value another stream holds undoes the
 * whole append (a block with an exception handler: a subtransaction) and answers `claimed <scope> <owner>`, so that
 * inside `transaction()` the refusal does not abort the transaction. `delete_stream` is replaced: a hard delete also
 * removes the stream's claims.
 *
 * Released: this text is frozen (test/migrations.test.ts pins its SHA-256). Never edit it: add a new migration.
 */
export const version = 6;
export const name = 'claims: uniqueness claims (scope, hash, owner), append_claiming; hard delete removes claims';
export const sql = `
CREATE TABLE {{schema}}.claims (
  scope text NOT NULL,
  hash bytea NOT NULL,
  owner text NOT NULL,
  claimed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, hash)
);
CREATE INDEX claims_owner_idx ON {{schema}}.claims (owner, scope);

-- Appends as append_events (with the id look-up, waiting for the stream's row), then, if the batch was stored, applies
-- p_claims, a JSON array of operations in order: ["r", scope] releases the stream's claims in the scope, ["c", scope,
-- hash as hex] claims the hash for the stream (a no-op when the stream holds it already). Returns append_events'
-- line, or 'claimed <scope> <owner>' when another stream holds a value, with nothing of the append left.
CREATE FUNCTION {{schema}}.append_claiming(p_stream_id text, p_expected text, p_ids uuid[], p_events jsonb, p_claims jsonb)
RETURNS text
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
  v_result text;
  v_op jsonb;
  v_scope text;
  v_hash bytea;
  v_owner text;
BEGIN
  BEGIN
    v_result := {{schema}}.append_events(p_stream_id, p_expected, p_ids, p_events, true, false);
    IF split_part(v_result, ' ', 1) <> 'ok' THEN
      RETURN v_result;
    END IF;
    FOR v_op IN SELECT c.op FROM jsonb_array_elements(p_claims) WITH ORDINALITY AS c(op, n) ORDER BY c.n LOOP
      v_scope := v_op->>1;
      IF v_op->>0 = 'r' THEN
        DELETE FROM {{schema}}.claims WHERE owner = p_stream_id AND scope = v_scope;
      ELSE
        v_hash := decode(v_op->>2, 'hex');
        LOOP
          INSERT INTO {{schema}}.claims (scope, hash, owner) VALUES (v_scope, v_hash, p_stream_id)
            ON CONFLICT (scope, hash) DO NOTHING;
          EXIT WHEN FOUND;
          SELECT c.owner INTO v_owner FROM {{schema}}.claims c WHERE c.scope = v_scope AND c.hash = v_hash;
          -- Not found: released since the INSERT saw it; claim it again.
          EXIT WHEN FOUND;
        END LOOP;
        IF v_owner IS NOT NULL AND v_owner <> p_stream_id THEN
          RAISE EXCEPTION USING ERRCODE = 'EVCLM', MESSAGE = 'eventline: the value is claimed by another stream';
        END IF;
        v_owner := NULL;
      END IF;
    END LOOP;
  EXCEPTION WHEN SQLSTATE 'EVCLM' THEN
    RETURN concat_ws(' ', 'claimed', v_scope, v_owner);
  END;
  RETURN v_result;
END
$fn$;

-- delete_stream as in migration 1, and a hard delete also removes the stream's claims: its events leave the log, so a
-- rebuild from the log would not make them again. A soft delete keeps them (the events stay in the log and the
-- stream can come back).
CREATE OR REPLACE FUNCTION {{schema}}.delete_stream(
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
    DELETE FROM {{schema}}.claims WHERE owner = p_stream_id;
    UPDATE {{schema}}.streams SET deleted = 'hard' WHERE stream_id = p_stream_id;
  ELSIF v_exists THEN
    UPDATE {{schema}}.streams SET deleted = 'soft', hidden_before = v_stream.version + 1 WHERE stream_id = p_stream_id;
  ELSE
    IF v_created THEN DELETE FROM {{schema}}.streams WHERE stream_id = p_stream_id; END IF;
  END IF;
  status := 'ok';
END
$fn$;
`;
