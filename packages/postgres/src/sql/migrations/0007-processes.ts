/**
 * Migration 7: process managers: each instance's state, the commands they decided to send (the outbox), and their
 * timers (see ../process-statements.ts and ../../processes.ts).
 *
 * Released: this text is frozen (test/migrations.test.ts pins its SHA-256). Never edit it: add a new migration.
 */
export const version = 7;
export const name = 'process managers: instances, outbox, timers';
export const sql = `
CREATE TABLE {{schema}}.process_instances (
  process text COLLATE "C" NOT NULL,
  instance text COLLATE "C" NOT NULL,
  state jsonb NOT NULL,
  inputs bigint NOT NULL,
  ignored bigint NOT NULL,
  correlation_id text NOT NULL,
  last_position text COLLATE "C",
  completed boolean NOT NULL,
  started_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (process, instance)
);
CREATE TABLE {{schema}}.process_outbox (
  process text COLLATE "C" NOT NULL,
  command_id uuid NOT NULL,
  instance text COLLATE "C" NOT NULL,
  sequence bigint GENERATED ALWAYS AS IDENTITY,
  command jsonb NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  not_before timestamptz NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'parked')),
  error jsonb,
  PRIMARY KEY (process, command_id)
);
CREATE INDEX process_outbox_by_instance ON {{schema}}.process_outbox (process, instance, sequence);
CREATE TABLE {{schema}}.process_timers (
  process text COLLATE "C" NOT NULL,
  instance text COLLATE "C" NOT NULL,
  id text COLLATE "C" NOT NULL,
  name text NOT NULL,
  due_at timestamptz NOT NULL,
  data jsonb NOT NULL,
  PRIMARY KEY (process, instance, id)
);
CREATE INDEX process_timers_due ON {{schema}}.process_timers (process, due_at);
`;
