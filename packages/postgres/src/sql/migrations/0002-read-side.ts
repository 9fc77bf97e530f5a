/**
 * Migration 2: the read side's tables: subscription checkpoints, leases and parked events, snapshots, the
 * projection catalog, the consumer inbox, and the registry of document tables (the tables themselves are created on
 * first use, see read-side-statements.ts).
 *
 * Released: this text is frozen (test/migrations.test.ts pins its SHA-256). Never edit it: add a new migration.
 */
export const version = 2;
export const name =
  'read side: checkpoints, leases, parked events, snapshots, projection catalog, inbox, read-model registry';
export const sql = `
CREATE TABLE {{schema}}.checkpoints (
  name text PRIMARY KEY,
  position text COLLATE "C" NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {{schema}}.leases (
  name text PRIMARY KEY,
  owner text NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE TABLE {{schema}}.parked (
  subscription text NOT NULL,
  event_id uuid NOT NULL,
  event jsonb NOT NULL,
  error jsonb NOT NULL,
  attempts integer NOT NULL,
  parked_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (subscription, event_id)
);
CREATE TABLE {{schema}}.snapshots (
  stream_id text PRIMARY KEY,
  version bigint NOT NULL,
  state_version integer NOT NULL,
  state jsonb NOT NULL,
  taken_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {{schema}}.projections (
  name text PRIMARY KEY,
  active_version integer NOT NULL,
  switched_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {{schema}}.inbox (
  group_name text NOT NULL,
  message_id text NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_name, message_id)
);
CREATE TABLE {{schema}}.read_models (
  collection text PRIMARY KEY,
  table_name text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);
`;
