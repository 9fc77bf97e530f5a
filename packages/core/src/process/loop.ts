/**
 * The loop under a process manager's sender and timer loop (and a command scheduler's): do a pass of work, go again at
 * once while there was some, else rest until the poll interval passes or something wakes it.
 */
import type { Clock } from '../clock.js';
import { safeQuote, ValidationError } from '../errors.js';

export interface WorkLoop {
  start(): void;
  /** Ends the loop after the pass in progress. */
  stop(): Promise<void>;
  /** Something may have given the loop work: it looks again at once (after the pass in progress, if any). */
  wake(): void;
}

/** `work` resolves with how much it did; a failure goes to `onError` and the loop rests as after an idle pass. */
export function createWorkLoop(options: {
  clock: Clock;
  intervalMs: number;
  work: () => Promise<number>;
  onError: (error: unknown) => void;
}): WorkLoop {
  let running = false;
  let woken = false;
  let loop: Promise<void> = Promise.resolve();
  let halt = new AbortController();
  let rest = new AbortController();

  const run = async () => {
    while (running) {
      woken = false;
      let worked = 0;
      try {
        worked = await options.work();
      } catch (error) {
        options.onError(error);
      }
      if (!running) break;
      if (worked > 0 || woken) continue;
      rest = new AbortController();
      await options.clock.sleep(options.intervalMs, AbortSignal.any([rest.signal, halt.signal]));
    }
  };

  return {
    start() {
      if (running) return;
      running = true;
      halt = new AbortController();
      loop = run();
    },
    async stop() {
      running = false;
      halt.abort();
      await loop;
    },
    wake() {
      woken = true;
      rest.abort();
    },
  };
}

/** An option that must be a positive number, or its default when not given. */
export function positiveOption(value: number | undefined, fallback: number, name: string, owner: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)
    throw new ValidationError(`${owner} option ${name} must be a positive number, got ${safeQuote(value)}`);
  return value;
}
