/**
 * The read side's statements: subscription checkpoints, leases and parked events, snapshots, the projection catalog,
 * the consumer inbox, and the registry of document tables (their tables: migration 2, ./migrations/0002-read-side.ts).
 * Every statement is a function of the double-quoted schema name; values only ever go in as parameters.
 */
/** The DDL of one document table (the name is generated and quoted by the caller, never user input as such). */
export const createDocumentTable = (s: string, table: string) => `
CREATE TABLE IF NOT EXISTS ${s}.${table} (
  id text COLLATE "C" PRIMARY KEY,
  data jsonb,
  version text COLLATE "C" NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
)`;
export const registerDocumentTable = (s: string) =>
  `INSERT INTO ${s}.read_models (collection, table_name) VALUES ($1, $2) ON CONFLICT (collection) DO NOTHING`;
export const documentTablesLike = (s: string) =>
  `SELECT collection, table_name FROM ${s}.read_models WHERE starts_with(collection, $1)`;
export const unregisterDocumentTable = (s: string) => `DELETE FROM ${s}.read_models WHERE collection = $1`;
export const dropDocumentTable = (s: string, table: string) => `DROP TABLE IF EXISTS ${s}.${table}`;
export const tableExists = () => `SELECT to_regclass($1) IS NOT NULL AS exists`;
export const lockKey = () => `SELECT pg_advisory_xact_lock(hashtext($1))`;

export const getDocument = (s: string, t: string) =>
  `SELECT data, version FROM ${s}.${t} WHERE id = $1 AND data IS NOT NULL`;
/** Writes unless the stored version is the same or newer (last write wins by version); returns a row when written. */
export const putDocument = (s: string, t: string) => `
INSERT INTO ${s}.${t} AS d (id, data, version) VALUES ($1, $2::jsonb, $3)
ON CONFLICT (id) DO UPDATE SET data = excluded.data, version = excluded.version, updated_at = now()
WHERE d.version < excluded.version
RETURNING 1 AS written`;
export const listDocuments = (s: string, t: string) =>
  `SELECT id, data, version FROM ${s}.${t} WHERE data IS NOT NULL AND id > $1 ORDER BY id LIMIT $2`;
export const countDocuments = (s: string, t: string) =>
  `SELECT count(*)::int AS count FROM ${s}.${t} WHERE data IS NOT NULL`;

export const loadCheckpoint = (s: string) => `SELECT position FROM ${s}.checkpoints WHERE name = $1`;
export const saveCheckpoint = (s: string) => `
INSERT INTO ${s}.checkpoints (name, position) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()`;
/** Moves a checkpoint only while `owner` holds the lease ($1 name, $2 owner, $3 position); a row when it moved. */
export const moveCheckpoint = (s: string) => `
WITH lease AS (SELECT 1 FROM ${s}.leases WHERE name = $1 AND owner = $2 AND expires_at > clock_timestamp() FOR UPDATE)
INSERT INTO ${s}.checkpoints (name, position) SELECT $1, $3::text FROM lease
ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()
RETURNING 1 AS moved`;
export const deleteCheckpoint = (s: string) => `DELETE FROM ${s}.checkpoints WHERE name = $1`;
/** Locks the lease row for the batch: a takeover waits until this transaction ends (fencing). */
export const holdLease = (s: string) =>
  `SELECT expires_at > clock_timestamp() AS valid FROM ${s}.leases WHERE name = $1 AND owner = $2 FOR UPDATE`;
export const acquireLease = (s: string) => `
INSERT INTO ${s}.leases AS l (name, owner, expires_at) VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE l.owner = excluded.owner OR l.expires_at < clock_timestamp()
RETURNING owner`;
export const releaseLease = (s: string) => `DELETE FROM ${s}.leases WHERE name = $1 AND owner = $2`;
export const parkEvent = (s: string) => `
INSERT INTO ${s}.parked (subscription, event_id, event, error, attempts) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)
ON CONFLICT (subscription, event_id) DO UPDATE SET error = excluded.error, attempts = excluded.attempts, parked_at = now()`;
export const unparkEvent = (s: string) => `DELETE FROM ${s}.parked WHERE subscription = $1 AND event_id = $2`;
export const listParked = (s: string) =>
  `SELECT event, error, attempts, parked_at FROM ${s}.parked WHERE subscription = $1 ORDER BY parked_at, event_id`;

export const loadSnapshot = (s: string) =>
  `SELECT version, state_version, state FROM ${s}.snapshots WHERE stream_id = $1`;
export const saveSnapshot = (s: string) => `
INSERT INTO ${s}.snapshots AS n (stream_id, version, state_version, state) VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, state_version = excluded.state_version, state = excluded.state, taken_at = now()
WHERE n.version <= excluded.version OR n.state_version <> excluded.state_version`;
export const deleteSnapshot = (s: string) => `DELETE FROM ${s}.snapshots WHERE stream_id = $1`;
export const deleteAllSnapshots = (s: string) => `DELETE FROM ${s}.snapshots`;

export const activeProjection = (s: string) => `SELECT active_version FROM ${s}.projections WHERE name = $1`;
export const activateProjection = (s: string) => `
INSERT INTO ${s}.projections (name, active_version) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET active_version = excluded.active_version, switched_at = now()`;

export const recordInbox = (s: string) =>
  `INSERT INTO ${s}.inbox (group_name, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1 AS fresh`;
