import type { Clock } from '../clock.js';
import { EventlineError, safeQuote, ValidationError } from '../errors.js';
import { isPosition, type Position } from '../position.js';
import type { EventStore } from '../store/contract.js';

/** `waitFor` ran out of time. */
export class WaitTimeoutError extends EventlineError {
  readonly code = 'WAIT_TIMEOUT' as const;
  constructor(
    readonly subscription: string,
    readonly position: Position,
    readonly timeoutMs: number,
  ) {
    super(
      `Subscription '${subscription}' did not reach position ${position} within ${timeoutMs} ms; it may be lagging, paused or stopped (see its status)`,
    );
  }
}

const HOLDBACK_FAST_MS = 10;
const HOLDBACK_FAST_RETRIES = 50;

/**
 * The runner's rest between steps: a sleep on the clock that a wake-up (a notification of new events, a resume, a
 * stop) cuts short, and the choice of how long to rest when caught up.
 */
export class Idling {
  private waking: AbortController | null = null;
  /** A wake-up came while no one was idle (a batch was being read or handled): the next rest returns at once. */
  private woken = false;
  /** A notification came (events were committed) since the last step began. */
  private notified = false;
  /**
   * Following a notification whose events the last read did not find: an older transaction (anywhere on the server)
   * may still hold them back, and nothing notifies when it ends. Read again soon, with backoff, while the store
   * reports events held back (see {@link restAfterStep}).
   */
  private chase: { retries: number; rechecked: boolean } | null = null;

  constructor(
    private readonly clock: Clock,
    private readonly store: Pick<EventStore, 'readAllHoldback'>,
    private readonly pollMs: number,
  ) {}

  /** Events were committed: wake up, and follow them quickly again if a chase was backing off. */
  notify(): void {
    this.notified = true;
    if (this.chase) this.chase.retries = 0;
    this.wake();
  }

  wake(): void {
    const waking = this.waking;
    this.waking = null;
    if (waking) waking.abort();
    else this.woken = true;
  }

  /**
   * A step begins: it reads what was committed before it, so only a later wake-up or notification matters. Returns
   * whether a notification (or a chase) is what this step follows.
   */
  beginStep(): boolean {
    this.woken = false;
    const notified = this.notified || this.chase !== null;
    this.notified = false;
    return notified;
  }

  /** Rests `ms`, or less when woken. */
  async rest(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return;
    }
    const waking = new AbortController();
    this.waking = waking;
    await this.clock.sleep(ms, waking.signal);
    if (this.waking === waking) this.waking = null;
  }

  /** Rests the poll interval. */
  restPoll(): Promise<void> {
    return this.rest(this.pollMs);
  }

  /** Caught up: rests until woken, for as long as {@link restTime} says. */
  async restAfterStep(missed: boolean): Promise<void> {
    await this.rest(await this.restTime(missed));
  }

  /**
   * How long to wait for a wake-up when caught up: the poll interval, or much less when a notification's events were
   * not found (`missed`) and the store reports events held back by an older open transaction: every few ms for the
   * first half second, then backing off to the poll interval. When none is held back (the transaction may have ended
   * between the read and this check), read once more at once before waiting the poll interval.
   */
  private async restTime(missed: boolean): Promise<number> {
    if (!missed) {
      this.chase = null;
      return this.pollMs;
    }
    const chase = (this.chase ??= { retries: 0, rechecked: false });
    if ((await this.store.readAllHoldback()).heldBackEvents > 0) {
      const n = chase.retries++;
      chase.rechecked = false;
      const delay =
        n < HOLDBACK_FAST_RETRIES
          ? Math.min(HOLDBACK_FAST_MS, 2 * 2 ** n)
          : HOLDBACK_FAST_MS * 2 ** Math.min(n - HOLDBACK_FAST_RETRIES + 1, 10);
      return Math.min(this.pollMs, delay);
    }
    if (!chase.rechecked) {
      chase.rechecked = true;
      return 0;
    }
    this.chase = null;
    return this.pollMs;
  }
}

/** How often a `waitFor` looks at the checkpoint again when no progress is announced (another instance may move it). */
const WAIT_RECHECK_MS = 100;

/**
 * Resolves when `checkpoint()` is at or after `position`, re-read on each announced progress (`progress` holds the
 * listeners the subscription calls when its checkpoint moves) and at least every {@link WAIT_RECHECK_MS}; throws
 * {@link WaitTimeoutError} after `timeoutMs`, or the signal's reason as soon as it aborts.
 */
export async function waitForPosition(args: {
  readonly subscription: string;
  readonly position: Position;
  readonly options: { timeoutMs?: number; signal?: AbortSignal };
  readonly clock: Clock;
  readonly progress: Set<() => void>;
  readonly checkpoint: () => Position | null | Promise<Position | null>;
}): Promise<void> {
  const { subscription, position, clock, progress } = args;
  if (!isPosition(position))
    throw new ValidationError(`Subscription '${subscription}': waitFor takes a position, got ${safeQuote(position)}`);
  const timeoutMs = args.options.timeoutMs ?? 5000;
  // NaN would never time out and poll without pause; a negative wait is a caller's mistake, not a timeout.
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) {
    throw new ValidationError(
      `Subscription '${subscription}': waitFor's timeoutMs must be a number of ms, 0 or more (or Infinity), got ${safeQuote(timeoutMs)}`,
    );
  }
  const signal = args.options.signal;
  signal?.throwIfAborted();
  const deadline = clock.now() + timeoutMs;
  for (;;) {
    const checkpoint = await args.checkpoint();
    signal?.throwIfAborted();
    if (checkpoint !== null && checkpoint >= position) return;
    const left = deadline - clock.now();
    if (left <= 0) throw new WaitTimeoutError(subscription, position, timeoutMs);
    await untilProgress(clock, progress, Math.min(left, WAIT_RECHECK_MS), signal);
  }
}

/** Resolves on the next announced progress or after `ms`; rejects with the signal's reason when it aborts. */
function untilProgress(clock: Clock, progress: Set<() => void>, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = new AbortController();
    function settle() {
      timer.abort();
      progress.delete(done);
      signal?.removeEventListener('abort', aborted);
    }
    function done() {
      settle();
      resolve();
    }
    function aborted() {
      settle();
      reject(signal!.reason);
    }
    progress.add(done);
    signal?.addEventListener('abort', aborted, { once: true });
    void clock.sleep(ms, timer.signal).then(done);
  });
}
