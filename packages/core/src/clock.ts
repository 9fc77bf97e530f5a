/**
 * Time, as eventline reads it. Everything that waits or stamps (subscriptions, projections, publishers, leases,
 * transports' retries) takes a `clock` option, so a test can move time instead of sleeping; the default is the
 * system's.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /**
   * Resolves after `ms` milliseconds, or as soon as `signal` aborts (it resolves then too, never rejects), so a
   * loop that sleeps between polls stops promptly when it is stopped.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The system's clock: `Date.now()` and a timer that an abort signal cuts short. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep(ms, signal) {
    if (signal?.aborted || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
    });
  },
};
