import { systemClock, type Clock } from '../clock.js';
import { ConcurrencyError, TransactionConflictError } from '../errors.js';

export interface RetryOptions {
  /** Attempts in all, the first included (default 5). 1 disables retrying. */
  maxAttempts?: number;
  /** The delay before retry n is a random value in [0, min(maxDelayMs, baseDelayMs × 2^n)] ("full jitter"). Default 5 ms. */
  baseDelayMs?: number;
  /** Default 250 ms. */
  maxDelayMs?: number;
  /** The jitter's source of randomness, in [0, 1) (default Math.random). */
  random?: () => number;
  /** What the backoff waits on (default `systemClock`). */
  clock?: Clock;
}

/**
 * Whether an error means another writer got there first and the work, run again, may succeed: a
 * {@link ConcurrencyError} (the stream moved on) or a {@link TransactionConflictError} (the database broke the
 * transaction off in a deadlock or serialization conflict). Nothing of the failed attempt was stored in either case.
 */
export function isRetryableConflict(error: unknown): error is ConcurrencyError | TransactionConflictError {
  return error instanceof ConcurrencyError || error instanceof TransactionConflictError;
}

/**
 * Runs `attempt` again when it throws a retryable conflict ({@link isRetryableConflict}), a bounded number of times
 * with jittered exponential backoff; the last conflict is thrown when the attempts are used up. Any other error is
 * thrown at once.
 */
export async function retryOnConflict<T>(
  attempt: (attemptNumber: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const maxAttempts = options.maxAttempts ?? 5;
  const base = options.baseDelayMs ?? 5;
  const max = options.maxDelayMs ?? 250;
  const random = options.random ?? Math.random;
  const clock = options.clock ?? systemClock;
  for (let number = 1; ; number++) {
    try {
      return await attempt(number);
    } catch (error) {
      if (!isRetryableConflict(error) || number >= maxAttempts) throw error;
      await clock.sleep(random() * Math.min(max, base * 2 ** (number - 1)));
    }
  }
}
