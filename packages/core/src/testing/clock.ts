import type { Clock } from '../clock.js';

/** A clock that moves only when the test says so: tests of behaviour over time without sleeping. */
export interface TestClock extends Clock {
  /**
   * Moves time forward by `ms`, waking each sleeper whose time has come in the order they are due, and letting the
   * woken code run (pending promise callbacks and I/O callbacks) before the next one wakes.
   */
  advance(ms: number): Promise<void>;
  /** How many `sleep` calls are waiting. */
  readonly sleepers: number;
  /** Resolves once at least `count` sleepers are waiting (real time, bounded by `timeoutMs`, default 10 s). */
  untilSleeping(count?: number, timeoutMs?: number): Promise<void>;
}

interface Sleeper {
  readonly due: number;
  readonly resolve: () => void;
}

/** A {@link TestClock} starting at `start` (milliseconds since the epoch; default 2026-01-01T00:00:00Z). */
export function createTestClock(start = Date.UTC(2026, 0, 1)): TestClock {
  let now = start;
  let sleepers: Sleeper[] = [];
  const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
  return {
    now: () => now,
    sleep(ms, signal) {
      if (signal?.aborted || ms <= 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const sleeper: Sleeper = {
          due: now + ms,
          resolve: () => {
            signal?.removeEventListener('abort', cancel);
            resolve();
          },
        };
        const cancel = () => {
          sleepers = sleepers.filter((other) => other !== sleeper);
          sleeper.resolve();
        };
        signal?.addEventListener('abort', cancel, { once: true });
        sleepers.push(sleeper);
      });
    },
    get sleepers() {
      return sleepers.length;
    },
    async advance(ms) {
      if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`advance takes a finite, non-negative ms, not ${ms}`);
      const target = now + ms;
      for (;;) {
        const due = sleepers.filter((sleeper) => sleeper.due <= target).sort((a, b) => a.due - b.due)[0];
        if (!due) break;
        now = Math.max(now, due.due);
        sleepers = sleepers.filter((sleeper) => sleeper !== due);
        due.resolve();
        await settle();
      }
      now = target;
      await settle();
    },
    async untilSleeping(count = 1, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (sleepers.length < count) {
        if (Date.now() > deadline)
          throw new Error(`${count} sleepers were expected on the test clock; ${sleepers.length} waited`);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    },
  };
}
