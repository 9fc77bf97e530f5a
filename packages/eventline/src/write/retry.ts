import { ConcurrencyError } from '../errors.js';

export interface RetryOptions {
  /** Attempts in all, the first included (default 5). 1 disables retrying. */
  maxAttempts?: number;
  /** The delay before retry n is a random value in [0, min(maxDelayMs, baseDelayMs × 2^n)] ("full jitter"). Default 5 ms. */
  baseDelayMs?: number;
  /** Default 250 ms. */
  maxDelayMs?: number;
  /** Injectable for tests. */
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Runs `attempt` again when it throws a {@link ConcurrencyError}, a bounded number of times with jittered exponential
 * backoff; the last ConcurrencyError is thrown when the attempts are used up. Any other error is thrown at once.
 */
export async function retryOnConflict<T>(attempt: (attemptNumber: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const maxAttempts = options.maxAttempts ?? 5;
  const base = options.baseDelayMs ?? 5;
  const max = options.maxDelayMs ?? 250;
  const random = options.random ?? Math.random;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  for (let number = 1; ; number++) {
    try {
      return await attempt(number);
    } catch (error) {
      if (!(error instanceof ConcurrencyError) || number >= maxAttempts) throw error;
      await sleep(random() * Math.min(max, base * 2 ** (number - 1)));
    }
  }
}
