/**
 * Process managers' state in the store's own database: instances, the outbox and timers (migration 7). Every write of
 * an input goes through the `tx` of the transaction it is given: the subscription's batch (createSqlSubscriptionStore),
 * so the state, the commands, the timers and the checkpoint commit together; or a transaction of its own for a timer
 * firing or a command refused.
 */
import type { Command, OutboxCommand, ProcessInstanceRecord, ProcessStore, TimerRecord } from '@eventline/core';
import { sqlOf } from './read-side.js';
import type { SqlClient, SqlQueryOptions } from './session.js';
import * as q from './sql/process-statements.js';
import { quoteSchema } from './sql/statements.js';
import type { SqlEventStore } from './store.js';

const PREPARED: SqlQueryOptions = { prepare: true };

interface InstanceRow {
  process: string;
  instance: string;
  state: ProcessInstanceRecord['state'];
  inputs: number;
  ignored: number;
  correlation_id: string;
  last_position: string | null;
  completed: boolean;
  started_at: Date | string;
  updated_at: Date | string;
}

interface OutboxRow {
  process: string;
  command_id: string;
  instance: string;
  sequence: number;
  command: Command;
  attempts: number;
  not_before: Date | string;
  status: 'pending' | 'parked';
  error: { name: string; message: string } | null;
}

interface TimerRow {
  process: string;
  instance: string;
  id: string;
  name: string;
  due_at: Date | string;
  data: TimerRecord['data'];
}

/**
 * The process store of `store`'s database; its `Tx` is the `SqlClient` of createSqlSubscriptionStore's transactions.
 *
 * ```ts
 * const manager = createProcessManager({
 *   process: responses,
 *   store,
 *   subscriptions: createSqlSubscriptionStore(store),
 *   processes: createSqlProcessStore(store),
 *   bus,
 * });
 * ```
 */
export function createSqlProcessStore(store: SqlEventStore): ProcessStore<SqlClient> {
  const s = quoteSchema(store.schema);
  const on = (tx: SqlClient | null) => tx ?? store.sql;
  return {
    atomic: true,
    transaction: (work) => store.transaction((session) => work(sqlOf(session))),
    async loadInstance(tx, process, instance) {
      const rows = await on(tx).query<InstanceRow>(
        tx ? q.loadInstanceForUpdate(s) : q.loadInstance(s),
        [process, instance],
        PREPARED,
      );
      return rows[0] ? instanceOf(rows[0]) : null;
    },
    async saveInstance(tx, record) {
      await tx.query(
        q.saveInstance(s),
        [
          record.process,
          record.instance,
          JSON.stringify(record.state),
          record.inputs,
          record.ignored,
          record.correlationId,
          record.lastPosition,
          record.completed,
          record.startedAt ?? record.updatedAt,
          record.updatedAt,
        ],
        PREPARED,
      );
    },
    async listInstances(process, options = {}) {
      const rows = await store.sql.query<InstanceRow>(
        q.listInstances(s),
        [process, options.after ?? '', options.limit ?? 1000],
        PREPARED,
      );
      return rows.map(instanceOf);
    },
    async enqueue(tx, commands) {
      for (const { process, instance, command, notBefore } of commands)
        await tx.query(
          q.enqueueCommand(s),
          [process, command.id, instance, JSON.stringify(command), notBefore],
          PREPARED,
        );
    },
    async nextCommands(process, now, limit) {
      const rows = await store.sql.query<OutboxRow>(q.nextCommands(s), [process, now, limit], PREPARED);
      return rows.map(outboxOf);
    },
    async removeCommand(tx, process, commandId) {
      const rows = await on(tx).query(q.removeCommand(s), [process, commandId], PREPARED);
      return rows.length > 0;
    },
    async commandFailed(process, commandId, failure) {
      await store.sql.query(
        q.commandFailed(s),
        [process, commandId, failure.attempts, JSON.stringify(failure.error), failure.notBefore, failure.park],
        PREPARED,
      );
    },
    async listCommands(process, options = {}) {
      const rows = await store.sql.query<OutboxRow>(
        q.listCommands(s),
        [process, options.instance ?? null, options.status ?? null],
        PREPARED,
      );
      return rows.map(outboxOf);
    },
    async retryCommand(process, commandId, now) {
      const rows = await store.sql.query(q.retryCommand(s), [process, commandId, now], PREPARED);
      return rows.length > 0;
    },
    async setTimers(tx, timers) {
      for (const timer of timers)
        await tx.query(
          q.setTimer(s),
          [timer.process, timer.instance, timer.id, timer.name, timer.dueAt, JSON.stringify(timer.data)],
          PREPARED,
        );
    },
    async cancelTimers(tx, process, instance, ids) {
      if (ids === 'all') await tx.query(q.cancelAllTimers(s), [process, instance], PREPARED);
      else if (ids.length > 0) await tx.query(q.cancelTimers(s), [process, instance, ids], PREPARED);
    },
    async dueTimers(process, now, limit) {
      const rows = await store.sql.query<TimerRow>(q.dueTimers(s), [process, now, limit], PREPARED);
      return rows.map(timerOf);
    },
    async takeTimer(tx, process, instance, id, now) {
      const rows = await tx.query<TimerRow>(q.takeTimer(s), [process, instance, id, now], PREPARED);
      return rows[0] ? timerOf(rows[0]) : null;
    },
    async listTimers(process, options = {}) {
      const rows = await store.sql.query<TimerRow>(q.listTimers(s), [process, options.instance ?? null], PREPARED);
      return rows.map(timerOf);
    },
    async close() {
      // The store's connections belong to the store: nothing of its own to release.
    },
  };
}

function instanceOf(row: InstanceRow): ProcessInstanceRecord {
  return {
    process: row.process,
    instance: row.instance,
    state: row.state,
    inputs: Number(row.inputs),
    ignored: Number(row.ignored),
    correlationId: row.correlation_id,
    lastPosition: row.last_position,
    completed: row.completed,
    startedAt: new Date(row.started_at),
    updatedAt: new Date(row.updated_at),
  };
}

function outboxOf(row: OutboxRow): OutboxCommand {
  return {
    process: row.process,
    instance: row.instance,
    command: row.command,
    sequence: Number(row.sequence),
    attempts: row.attempts,
    notBefore: new Date(row.not_before),
    status: row.status,
    error: row.error,
  };
}

function timerOf(row: TimerRow): TimerRecord {
  return {
    id: row.id,
    process: row.process,
    instance: row.instance,
    name: row.name,
    dueAt: new Date(row.due_at),
    data: row.data,
  };
}
