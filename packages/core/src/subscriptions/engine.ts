import type { Clock } from '../clock.js';
import { ValidationError } from '../errors.js';
import type { RecordedEvent } from '../event.js';
import type { Position } from '../position.js';
import type { EventStore, ReadAllFilter } from '../store/contract.js';
import type { ParkedEvent, SubscriptionStore } from './contract.js';
import type { LogItem, LogReader } from './log-follower.js';
import { SubscriptionRunner } from './runner.js';

export type { LogItem } from './log-follower.js';
export { WaitTimeoutError } from './waiting.js';

/** What a handler gets with each event. */
export interface HandlerContext<Tx> {
  /** The transaction the checkpoint commits in: write read models through it for an exactly-once effect. */
  readonly tx: Tx;
  readonly subscription: string;
  /** 1 on the first try of this event, more on retries. */
  readonly attempt: number;
}

export type EventHandler<Tx> = (event: RecordedEvent, context: HandlerContext<Tx>) => Promise<void> | void;

export interface SubscriptionOptions<Tx> {
  /** Unique per subscription: it names the checkpoint, the lease and the parked events. */
  name: string;
  store: EventStore;
  subscriptions: SubscriptionStore<Tx>;
  handle: EventHandler<Tx>;
  /**
   * Optional: handles a whole batch at once (a publisher sends it to the broker in one go). When it fails, the batch
   * is retried event by event through `handle`, so a poison event is still found, retried and parked.
   */
  handleBatch?: (events: readonly RecordedEvent[], context: HandlerContext<Tx>) => Promise<void>;
  /**
   * Whether handlers run inside the transaction the checkpoint commits in (default true): their writes through `tx`
   * then commit with it, exactly once. `false` is for handlers whose effect is outside the store's database (a
   * publisher's broker, an HTTP call): they run first, with no transaction open (and `tx` undefined), and the
   * checkpoint then moves on its own (fenced by the lease, one statement where the subscription store has
   * `moveCheckpoint`). An open transaction would otherwise hold every gap-safe reader of the log back (see
   * `readAllHoldback`) for as long as the handler waits on the outside world. Delivery stays at least once.
   */
  transactional?: boolean;
  /**
   * With `transactional: false` only: store the checkpoint of a handled batch at most once per this many ms while
   * catching up (default 0: after every batch). The checkpoint always moves in memory after the handler succeeded, and
   * it is stored when the subscription is caught up, when it stops, and at least this often in between; a crash
   * handles again at most this stretch of events (at least once, as always without a transaction). A publisher uses
   * it to keep a database commit per batch off the path between one broker confirm and the next publish.
   */
  checkpointIntervalMs?: number;
  /** Only these categories / event types (filtered in the store). */
  filter?: ReadAllFilter;
  /** Where a subscription with no checkpoint starts: the beginning (default), the end, or a position. */
  from?: 'beginning' | 'end' | Position;
  /** Events per batch (one transaction). Default 100. */
  batchSize?: number;
  /** Longest wait between polls when no notification comes. Default 1000 ms. */
  pollIntervalMs?: number;
  /** Retries of a failing event before it is parked or the subscription stops. */
  retry?: { maxAttempts?: number; baseDelayMs?: number; maxDelayMs?: number };
  /** After the retries: park the event (dead letter) and go on (default), or stop the subscription. */
  onFailure?: 'park' | 'stop';
  /** Process only streams whose id hashes to `index` of `count` partitions; each partition has its own checkpoint and lease. */
  partition?: { count: number; index: number };
  /** One active instance per subscription (and partition): a lease of `ttlMs` (default 10 s), renewed while running. */
  lease?: { ttlMs?: number; owner?: string };
  /** Errors the subscription recovers from (database unavailable, a handler failing before its retries run out...). */
  onError?: (error: unknown, subscription: string) => void;
  /** Called after an event is parked. */
  onParked?: (parked: ParkedEvent) => void;
  /**
   * What the subscription reads time from and waits on: polls, rests when caught up, retry backoff, lease renewal,
   * `waitFor` timeouts, lag. Default `systemClock`; a test clock (`createTestClock`) moves time without sleeping.
   */
  clock?: Clock;
}

export type SubscriptionState = 'idle' | 'running' | 'standby' | 'paused' | 'failed' | 'stopped';

export interface SubscriptionStatus {
  readonly name: string;
  readonly state: SubscriptionState;
  /** Where it will resume; null before its first commit. */
  readonly checkpoint: Position | null;
  /** Events after the checkpoint that it will process (counted up to 10 000; `capped` when there are more). */
  readonly lag: { readonly events: number; readonly capped: boolean; readonly seconds: number };
  readonly parked: number;
  readonly owner: string;
  /** The error that stopped it, when `state` is 'failed'. */
  readonly failure: { readonly name: string; readonly message: string } | null;
  /** Calls of `waitFor` in progress in this instance (each holds a timer and a progress listener until it ends). */
  readonly waiting: number;
}

/** How long `waitFor` waits, and an optional signal that ends the wait at once. */
export interface WaitForOptions {
  /** Milliseconds, 0 or more (default 5000); `Infinity` waits until the position is reached or `signal` aborts. */
  timeoutMs?: number;
  /**
   * Ends the wait when aborted (an HTTP request whose client went away): `waitFor` then rejects with the signal's
   * reason at once, and its timer and listener are gone.
   */
  signal?: AbortSignal;
}

export interface Subscription {
  readonly name: string;
  /** Starts processing in the background (standby while another instance holds the lease). */
  start(): void;
  /** Finishes the batch in progress, releases the lease and stops. */
  stop(): Promise<void>;
  pause(): void;
  resume(): void;
  /** Moves the checkpoint (takes effect at the next batch when running). */
  reset(to: 'beginning' | 'end' | Position): Promise<void>;
  status(): Promise<SubscriptionStatus>;
  /**
   * Resolves when the checkpoint is at or after `position` (read-your-writes), or throws {@link WaitTimeoutError}; with
   * `signal`, rejects with its reason as soon as it aborts. A position that is not one, or a `timeoutMs` that is not a
   * number of ms of 0 or more, is a ValidationError.
   */
  waitFor(position: Position, options?: WaitForOptions): Promise<void>;
  /** Processes until caught up with the log as it is now, in this call (needs the lease). For tests, rebuilds and tools. */
  catchUp(): Promise<void>;
  parked(): Promise<ParkedEvent[]>;
  /** Runs the handler again on a parked event (after a fix); on success it is removed from the parked list. */
  retryParked(eventId: string): Promise<void>;
}

export function createSubscription<Tx>(options: SubscriptionOptions<Tx>): Subscription {
  return new SubscriptionRunner<Tx, RecordedEvent>({ ...options, read: (page) => options.store.readAllPage(page) });
}

/**
 * A subscription over items of the log other than {@link RecordedEvent}s, read by `read` (same paging contract as
 * `readAllPage`): publishers read events already encoded as messages. Such a subscription
 * never parks (its `onFailure` must be 'stop'), since a parked event is a {@link RecordedEvent}.
 */
export interface LogSubscriptionOptions<Tx, E extends LogItem> extends Omit<
  SubscriptionOptions<Tx>,
  'handle' | 'handleBatch'
> {
  handle: (item: E, context: HandlerContext<Tx>) => Promise<void> | void;
  handleBatch?: (items: readonly E[], context: HandlerContext<Tx>) => Promise<void>;
  read: LogReader<E>;
}

export function createLogSubscription<Tx, E extends LogItem>(options: LogSubscriptionOptions<Tx, E>): Subscription {
  if (options.onFailure !== 'stop')
    throw new ValidationError(
      `Subscription '${options.name}': a subscription over encoded items must use onFailure 'stop'`,
    );
  return new SubscriptionRunner<Tx, E>(options);
}
