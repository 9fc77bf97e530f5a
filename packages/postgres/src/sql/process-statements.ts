/**
 * The statements of process managers (their tables: migration 7, ./migrations/0007-processes.ts). Every statement is
 * a function of the double-quoted schema name; values only ever go in as parameters.
 */
const instanceColumns = `process, instance, state, inputs::float8 AS inputs, ignored::float8 AS ignored, correlation_id,
  last_position, completed, started_at, updated_at`;
export const loadInstance = (s: string) =>
  `SELECT ${instanceColumns} FROM ${s}.process_instances WHERE process = $1 AND instance = $2`;
export const loadInstanceForUpdate = (s: string) => `${loadInstance(s)} FOR UPDATE`;
export const saveInstance = (s: string) => `
INSERT INTO ${s}.process_instances AS i
  (process, instance, state, inputs, ignored, correlation_id, last_position, completed, started_at, updated_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (process, instance) DO UPDATE SET state = excluded.state, inputs = excluded.inputs,
  ignored = excluded.ignored, correlation_id = excluded.correlation_id, last_position = excluded.last_position,
  completed = excluded.completed, updated_at = excluded.updated_at`;
export const listInstances = (s: string) =>
  `SELECT ${instanceColumns} FROM ${s}.process_instances WHERE process = $1 AND instance > $2 ORDER BY instance LIMIT $3`;

const outboxColumns = `process, command_id, instance, sequence::float8 AS sequence, command, attempts, not_before, status,
  error`;
export const enqueueCommand = (s: string) => `
INSERT INTO ${s}.process_outbox (process, command_id, instance, command, not_before)
VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (process, command_id) DO NOTHING`;
/** The oldest command of each instance, when it is pending and due ($2), oldest first, at most $3. */
export const nextCommands = (s: string) => `
SELECT ${outboxColumns} FROM (
  SELECT DISTINCT ON (instance) * FROM ${s}.process_outbox WHERE process = $1 ORDER BY instance, sequence
) head
WHERE status = 'pending' AND not_before <= $2 ORDER BY sequence LIMIT $3`;
export const removeCommand = (s: string) =>
  `DELETE FROM ${s}.process_outbox WHERE process = $1 AND command_id = $2 AND status = 'pending' RETURNING 1 AS removed`;
export const commandFailed = (s: string) => `
UPDATE ${s}.process_outbox SET attempts = $3, error = $4::jsonb, not_before = $5,
  status = CASE WHEN $6::boolean THEN 'parked' ELSE 'pending' END
WHERE process = $1 AND command_id = $2 AND status = 'pending'`;
export const listCommands = (s: string) => `
SELECT ${outboxColumns} FROM ${s}.process_outbox
WHERE process = $1 AND ($2::text IS NULL OR instance = $2) AND ($3::text IS NULL OR status = $3)
ORDER BY sequence`;
export const retryCommand = (s: string) => `
UPDATE ${s}.process_outbox SET status = 'pending', not_before = $3
WHERE process = $1 AND command_id = $2 AND status = 'parked' RETURNING 1 AS retried`;

const timerColumns = `process, instance, id, name, due_at, data`;
export const setTimer = (s: string) => `
INSERT INTO ${s}.process_timers (process, instance, id, name, due_at, data) VALUES ($1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (process, instance, id) DO UPDATE SET name = excluded.name, due_at = excluded.due_at, data = excluded.data`;
export const cancelTimers = (s: string) =>
  `DELETE FROM ${s}.process_timers WHERE process = $1 AND instance = $2 AND id = ANY($3::text[])`;
export const cancelAllTimers = (s: string) => `DELETE FROM ${s}.process_timers WHERE process = $1 AND instance = $2`;
export const dueTimers = (s: string) => `
SELECT ${timerColumns} FROM ${s}.process_timers WHERE process = $1 AND due_at <= $2
ORDER BY due_at, instance, id LIMIT $3`;
/** Removes a due timer and returns it; a second taker waits for the first one's transaction and then gets no row. */
export const takeTimer = (s: string) => `
DELETE FROM ${s}.process_timers WHERE process = $1 AND instance = $2 AND id = $3 AND due_at <= $4
RETURNING ${timerColumns}`;
export const listTimers = (s: string) => `
SELECT ${timerColumns} FROM ${s}.process_timers WHERE process = $1 AND ($2::text IS NULL OR instance = $2)
ORDER BY due_at, instance, id`;

// Several calls made on one transaction at once are sent as one statement (see `coalesced` in ../processes.ts): the
// statements below take arrays, one element per call, all of one process ($1).

/** The instances named ($2), locked in instance order (so two transactions locking several take turns, no deadlock). */
export const loadInstancesForUpdate = (s: string) =>
  `SELECT ${instanceColumns} FROM ${s}.process_instances WHERE process = $1 AND instance = ANY($2::text[] COLLATE "C")
ORDER BY instance FOR UPDATE`;
export const saveInstances = (s: string) => `
INSERT INTO ${s}.process_instances AS i
  (process, instance, state, inputs, ignored, correlation_id, last_position, completed, started_at, updated_at)
SELECT $1, r.instance, r.state::jsonb, r.inputs, r.ignored, r.correlation_id, r.last_position, r.completed,
  r.started_at, r.updated_at
FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::boolean[], $9::timestamptz[],
  $10::timestamptz[]) AS r(instance, state, inputs, ignored, correlation_id, last_position, completed, started_at,
  updated_at)
ON CONFLICT (process, instance) DO UPDATE SET state = excluded.state, inputs = excluded.inputs,
  ignored = excluded.ignored, correlation_id = excluded.correlation_id, last_position = excluded.last_position,
  completed = excluded.completed, updated_at = excluded.updated_at`;
/** Commands in the order given (their sequence follows it). */
export const enqueueCommands = (s: string) => `
INSERT INTO ${s}.process_outbox (process, command_id, instance, command, not_before)
SELECT $1, c.id, c.instance, c.command::jsonb, c.not_before
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[]) WITH ORDINALITY AS c(id, instance, command, not_before, n)
ORDER BY c.n
ON CONFLICT (process, command_id) DO NOTHING`;
export const removeCommands = (s: string) => `
DELETE FROM ${s}.process_outbox WHERE process = $1 AND command_id = ANY($2::uuid[]) AND status = 'pending'
RETURNING command_id::text AS command_id`;
export const setTimers = (s: string) => `
INSERT INTO ${s}.process_timers (process, instance, id, name, due_at, data)
SELECT $1, t.instance, t.id, t.name, t.due_at, t.data::jsonb
FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[]) AS t(instance, id, name, due_at, data)
ON CONFLICT (process, instance, id) DO UPDATE SET name = excluded.name, due_at = excluded.due_at, data = excluded.data`;
/** Removes the due timers named by ($2, $3) and returns them (see {@link takeTimer}). */
export const takeTimers = (s: string) => `
DELETE FROM ${s}.process_timers t USING unnest($2::text[], $3::text[]) AS k(instance, id)
WHERE t.process = $1 AND t.instance = k.instance COLLATE "C" AND t.id = k.id COLLATE "C" AND t.due_at <= $4
RETURNING t.process, t.instance, t.id, t.name, t.due_at, t.data`;
