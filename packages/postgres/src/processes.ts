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

  // Calls on one transaction made in the same turn of the event loop (a process manager applying a batch of inputs
  // calls these for many instances at once) go to the server as one statement each.
  type Save = Parameters<ProcessStore<SqlClient>['saveInstance']>[1];
  const load = coalesced<{ process: string; instance: string }, ProcessInstanceRecord | null>(
    (item) => item.process,
    async (tx, process, items) => {
      if (items.length === 1) {
        const rows = await tx.query<InstanceRow>(q.loadInstanceForUpdate(s), [process, items[0]!.instance], PREPARED);
        return [rows[0] ? instanceOf(rows[0]) : null];
      }
      const rows = await tx.query<InstanceRow>(
        q.loadInstancesForUpdate(s),
        [process, [...new Set(items.map((item) => item.instance))]],
        PREPARED,
      );
      const found = new Map(rows.map((row) => [row.instance, row]));
      return items.map((item) => {
        const row = found.get(item.instance);
        return row ? instanceOf(row) : null;
      });
    },
  );
  const save = coalesced<Save, void>(
    (record) => record.process,
    async (tx, process, records) => {
      if (records.length === 1) {
        const record = records[0]!;
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
        return [undefined];
      }
      // One row per instance: of two saves of one instance, the later one stands (as if made one after the other).
      const last = [...new Map(records.map((record) => [record.instance, record])).values()];
      await tx.query(
        q.saveInstances(s),
        [
          process,
          last.map((r) => r.instance),
          last.map((r) => JSON.stringify(r.state)),
          last.map((r) => r.inputs),
          last.map((r) => r.ignored),
          last.map((r) => r.correlationId),
          last.map((r) => r.lastPosition),
          last.map((r) => r.completed),
          last.map((r) => (r.startedAt ?? r.updatedAt).toISOString()),
          last.map((r) => r.updatedAt.toISOString()),
        ],
        PREPARED,
      );
      return records.map(() => undefined);
    },
  );
  type Enqueued = Parameters<ProcessStore<SqlClient>['enqueue']>[1];
  const enqueue = coalesced<Enqueued, void>(
    () => '',
    async (tx, _process, calls) => {
      const byProcess = new Map<string, Enqueued[number][]>();
      for (const command of calls.flat()) {
        const list = byProcess.get(command.process) ?? [];
        list.push(command);
        byProcess.set(command.process, list);
      }
      for (const [process, commands] of byProcess) {
        if (commands.length === 1) {
          const { instance, command, notBefore } = commands[0]!;
          await tx.query(
            q.enqueueCommand(s),
            [process, command.id, instance, JSON.stringify(command), notBefore],
            PREPARED,
          );
        } else
          await tx.query(
            q.enqueueCommands(s),
            [
              process,
              commands.map((c) => c.command.id),
              commands.map((c) => c.instance),
              commands.map((c) => JSON.stringify(c.command)),
              commands.map((c) => c.notBefore.toISOString()),
            ],
            PREPARED,
          );
      }
      return calls.map(() => undefined);
    },
  );
  const remove = coalesced<{ process: string; commandId: string }, boolean>(
    (item) => item.process,
    async (tx, process, items) => {
      if (items.length === 1)
        return [(await tx.query(q.removeCommand(s), [process, items[0]!.commandId], PREPARED)).length > 0];
      const rows = await tx.query<{ command_id: string }>(
        q.removeCommands(s),
        [process, items.map((item) => item.commandId)],
        PREPARED,
      );
      const removed = new Set(rows.map((row) => row.command_id));
      // A command named twice was removed once: the first call gets true.
      return items.map((item) => removed.delete(item.commandId.toLowerCase()));
    },
  );
  const set = coalesced<readonly TimerRecord[], void>(
    () => '',
    async (tx, _process, calls) => {
      const byProcess = new Map<string, Map<string, TimerRecord>>();
      for (const timer of calls.flat()) {
        const list = byProcess.get(timer.process) ?? new Map<string, TimerRecord>();
        // Of two settings of one timer, the later one stands.
        list.delete(`${timer.instance}\u0000${timer.id}`);
        list.set(`${timer.instance}\u0000${timer.id}`, timer);
        byProcess.set(timer.process, list);
      }
      for (const [process, byId] of byProcess) {
        const timers = [...byId.values()];
        if (timers.length === 1) {
          const timer = timers[0]!;
          await tx.query(
            q.setTimer(s),
            [process, timer.instance, timer.id, timer.name, timer.dueAt, JSON.stringify(timer.data)],
            PREPARED,
          );
        } else
          await tx.query(
            q.setTimers(s),
            [
              process,
              timers.map((t) => t.instance),
              timers.map((t) => t.id),
              timers.map((t) => t.name),
              timers.map((t) => t.dueAt.toISOString()),
              timers.map((t) => JSON.stringify(t.data)),
            ],
            PREPARED,
          );
      }
      return calls.map(() => undefined);
    },
  );
  const take = coalesced<{ process: string; instance: string; id: string; now: Date }, TimerRecord | null>(
    (item) => `${item.process}\u0000${item.now.getTime()}`,
    async (tx, _key, items) => {
      const { process, now } = items[0]!;
      if (items.length === 1) {
        const rows = await tx.query<TimerRow>(
          q.takeTimer(s),
          [process, items[0]!.instance, items[0]!.id, now],
          PREPARED,
        );
        return [rows[0] ? timerOf(rows[0]) : null];
      }
      // In one order (instance, then id), so that two takers of overlapping timers lock them in the same order.
      const keys = [...new Map(items.map((item) => [`${item.instance}\u0000${item.id}`, item])).values()].sort(
        (a, b) => compare(a.instance, b.instance) || compare(a.id, b.id),
      );
      const rows = await tx.query<TimerRow>(
        q.takeTimers(s),
        [process, keys.map((k) => k.instance), keys.map((k) => k.id), now],
        PREPARED,
      );
      const taken = new Map(rows.map((row) => [`${row.instance}\u0000${row.id}`, row]));
      // A timer named twice was taken once: the first call gets it.
      return items.map((item) => {
        const key = `${item.instance}\u0000${item.id}`;
        const row = taken.get(key);
        taken.delete(key);
        return row ? timerOf(row) : null;
      });
    },
  );

  return {
    atomic: true,
    transaction: (work) => store.transaction((session) => work(sqlOf(session))),
    async loadInstance(tx, process, instance) {
      if (tx) return load(tx, { process, instance });
      const rows = await store.sql.query<InstanceRow>(q.loadInstance(s), [process, instance], PREPARED);
      return rows[0] ? instanceOf(rows[0]) : null;
    },
    saveInstance: (tx, record) => save(tx, record),
    async listInstances(process, options = {}) {
      const rows = await store.sql.query<InstanceRow>(
        q.listInstances(s),
        [process, options.after ?? '', options.limit ?? 1000],
        PREPARED,
      );
      return rows.map(instanceOf);
    },
    async enqueue(tx, commands) {
      if (commands.length > 0) await enqueue(tx, commands);
    },
    async nextCommands(process, now, limit) {
      const rows = await store.sql.query<OutboxRow>(q.nextCommands(s), [process, now, limit], PREPARED);
      return rows.map(outboxOf);
    },
    async removeCommand(tx, process, commandId) {
      if (tx) return remove(tx, { process, commandId });
      const rows = await store.sql.query(q.removeCommand(s), [process, commandId], PREPARED);
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
      if (timers.length > 0) await set(tx, timers);
    },
    async cancelTimers(tx, process, instance, ids) {
      if (ids === 'all') await tx.query(q.cancelAllTimers(s), [process, instance], PREPARED);
      else if (ids.length > 0) await tx.query(q.cancelTimers(s), [process, instance, ids], PREPARED);
    },
    async dueTimers(process, now, limit) {
      const rows = await store.sql.query<TimerRow>(q.dueTimers(s), [process, now, limit], PREPARED);
      return rows.map(timerOf);
    },
    takeTimer: (tx, process, instance, id, now) => take(tx, { process, instance, id, now }),
    async listTimers(process, options = {}) {
      const rows = await store.sql.query<TimerRow>(q.listTimers(s), [process, options.instance ?? null], PREPARED);
      return rows.map(timerOf);
    },
    async close() {
      // The store's connections belong to the store: nothing of its own to release.
    },
  };
}

/**
 * Gathers the calls made on one transaction before the event loop turns (setImmediate) and sends each group (by
 * `group`) to `flush` at once, which answers them in order. A caller that awaits each call sees them as made one after
 * the other; calls made together (Promise.all over several instances) cost one round trip. The groups of one turn are
 * flushed one after the other, in the order they first appeared.
 */
function coalesced<I, O>(
  group: (item: I) => string,
  flush: (tx: SqlClient, group: string, items: I[]) => Promise<O[]>,
): (tx: SqlClient, item: I) => Promise<O> {
  type Waiting = { item: I; resolve: (value: O) => void; reject: (error: unknown) => void };
  const pending = new WeakMap<SqlClient, Map<string, Waiting[]>>();
  return (tx, item) =>
    new Promise<O>((resolve, reject) => {
      let groups = pending.get(tx);
      if (!groups) {
        const gathered = new Map<string, Waiting[]>();
        groups = gathered;
        pending.set(tx, gathered);
        setImmediate(() => {
          pending.delete(tx);
          void (async () => {
            for (const [key, waiting] of gathered) {
              try {
                const answers = await flush(
                  tx,
                  key,
                  waiting.map((w) => w.item),
                );
                waiting.forEach((w, i) => w.resolve(answers[i]!));
              } catch (error) {
                for (const w of waiting) w.reject(error);
              }
            }
          })();
        });
      }
      const key = group(item);
      const list = groups.get(key) ?? [];
      list.push({ item, resolve, reject });
      groups.set(key, list);
    });
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
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
