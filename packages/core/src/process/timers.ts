/**
 * Firing due timers, for process managers and command schedulers: each timer is taken (removed) and what it gives is
 * written in the same transaction, so a timer fires once however many loops look at it (`takeTimer`: a second taker
 * waits for the first one's transaction and then gets nothing); late after a restart, never early.
 */
import { safeQuote, ValidationError } from '../errors.js';
import type { ProcessStore, TimerRecord } from './contract.js';

/** Due timers taken per pass of a timer loop (one transaction). */
export const DUE_TIMERS_BATCH = 500;

/**
 * Fires the timers of `process` due at `now`: on a store whose transactions roll back, all of them in one
 * transaction (taken, applied and written together); when that fails, or on a store that is not atomic, each in a
 * transaction of its own. `apply` gets the timers that were still there, in `tx`. Resolves with how many fired.
 */
export async function fireDueTimers<Tx>(options: {
  process: string;
  processes: ProcessStore<Tx>;
  now: Date;
  apply: (tx: Tx, timers: readonly TimerRecord[]) => Promise<void>;
  /** True once no more timers should be taken in this pass (stop() was called). */
  halted: () => boolean;
  onError?: ((error: unknown, where: string) => void) | undefined;
}): Promise<number> {
  const { process, processes, now } = options;
  const due = await processes.dueTimers(process, now, DUE_TIMERS_BATCH);
  if (due.length === 0) return 0;
  const fire = async (tx: Tx, timers: readonly TimerRecord[]) => {
    const taken = await Promise.all(
      timers.map((timer) => processes.takeTimer(tx, process, timer.instance, timer.id, now)),
    );
    const fired = taken.filter((timer): timer is TimerRecord => timer !== null);
    if (fired.length > 0) await options.apply(tx, fired);
    return fired.length;
  };
  let fired = 0;
  if (processes.atomic && due.length > 1) {
    try {
      fired = await processes.transaction((tx) => fire(tx, due));
    } catch (error) {
      options.onError?.(error, `process ${process}: timers`);
    }
  }
  if (fired === 0) {
    for (const timer of due) {
      if (options.halted()) break;
      fired += await processes.transaction((tx) => fire(tx, [timer]));
    }
  }
  return fired;
}

/** The due times a store keeps: years 1 to 9999 (a JavaScript Date goes further than PostgreSQL's timestamptz). */
const EARLIEST_DUE = Date.parse('0001-01-01T00:00:00.000Z');
export const LATEST_DUE = Date.parse('9999-12-31T23:59:59.999Z');

/**
 * When a timer set at `now` is due: `at` (a valid Date), or `afterMs` (a finite number of ms, 0 or more) after `now`.
 * `what` names it in the error ("Timer 'answer-ana'"). A time outside the years 1 to 9999 is refused.
 */
export function dueTimeOf(what: string, now: Date, at: unknown, afterMs: unknown): Date {
  let due: number;
  if (at !== undefined) {
    if (!(at instanceof Date) || Number.isNaN(at.getTime()))
      throw new ValidationError(`${what}: at must be a valid Date, got ${safeQuote(at)}`);
    due = at.getTime();
  } else if (afterMs !== undefined) {
    if (typeof afterMs !== 'number' || !Number.isFinite(afterMs) || afterMs < 0)
      throw new ValidationError(`${what}: afterMs must be a finite number of ms, 0 or more, got ${safeQuote(afterMs)}`);
    due = now.getTime() + afterMs;
  } else throw new ValidationError(`${what} needs at (a Date) or afterMs (ms from now)`);
  if (!(due >= EARLIEST_DUE && due <= LATEST_DUE))
    throw new ValidationError(`${what}: the due time must be in the years 1 to 9999, got ${due} ms since 1970`);
  return new Date(due);
}
