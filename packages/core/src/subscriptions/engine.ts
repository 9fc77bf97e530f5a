import { EventlineError, safeQuote, ValidationError } from '../errors.js';
import type { RecordedEvent } from '../event.js';
import { newId } from '../ids.js';
import { isPosition, START, type Position } from '../position.js';
import type { EventStore, ReadAllFilter } from '../store/contract.js';
import { LeaseLostError, type ParkedEvent, type SubscriptionStore } from './contract.js';
import { partitionOf } from '../hash.js';

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
  /** Injectable for tests. */
  sleep?: (ms: number) => Promise<void>;
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

const LAG_CAP = 10_000;
const PERSIST_IDLE_CHECKPOINT_MS = 5_000;
const HOLDBACK_FAST_MS = 10;
const HOLDBACK_FAST_RETRIES = 50;

export function createSubscription<Tx>(options: SubscriptionOptions<Tx>): Subscription {
  return new SubscriptionRunner<Tx, RecordedEvent>({ ...options, read: (page) => options.store.readAllPage(page) });
}

/** What the engine needs of an item of the log it reads. */
export interface LogItem {
  readonly id: string;
  readonly streamId: string;
  readonly position: Position;
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
  read: (page: {
    after: Position;
    limit: number;
    filter?: ReadAllFilter;
  }) => Promise<{ readonly events: E[]; readonly next: Position; readonly atEnd: boolean }>;
}

export function createLogSubscription<Tx, E extends LogItem>(options: LogSubscriptionOptions<Tx, E>): Subscription {
  if (options.onFailure !== 'stop')
    throw new ValidationError(
      `Subscription '${options.name}': a subscription over encoded items must use onFailure 'stop'`,
    );
  return new SubscriptionRunner<Tx, E>(options);
}

type LogPage<E> = { readonly events: E[]; readonly next: Position; readonly atEnd: boolean };

class SubscriptionRunner<Tx, E extends LogItem> implements Subscription {
  readonly name: string;
  private readonly key: string;
  private readonly owner: string;
  private readonly ttl: number;
  private readonly batchSize: number;
  private readonly poll: number;
  private readonly maxAttempts: number;
  private readonly baseDelay: number;
  private readonly maxDelay: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private state: SubscriptionState = 'idle';
  private checkpoint: Position | null | undefined; // undefined: not loaded yet
  private failure: Error | null = null;
  private loop: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;
  /** A wake-up came while no one was idle (a batch was being read or handled): the next idle returns at once. */
  private woken = false;
  /** A notification came (events were committed) since the last step began. */
  private notified = false;
  /**
   * Following a notification whose events the last read did not find: an older transaction (anywhere on the server)
   * may still hold them back, and nothing notifies when it ends. Read again soon, with backoff, while the store
   * reports events held back (see {@link idleTime}).
   */
  private chase: { retries: number; rechecked: boolean } | null = null;
  private pendingReset: Position | undefined;
  private leaseRenewedAt = 0;
  private progressListeners = new Set<() => void>();
  /** Calls of waitFor in progress (see SubscriptionStatus.waiting). */
  private waiting = 0;
  private unsubscribe: (() => void) | null = null;
  private persisted: Position | null = null;
  private persistedAt = 0;
  /** The checkpoint moved past handled events (with checkpointIntervalMs) and is not stored yet. */
  private unsaved = false;
  private readonly checkpointInterval: number;
  /** The next page, read while the current batch is handled (catching up only); used when the checkpoint lands on `after`. */
  private prefetched: { after: Position; page: Promise<LogPage<E>> } | null = null;

  constructor(private readonly options: LogSubscriptionOptions<Tx, E>) {
    if (!/^[A-Za-z0-9_.:-]{1,150}$/.test(options.name))
      throw new ValidationError(
        `Subscription name '${options.name}' must be 1-150 letters, digits, '_', '.', ':' or '-'`,
      );
    const partition = options.partition;
    if (
      partition &&
      !(
        Number.isInteger(partition.count) &&
        partition.count >= 1 &&
        Number.isInteger(partition.index) &&
        partition.index >= 0 &&
        partition.index < partition.count
      )
    ) {
      throw new ValidationError(`Subscription '${options.name}': partition must be { count ≥ 1, 0 ≤ index < count }`);
    }
    if (
      options.from !== undefined &&
      options.from !== 'beginning' &&
      options.from !== 'end' &&
      !isPosition(options.from)
    ) {
      throw new ValidationError(`Subscription '${options.name}': from must be 'beginning', 'end' or a position`);
    }
    this.name = options.name;
    this.key = partition ? `${options.name}#${partition.index}of${partition.count}` : options.name;
    this.owner = options.lease?.owner ?? newId();
    this.ttl = options.lease?.ttlMs ?? 10_000;
    this.batchSize = options.batchSize ?? 100;
    this.poll = Math.min(options.pollIntervalMs ?? 1000, this.ttl / 3);
    this.maxAttempts = options.retry?.maxAttempts ?? 5;
    this.baseDelay = options.retry?.baseDelayMs ?? 100;
    this.maxDelay = options.retry?.maxDelayMs ?? 5000;
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    const interval = options.checkpointIntervalMs ?? 0;
    if (!(Number.isFinite(interval) && interval >= 0))
      throw new ValidationError(
        `Subscription '${options.name}': checkpointIntervalMs must be a number of ms, 0 or more`,
      );
    if (interval > 0 && options.transactional !== false) {
      throw new ValidationError(
        `Subscription '${options.name}': checkpointIntervalMs needs transactional: false (a transactional checkpoint commits with the handler's writes)`,
      );
    }
    this.checkpointInterval = interval;
  }

  start(): void {
    if (this.loop) return;
    this.state = 'standby';
    this.failure = null;
    this.unsubscribe = this.options.subscriptions.onAppended(() => {
      this.notified = true;
      if (this.chase) this.chase.retries = 0; // new commits: follow them quickly again
      this.wake();
    });
    this.loop = this.run().finally(() => {
      this.unsubscribe?.();
      this.unsubscribe = null;
    });
  }

  async stop(): Promise<void> {
    const loop = this.loop;
    if (!loop) return;
    if (this.state !== 'failed') this.state = 'stopped';
    this.wake();
    await loop;
    this.loop = null;
    if (this.checkpoint && this.checkpoint !== this.persisted) {
      await this.commit({ position: this.checkpoint }, async () => undefined).catch(() => undefined); // best effort: we may have lost the lease
    }
    await this.options.subscriptions.releaseLease(this.key, this.owner).catch(() => undefined);
  }

  pause(): void {
    if (this.loop && this.state !== 'failed' && this.state !== 'stopped') this.state = 'paused';
  }

  resume(): void {
    if (this.state === 'paused') {
      this.state = 'standby';
      this.wake();
    }
  }

  async reset(to: 'beginning' | 'end' | Position): Promise<void> {
    const position = to === 'beginning' ? START : to === 'end' ? await this.options.store.headPosition() : to;
    if (!isPosition(position))
      throw new ValidationError(`Subscription '${this.name}': reset takes 'beginning', 'end' or a position`);
    if (this.loop && this.state !== 'failed' && this.state !== 'stopped') {
      this.pendingReset = position;
      this.prefetched = null;
      this.wake();
      return;
    }
    await this.options.subscriptions.setCheckpoint(this.key, position);
    this.checkpoint = position;
  }

  async status(): Promise<SubscriptionStatus> {
    const checkpoint =
      this.checkpoint === undefined ? await this.options.subscriptions.checkpoint(this.key) : this.checkpoint;
    let events = 0;
    let seconds = 0;
    let after = checkpoint ?? START;
    for (;;) {
      const page = await this.options.store.readAllPage({
        after,
        limit: 1000,
        ...(this.options.filter ? { filter: this.options.filter } : {}),
      });
      const mine = page.events.filter((event) => this.inPartition(event));
      if (events === 0 && mine[0]) seconds = Math.max(0, (Date.now() - mine[0].recordedAt.getTime()) / 1000);
      events += mine.length;
      if (page.atEnd || events >= LAG_CAP) break;
      after = page.next;
    }
    return {
      name: this.name,
      state: this.state,
      checkpoint,
      lag: { events: Math.min(events, LAG_CAP), capped: events >= LAG_CAP, seconds },
      parked: (await this.options.subscriptions.parked(this.key)).length,
      owner: this.owner,
      failure: this.failure ? { name: this.failure.name, message: this.failure.message } : null,
      waiting: this.waiting,
    };
  }

  async waitFor(position: Position, options: WaitForOptions = {}): Promise<void> {
    if (!isPosition(position))
      throw new ValidationError(`Subscription '${this.name}': waitFor takes a position, got ${safeQuote(position)}`);
    const timeoutMs = options.timeoutMs ?? 5000;
    // NaN would never time out and poll without pause; a negative wait is a caller's mistake, not a timeout.
    if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) {
      throw new ValidationError(
        `Subscription '${this.name}': waitFor's timeoutMs must be a number of ms, 0 or more (or Infinity), got ${safeQuote(timeoutMs)}`,
      );
    }
    const signal = options.signal;
    signal?.throwIfAborted();
    const deadline = Date.now() + timeoutMs;
    this.waiting++;
    try {
      for (;;) {
        // Another instance may hold the lease: then the stored checkpoint is the truth.
        const checkpoint =
          this.loop && this.state === 'running'
            ? (this.checkpoint ?? null)
            : await this.options.subscriptions.checkpoint(this.key);
        signal?.throwIfAborted();
        if (checkpoint !== null && checkpoint >= position) return;
        const left = deadline - Date.now();
        if (left <= 0) throw new WaitTimeoutError(this.name, position, timeoutMs);
        await new Promise<void>((resolve, reject) => {
          const listeners = this.progressListeners;
          const timer = setTimeout(done, Math.min(left, 100));
          function settle() {
            clearTimeout(timer);
            listeners.delete(done);
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
          listeners.add(done);
          signal?.addEventListener('abort', aborted, { once: true });
        });
      }
    } finally {
      this.waiting--;
    }
  }

  async catchUp(): Promise<void> {
    if (!(await this.options.subscriptions.acquireLease(this.key, this.owner, this.ttl))) {
      throw new LeaseLostError(this.key, this.owner);
    }
    this.leaseRenewedAt = Date.now();
    const head = await this.options.store.headPosition();
    for (;;) {
      const { atEnd, next } = await this.step();
      if (atEnd || next >= head) return;
    }
  }

  async parked(): Promise<ParkedEvent[]> {
    return this.options.subscriptions.parked(this.key);
  }

  async retryParked(eventId: string): Promise<void> {
    const parked = (await this.options.subscriptions.parked(this.key)).find((entry) => entry.event.id === eventId);
    if (!parked) throw new ValidationError(`Subscription '${this.name}' has no parked event ${eventId}`);
    if (!(await this.options.subscriptions.acquireLease(this.key, this.owner, this.ttl)))
      throw new LeaseLostError(this.key, this.owner);
    await this.commit({ unpark: eventId }, async (tx) => {
      // Parked events exist only for subscriptions over RecordedEvents (createLogSubscription refuses to park).
      await this.options.handle(parked.event as unknown as E, {
        tx,
        subscription: this.name,
        attempt: parked.attempts + 1,
      });
    });
  }

  private wake() {
    const wake = this.wakeUp;
    this.wakeUp = null;
    if (wake) wake();
    else this.woken = true;
  }

  private idle(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeUp = null;
        resolve();
      }, ms);
      this.wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private get active(): boolean {
    return this.state !== 'stopped' && this.state !== 'failed';
  }

  private async run(): Promise<void> {
    let errors = 0;
    while (this.active) {
      try {
        if (this.state === 'paused') {
          await this.idle(this.poll);
          continue;
        }
        if (!(await this.renewLease())) {
          this.state = 'standby';
          this.unsaved = false;
          this.checkpoint = undefined; // the holder moves it; reload when we take over
          this.prefetched = null;
          await this.idle(this.poll);
          continue;
        }
        if (this.state === 'standby') this.state = 'running';
        // This step reads what was committed before it: only a later wake-up or notification matters.
        this.woken = false;
        const notified = this.notified || this.chase !== null;
        this.notified = false;
        const { atEnd, handled } = await this.step();
        errors = 0;
        if (atEnd && this.active) await this.idle(await this.idleTime(notified && handled === 0));
        // An embedded database answers without going back to the event loop: let timers and I/O in between batches.
        else await new Promise((resolve) => setImmediate(resolve));
      } catch (error) {
        if (!this.active) break;
        if (error instanceof LeaseLostError) {
          this.state = 'standby';
          this.unsaved = false;
          this.checkpoint = undefined;
          this.prefetched = null;
          this.leaseRenewedAt = 0;
          continue;
        }
        errors++;
        this.options.onError?.(error, this.name);
        await this.idle(Math.min(this.maxDelay, this.baseDelay * 2 ** Math.min(errors, 10)));
      }
    }
  }

  /**
   * How long to wait for a wake-up when caught up: the poll interval, or much less when a notification's events were
   * not found (`missed`) and the store reports events held back by an older open transaction: every few ms for the
   * first half second, then backing off to the poll interval. When none is held back (the transaction may have ended
   * between the read and this check), read once more at once before waiting the poll interval.
   */
  private async idleTime(missed: boolean): Promise<number> {
    if (!missed) {
      this.chase = null;
      return this.poll;
    }
    const chase = (this.chase ??= { retries: 0, rechecked: false });
    if ((await this.options.store.readAllHoldback()).heldBackEvents > 0) {
      const n = chase.retries++;
      chase.rechecked = false;
      const delay =
        n < HOLDBACK_FAST_RETRIES
          ? Math.min(HOLDBACK_FAST_MS, 2 * 2 ** n)
          : HOLDBACK_FAST_MS * 2 ** Math.min(n - HOLDBACK_FAST_RETRIES + 1, 10);
      return Math.min(this.poll, delay);
    }
    if (!chase.rechecked) {
      chase.rechecked = true;
      return 0;
    }
    this.chase = null;
    return this.poll;
  }

  private async renewLease(): Promise<boolean> {
    if (this.leaseRenewedAt !== 0 && Date.now() - this.leaseRenewedAt < this.ttl / 3) return true;
    const held = await this.options.subscriptions.acquireLease(this.key, this.owner, this.ttl);
    this.leaseRenewedAt = held ? Date.now() : 0;
    return held;
  }

  private async currentCheckpoint(): Promise<Position> {
    if (this.pendingReset !== undefined) {
      const position = this.pendingReset;
      this.pendingReset = undefined;
      await this.commit({ position }, async () => undefined);
    }
    if (this.checkpoint === undefined) this.checkpoint = await this.options.subscriptions.checkpoint(this.key);
    if (this.checkpoint === null) {
      const from = this.options.from ?? 'beginning';
      const start = from === 'beginning' ? START : from === 'end' ? await this.options.store.headPosition() : from;
      // Commit the starting point, so that a restart of an 'end' subscription does not jump forward again.
      await this.commit({ position: start }, async () => undefined);
    }
    return this.checkpoint as Position;
  }

  /** One batch: read a page after the checkpoint, handle it, commit. */
  private async step(): Promise<{ atEnd: boolean; next: Position; handled: number }> {
    const after = await this.currentCheckpoint();
    const page = await this.readPage(after);
    const events = page.events.filter((event) => this.inPartition(event));
    // Catching up (more after this page): read the next page while this batch is handled, so that reading the log
    // and handling it (a broker's confirms, for a publisher) overlap instead of taking turns.
    if (events.length > 0 && !page.atEnd) this.prefetch(page.next);
    if (events.length > 0) await this.handleBatch(events, page.next);
    else if (page.next > after) await this.advance(page.next, !page.atEnd);
    // Caught up: store what was handled since the last stored checkpoint (see checkpointIntervalMs).
    if (page.atEnd && this.unsaved && this.checkpoint)
      await this.commit({ position: this.checkpoint }, async () => undefined);
    // A batch cut short by a failing event is not the end: the rest is read again from the checkpoint.
    const reached = this.checkpoint ?? after;
    return { atEnd: page.atEnd && reached >= page.next, next: reached, handled: events.length };
  }

  private readPage(after: Position): Promise<LogPage<E>> {
    const prefetched = this.prefetched;
    this.prefetched = null;
    if (prefetched && prefetched.after === after) return prefetched.page;
    return this.options.read({
      after,
      limit: this.batchSize,
      ...(this.options.filter ? { filter: this.options.filter } : {}),
    });
  }

  private prefetch(after: Position): void {
    const page = this.options.read({
      after,
      limit: this.batchSize,
      ...(this.options.filter ? { filter: this.options.filter } : {}),
    });
    page.catch(() => undefined); // a failed read ahead is read again when its turn comes
    this.prefetched = { after, page };
  }

  private async handleBatch(events: E[], next: Position): Promise<void> {
    let failedAt = -1;
    try {
      await this.commit({ position: next, deferrable: true }, async (tx) => {
        const handleBatch = this.options.handleBatch;
        if (handleBatch) {
          failedAt = 0;
          await handleBatch(events, { tx, subscription: this.name, attempt: 1 });
          return;
        }
        for (const [index, event] of events.entries()) {
          failedAt = index;
          await this.options.handle(event, { tx, subscription: this.name, attempt: 1 });
        }
      });
      return;
    } catch (error) {
      if (error instanceof LeaseLostError || failedAt < 0) throw error;
      this.options.onError?.(error, this.name);
    }
    // The batch failed at events[failedAt]. Commit what came before it (again, when the failed commit rolled it back),
    // then retry the failing event alone and park it or stop; the next step reads on from the checkpoint.
    const before = events.slice(0, failedAt);
    if (before.length > 0) {
      const position = before[before.length - 1]!.position;
      await this.commit({ position }, async (tx) => {
        if (this.options.subscriptions.atomic && this.options.transactional !== false)
          for (const event of before) await this.options.handle(event, { tx, subscription: this.name, attempt: 1 });
      });
    }
    await this.handleOne(events[failedAt]!);
  }

  /** Retries one event that failed its first attempt, then parks it or stops the subscription. */
  private async handleOne(event: E): Promise<void> {
    let lastError: unknown;
    for (let attempt = 2; attempt <= this.maxAttempts; attempt++) {
      if (!this.active) return;
      await this.sleep(Math.random() * Math.min(this.maxDelay, this.baseDelay * 2 ** (attempt - 2)));
      try {
        await this.commit({ position: event.position }, async (tx) => {
          await this.options.handle(event, { tx, subscription: this.name, attempt });
        });
        return;
      } catch (error) {
        if (error instanceof LeaseLostError) throw error;
        lastError = error;
        if (attempt < this.maxAttempts) this.options.onError?.(error, this.name);
      }
    }
    if (lastError === undefined) lastError = new Error('the handler failed (with retries disabled)');
    const asError = lastError instanceof Error ? lastError : new Error(String(lastError));
    if ((this.options.onFailure ?? 'park') === 'stop') {
      this.failure = asError;
      this.state = 'failed';
      this.options.onError?.(asError, this.name);
      return;
    }
    const park: ParkedEvent = {
      subscription: this.key,
      event: event as unknown as RecordedEvent, // only subscriptions over RecordedEvents park (see createLogSubscription)
      error: { name: asError.name, message: asError.message, stack: asError.stack },
      attempts: this.maxAttempts,
      parkedAt: new Date(),
    };
    await this.commit({ position: event.position, park }, async () => undefined);
    this.options.onParked?.(park);
  }

  /**
   * Runs `work` and moves the checkpoint to `position`, parks `park` and unparks `unpark`, fenced by the lease: in one
   * transaction, or (`transactional: false`) `work` first, with no transaction open, then the rest alone.
   */
  private async commit(
    { deferrable, ...args }: { position?: Position; park?: ParkedEvent; unpark?: string; deferrable?: boolean },
    work: (tx: Tx) => Promise<void>,
  ): Promise<void> {
    const subscriptions = this.options.subscriptions;
    if (this.options.transactional !== false)
      await subscriptions.commit({ name: this.key, owner: this.owner, ...args }, work);
    else {
      await work(undefined as Tx);
      if (
        deferrable &&
        args.position !== undefined &&
        this.checkpointInterval > 0 &&
        Date.now() - this.persistedAt < this.checkpointInterval
      ) {
        // Handled: moves on in memory now, stored with a later batch, when caught up, or at stop.
        this.unsaved = true;
        this.moveTo(args.position);
        return;
      }
      if (args.position !== undefined && !args.park && args.unpark === undefined && subscriptions.moveCheckpoint) {
        await subscriptions.moveCheckpoint({ name: this.key, owner: this.owner, position: args.position });
      } else await subscriptions.commit({ name: this.key, owner: this.owner, ...args }, async () => undefined);
    }
    if (args.position !== undefined) {
      this.persisted = args.position;
      this.persistedAt = Date.now();
      this.unsaved = false;
      this.moveTo(args.position);
    }
  }

  /**
   * Moves past a stretch with nothing to handle (filtered out, or only other transactions' numbers). In memory at once;
   * stored at most every few seconds (or when asked), since a restart from the stored one only re-reads that stretch.
   * Storing it on every poll would write a transaction per poll, and each one would move the boundary again.
   */
  private async advance(position: Position, persistNow: boolean): Promise<void> {
    if (persistNow || Date.now() - this.persistedAt >= PERSIST_IDLE_CHECKPOINT_MS) {
      await this.commit({ position }, async () => undefined);
      return;
    }
    this.moveTo(position);
  }

  /** The checkpoint in memory (where the next batch reads from, what `waitFor` sees) moves to `position`. */
  private moveTo(position: Position): void {
    this.checkpoint = position;
    for (const listener of [...this.progressListeners]) listener();
  }

  private inPartition(event: { readonly streamId: string }): boolean {
    const partition = this.options.partition;
    return !partition || partition.count === 1 || partitionOf(event.streamId, partition.count) === partition.index;
  }
}
