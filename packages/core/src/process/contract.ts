/**
 * Where process managers keep what they remember: each instance's state, the commands they decided to send (an
 * outbox), and their timers. Every write that follows from one input is made through the `tx` of one transaction, so
 * the new state, the commands, the timers and the input's checkpoint commit together or not at all.
 * In memory: `createInMemoryProcessStore`; PostgreSQL and PGlite: `createSqlProcessStore` of `@eventline/postgres`.
 */
import type { Command } from '../command.js';
import type { JsonValue } from '../json.js';

/** What a store remembers of one instance of a process. */
export interface ProcessInstanceRecord {
  readonly process: string;
  readonly instance: string;
  /** The state after the last input (JSON). */
  readonly state: JsonValue;
  /** Inputs applied so far. */
  readonly inputs: number;
  /** Inputs that came after completion, recorded and otherwise ignored. */
  readonly ignored: number;
  /** The correlation id of the event that started the instance: the commands it sends carry it. */
  readonly correlationId: string;
  /** The position of the last event applied: an event at or before it is a redelivery, and a no-op. */
  readonly lastPosition: string | null;
  readonly completed: boolean;
  readonly startedAt: Date;
  readonly updatedAt: Date;
}

/** A command waiting in (or parked in) a process's outbox. */
export interface OutboxCommand {
  readonly process: string;
  readonly instance: string;
  /** The command, with its deterministic id; the command bus de-duplicates by it. */
  readonly command: Command;
  /** Order of writing, per store: commands of one instance are sent in this order. */
  readonly sequence: number;
  readonly attempts: number;
  /** Not sent before this time (after a failed try). */
  readonly notBefore: Date;
  readonly status: 'pending' | 'parked';
  /** The last failure, when it failed. */
  readonly error: { readonly name: string; readonly message: string } | null;
}

/** A timer that fires one input into a process instance (or, for `scheduleCommand`, sends a command). */
export interface TimerRecord {
  /** Unique per instance. Setting a timer with an id that is pending replaces it. */
  readonly id: string;
  readonly process: string;
  readonly instance: string;
  readonly name: string;
  readonly dueAt: Date;
  readonly data: JsonValue;
}

export interface ProcessStore<Tx = unknown> {
  /**
   * True when a transaction's writes roll back with it (PostgreSQL), false in memory, where a write stays once made
   * (the memory store is for tests and single-process use: a crash loses it all anyway).
   */
  readonly atomic: boolean;
  /** Runs `work` in a transaction of its own (a timer firing, a command's outcome) and commits it. */
  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T>;

  /**
   * The instance's record; in `tx`, locked for the rest of it where the store can (so two writers of one instance take
   * turns); with null, a plain read.
   */
  loadInstance(tx: Tx | null, process: string, instance: string): Promise<ProcessInstanceRecord | null>;
  /** Creates or replaces the instance's record. */
  saveInstance(
    tx: Tx,
    record: Omit<ProcessInstanceRecord, 'startedAt' | 'updatedAt'> & {
      readonly startedAt?: Date;
      readonly updatedAt: Date;
    },
  ): Promise<void>;
  /** Instances of a process, in instance order, after `after` (for listing and tests). */
  listInstances(process: string, options?: { after?: string; limit?: number }): Promise<ProcessInstanceRecord[]>;

  /** Adds commands to the outbox (pending, not before `notBefore`); a command id already there is left as it is. */
  enqueue(
    tx: Tx,
    commands: ReadonlyArray<{ process: string; instance: string; command: Command; notBefore: Date }>,
  ): Promise<void>;
  /**
   * The next commands to send: for each instance with pending commands, its oldest one, if due at `now`; oldest
   * first, at most `limit`. A parked command holds its instance's later ones back until it is retried or dropped.
   */
  nextCommands(process: string, now: Date, limit: number): Promise<OutboxCommand[]>;
  /** Removes a command that was sent or refused (in `tx`, or on its own with null). False when it was not pending any more. */
  removeCommand(tx: Tx | null, process: string, commandId: string): Promise<boolean>;
  /** Records a failed try: attempts, error and when to try again; or parks it (`park`). */
  commandFailed(
    process: string,
    commandId: string,
    failure: { attempts: number; error: { name: string; message: string }; notBefore: Date; park: boolean },
  ): Promise<void>;
  /** Pending and parked commands of a process (for listing). */
  listCommands(
    process: string,
    options?: { instance?: string; status?: 'pending' | 'parked' },
  ): Promise<OutboxCommand[]>;
  /** Puts a parked command back to pending, due now. False when there is no such parked command. */
  retryCommand(process: string, commandId: string, now: Date): Promise<boolean>;

  /** Sets timers; a timer whose id is pending is replaced. */
  setTimers(tx: Tx, timers: readonly TimerRecord[]): Promise<void>;
  /** Cancels the given timers of an instance (ids), or all of them (`'all'`). */
  cancelTimers(tx: Tx, process: string, instance: string, ids: readonly string[] | 'all'): Promise<void>;
  /** Timers of a process due at `now`, earliest first, at most `limit` (they stay until {@link takeTimer}). */
  dueTimers(process: string, now: Date, limit: number): Promise<TimerRecord[]>;
  /**
   * Removes a timer in `tx` and returns it, or null when it is gone (fired by someone else, cancelled, replaced by one
   * due later than `now`). Where the store can, a second taker waits for the first one's transaction and then gets null:
   * this is what makes a timer fire once.
   */
  takeTimer(tx: Tx, process: string, instance: string, id: string, now: Date): Promise<TimerRecord | null>;
  /** Pending timers of a process, earliest first; of one instance when given. */
  listTimers(process: string, options?: { instance?: string }): Promise<TimerRecord[]>;

  close(): Promise<void>;
}
