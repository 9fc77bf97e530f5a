import type { JsonValue } from '../json.js';
import { ProcessStoreClosedError } from './errors.js';
import type { OutboxCommand, ProcessInstanceRecord, ProcessStore, TimerRecord } from './contract.js';

/**
 * A process store in this process's memory, for tests and single-process use. Writes take effect at once (`atomic`
 * is false): what a failed input wrote stays, so pair it with the in-memory subscription store, which handles the
 * events of a batch one at a time.
 */
export function createInMemoryProcessStore<Tx = unknown>(): ProcessStore<Tx> {
  const instances = new Map<string, ProcessInstanceRecord>();
  const outbox = new Map<string, OutboxCommand>();
  const timers = new Map<string, TimerRecord>();
  let sequence = 0;
  let closed = false;
  const key = (process: string, id: string) => `${process}\u0000${id}`;
  const timerKey = (process: string, instance: string, id: string) => `${process}\u0000${instance}\u0000${id}`;
  const copy = <T>(value: T): T => structuredClone(value);
  const open = () => {
    if (closed) throw new ProcessStoreClosedError();
  };

  return {
    atomic: false,
    async transaction(work) {
      open();
      return work(undefined as Tx);
    },
    async loadInstance(_tx, process, instance) {
      open();
      const record = instances.get(key(process, instance));
      return record ? copy(record) : null;
    },
    async saveInstance(_tx, record) {
      open();
      const existing = instances.get(key(record.process, record.instance));
      instances.set(key(record.process, record.instance), {
        ...copy(record),
        state: copy(record.state) as JsonValue,
        startedAt: existing?.startedAt ?? record.startedAt ?? record.updatedAt,
        updatedAt: record.updatedAt,
      });
    },
    async listInstances(process, options = {}) {
      open();
      return [...instances.values()]
        .filter((r) => r.process === process && (options.after === undefined || r.instance > options.after))
        .sort((a, b) => (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0))
        .slice(0, options.limit ?? 1000)
        .map(copy);
    },
    async enqueue(_tx, commands) {
      open();
      for (const { process, instance, command, notBefore } of commands) {
        const id = key(process, command.id);
        if (outbox.has(id)) continue;
        outbox.set(id, {
          process,
          instance,
          command: copy(command),
          sequence: ++sequence,
          attempts: 0,
          notBefore,
          status: 'pending',
          error: null,
        });
      }
    },
    async nextCommands(process, now, limit) {
      open();
      const oldest = new Map<string, OutboxCommand>();
      for (const row of [...outbox.values()].sort((a, b) => a.sequence - b.sequence)) {
        if (row.process !== process || oldest.has(row.instance)) continue;
        oldest.set(row.instance, row);
      }
      return [...oldest.values()]
        .filter((row) => row.status === 'pending' && row.notBefore.getTime() <= now.getTime())
        .sort((a, b) => a.sequence - b.sequence)
        .slice(0, limit)
        .map(copy);
    },
    async removeCommand(_tx, process, commandId) {
      open();
      const row = outbox.get(key(process, commandId));
      if (!row || row.status !== 'pending') return false;
      outbox.delete(key(process, commandId));
      return true;
    },
    async commandFailed(process, commandId, failure) {
      open();
      const row = outbox.get(key(process, commandId));
      if (!row || row.status !== 'pending') return;
      outbox.set(key(process, commandId), {
        ...row,
        attempts: failure.attempts,
        error: { name: failure.error.name, message: failure.error.message },
        notBefore: failure.notBefore,
        status: failure.park ? 'parked' : 'pending',
      });
    },
    async listCommands(process, options = {}) {
      open();
      return [...outbox.values()]
        .filter(
          (row) =>
            row.process === process &&
            (options.instance === undefined || row.instance === options.instance) &&
            (options.status === undefined || row.status === options.status),
        )
        .sort((a, b) => a.sequence - b.sequence)
        .map(copy);
    },
    async retryCommand(process, commandId, now) {
      open();
      const row = outbox.get(key(process, commandId));
      if (!row || row.status !== 'parked') return false;
      outbox.set(key(process, commandId), { ...row, status: 'pending', notBefore: now });
      return true;
    },
    async setTimers(_tx, records) {
      open();
      for (const timer of records) timers.set(timerKey(timer.process, timer.instance, timer.id), copy(timer));
    },
    async cancelTimers(_tx, process, instance, ids) {
      open();
      for (const [id, timer] of timers) {
        if (timer.process === process && timer.instance === instance && (ids === 'all' || ids.includes(timer.id)))
          timers.delete(id);
      }
    },
    async dueTimers(process, now, limit) {
      open();
      return [...timers.values()]
        .filter((timer) => timer.process === process && timer.dueAt.getTime() <= now.getTime())
        .sort(byDue)
        .slice(0, limit)
        .map(copy);
    },
    async takeTimer(_tx, process, instance, id, now) {
      open();
      const timer = timers.get(timerKey(process, instance, id));
      if (!timer || timer.dueAt.getTime() > now.getTime()) return null;
      timers.delete(timerKey(process, instance, id));
      return copy(timer);
    },
    async listTimers(process, options = {}) {
      open();
      return [...timers.values()]
        .filter(
          (timer) =>
            timer.process === process && (options.instance === undefined || timer.instance === options.instance),
        )
        .sort(byDue)
        .map(copy);
    },
    async close() {
      closed = true;
    },
  };
}

/** Earliest first; then by instance and id, as the SQL store orders them. */
function byDue(a: TimerRecord, b: TimerRecord): number {
  return a.dueAt.getTime() - b.dueAt.getTime() || compare(a.instance, b.instance) || compare(a.id, b.id);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
