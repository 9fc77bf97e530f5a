import { systemClock, type Clock } from '../clock.js';
import { toError, ValidationError } from '../errors.js';
import type { RecordedEvent } from '../event.js';
import { newId } from '../ids.js';
import { isPosition, START, type Position } from '../position.js';
import { Checkpoints } from './checkpoints.js';
import { LeaseLostError, type ParkedEvent } from './contract.js';
import type {
  LogSubscriptionOptions,
  Subscription,
  SubscriptionState,
  SubscriptionStatus,
  WaitForOptions,
} from './engine.js';
import { LogFollower, type LogItem } from './log-follower.js';
import { Idling, waitForPosition } from './waiting.js';

const LAG_CAP = 10_000;

/**
 * The loop of a subscription: takes and renews the lease, reads a batch after the checkpoint, handles it, commits,
 * and rests when caught up; retries a failing event alone, then parks it or stops.
 */
export class SubscriptionRunner<Tx, E extends LogItem> implements Subscription {
  readonly name: string;
  private readonly key: string;
  private readonly owner: string;
  private readonly ttl: number;
  private readonly maxAttempts: number;
  private readonly baseDelay: number;
  private readonly maxDelay: number;
  private readonly clock: Clock;
  private readonly checkpoints: Checkpoints<Tx>;
  private readonly follower: LogFollower<E>;
  private readonly idling: Idling;
  /** Called each time the checkpoint in memory moves (the waits of `waitFor`). */
  private readonly progressListeners = new Set<() => void>();
  private state: SubscriptionState = 'idle';
  private failure: Error | null = null;
  private loop: Promise<void> | null = null;
  /** Aborted by `stop`: cuts a retry's backoff short. */
  private halt = new AbortController();
  private pendingReset: Position | undefined;
  private leaseRenewedAt = 0;
  /** Calls of waitFor in progress (see SubscriptionStatus.waiting). */
  private waiting = 0;
  private unsubscribe: (() => void) | null = null;

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
    this.name = options.name;
    this.key = partition ? `${options.name}#${partition.index}of${partition.count}` : options.name;
    this.owner = options.lease?.owner ?? newId();
    this.ttl = options.lease?.ttlMs ?? 10_000;
    this.maxAttempts = options.retry?.maxAttempts ?? 5;
    this.baseDelay = options.retry?.baseDelayMs ?? 100;
    this.maxDelay = options.retry?.maxDelayMs ?? 5000;
    this.clock = options.clock ?? systemClock;
    this.checkpoints = new Checkpoints<Tx>({
      key: this.key,
      owner: this.owner,
      subscriptions: options.subscriptions,
      transactional: options.transactional !== false,
      intervalMs: interval,
      clock: this.clock,
      onMoved: () => {
        for (const listener of [...this.progressListeners]) listener();
      },
    });
    this.follower = new LogFollower<E>({
      read: options.read,
      batchSize: options.batchSize ?? 100,
      filter: options.filter,
      partition,
    });
    this.idling = new Idling(this.clock, options.store, Math.min(options.pollIntervalMs ?? 1000, this.ttl / 3));
  }

  start(): void {
    if (this.loop) return;
    this.state = 'standby';
    this.failure = null;
    this.halt = new AbortController();
    this.unsubscribe = this.options.subscriptions.onAppended(() => this.idling.notify());
    this.loop = this.run().finally(() => {
      this.unsubscribe?.();
      this.unsubscribe = null;
    });
  }

  async stop(): Promise<void> {
    const loop = this.loop;
    if (!loop) return;
    if (this.state !== 'failed') this.state = 'stopped';
    this.halt.abort();
    this.idling.wake();
    await loop;
    this.loop = null;
    await this.checkpoints.storeAtStop();
    await this.options.subscriptions.releaseLease(this.key, this.owner).catch(() => undefined);
  }

  pause(): void {
    if (this.loop && this.state !== 'failed' && this.state !== 'stopped') this.state = 'paused';
  }

  resume(): void {
    if (this.state === 'paused') {
      this.state = 'standby';
      this.idling.wake();
    }
  }

  async reset(to: 'beginning' | 'end' | Position): Promise<void> {
    const position = to === 'beginning' ? START : to === 'end' ? await this.options.store.headPosition() : to;
    if (!isPosition(position))
      throw new ValidationError(`Subscription '${this.name}': reset takes 'beginning', 'end' or a position`);
    if (this.loop && this.active) {
      this.pendingReset = position;
      this.follower.dropReadAhead();
      this.idling.wake();
      return;
    }
    await this.checkpoints.set(position);
  }

  async status(): Promise<SubscriptionStatus> {
    const inMemory = this.checkpoints.current;
    const checkpoint = inMemory === undefined ? await this.options.subscriptions.checkpoint(this.key) : inMemory;
    let events = 0;
    let seconds = 0;
    let after = checkpoint ?? START;
    for (;;) {
      const page = await this.options.store.readAllPage({
        after,
        limit: 1000,
        ...(this.options.filter ? { filter: this.options.filter } : {}),
      });
      const mine = page.events.filter((event) => this.follower.inPartition(event));
      if (events === 0 && mine[0]) seconds = Math.max(0, (this.clock.now() - mine[0].recordedAt.getTime()) / 1000);
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
    this.waiting++;
    try {
      await waitForPosition({
        subscription: this.name,
        position,
        options,
        clock: this.clock,
        progress: this.progressListeners,
        // Another instance may hold the lease: then the stored checkpoint is the truth.
        checkpoint: () =>
          this.loop && this.state === 'running'
            ? (this.checkpoints.current ?? null)
            : this.options.subscriptions.checkpoint(this.key),
      });
    } finally {
      this.waiting--;
    }
  }

  async catchUp(): Promise<void> {
    if (!(await this.options.subscriptions.acquireLease(this.key, this.owner, this.ttl))) {
      throw new LeaseLostError(this.key, this.owner);
    }
    this.leaseRenewedAt = this.clock.now();
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
    await this.checkpoints.commit({ unpark: eventId }, async (tx) => {
      // Parked events exist only for subscriptions over RecordedEvents (createLogSubscription refuses to park).
      await this.options.handle(parked.event as unknown as E, {
        tx,
        subscription: this.name,
        attempt: parked.attempts + 1,
      });
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
          await this.idling.restPoll();
          continue;
        }
        if (!(await this.renewLease())) {
          this.state = 'standby';
          this.standBy();
          await this.idling.restPoll();
          continue;
        }
        if (this.state === 'standby') this.state = 'running';
        const notified = this.idling.beginStep();
        const { atEnd, handled } = await this.step();
        errors = 0;
        if (atEnd && this.active) await this.idling.restAfterStep(notified && handled === 0);
        // An embedded database answers without going back to the event loop: let timers and I/O in between batches.
        else await new Promise((resolve) => setImmediate(resolve));
      } catch (error) {
        if (!this.active) break;
        if (error instanceof LeaseLostError) {
          this.state = 'standby';
          this.standBy();
          this.leaseRenewedAt = 0;
          continue;
        }
        errors++;
        this.options.onError?.(error, this.name);
        await this.idling.rest(Math.min(this.maxDelay, this.baseDelay * 2 ** Math.min(errors, 10)));
      }
    }
  }

  /** Another instance holds the lease: it moves the checkpoint; reload it when we take over. */
  private standBy(): void {
    this.checkpoints.forget();
    this.follower.dropReadAhead();
  }

  private async renewLease(): Promise<boolean> {
    if (this.leaseRenewedAt !== 0 && this.clock.now() - this.leaseRenewedAt < this.ttl / 3) return true;
    const held = await this.options.subscriptions.acquireLease(this.key, this.owner, this.ttl);
    this.leaseRenewedAt = held ? this.clock.now() : 0;
    return held;
  }

  private async currentCheckpoint(): Promise<Position> {
    if (this.pendingReset !== undefined) {
      const position = this.pendingReset;
      this.pendingReset = undefined;
      await this.checkpoints.store(position);
    }
    const checkpoint = await this.checkpoints.load();
    if (checkpoint !== null) return checkpoint;
    const from = this.options.from ?? 'beginning';
    const start = from === 'beginning' ? START : from === 'end' ? await this.options.store.headPosition() : from;
    // Commit the starting point, so that a restart of an 'end' subscription does not jump forward again.
    await this.checkpoints.store(start);
    return start;
  }

  /** One batch: read a page after the checkpoint, handle it, commit. */
  private async step(): Promise<{ atEnd: boolean; next: Position; handled: number }> {
    const after = await this.currentCheckpoint();
    const page = await this.follower.readPage(after);
    const events = page.events.filter((event) => this.follower.inPartition(event));
    // Catching up (more after this page): read the next page while this batch is handled, so that reading the log
    // and handling it (a broker's confirms, for a publisher) overlap instead of taking turns.
    if (events.length > 0 && !page.atEnd) this.follower.readAhead(page.next);
    if (events.length > 0) await this.handleBatch(events, page.next);
    else if (page.next > after) await this.checkpoints.skipTo(page.next, !page.atEnd);
    if (page.atEnd) await this.checkpoints.storeUnsaved();
    // A batch cut short by a failing event is not the end: the rest is read again from the checkpoint.
    const reached = this.checkpoints.current ?? after;
    return { atEnd: page.atEnd && reached >= page.next, next: reached, handled: events.length };
  }

  private async handleBatch(events: E[], next: Position): Promise<void> {
    let failedAt = -1;
    try {
      await this.checkpoints.commit({ position: next, deferrable: true }, async (tx) => {
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
      await this.checkpoints.commit({ position }, async (tx) => {
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
      const backoff = Math.random() * Math.min(this.maxDelay, this.baseDelay * 2 ** (attempt - 2));
      await this.clock.sleep(backoff, this.halt.signal);
      // Stopped during the backoff: the event stays after the checkpoint, for the next start.
      if (!this.active) return;
      try {
        await this.checkpoints.commit({ position: event.position }, async (tx) => {
          await this.options.handle(event, { tx, subscription: this.name, attempt });
        });
        return;
      } catch (error) {
        if (error instanceof LeaseLostError) throw error;
        lastError = error;
        if (attempt < this.maxAttempts) this.options.onError?.(error, this.name);
      }
    }
    const failure =
      lastError === undefined ? new Error('the handler failed (with retries disabled)') : toError(lastError);
    if ((this.options.onFailure ?? 'park') === 'stop') {
      this.failure = failure;
      this.state = 'failed';
      this.options.onError?.(failure, this.name);
      return;
    }
    const park: ParkedEvent = {
      subscription: this.key,
      event: event as unknown as RecordedEvent, // only subscriptions over RecordedEvents park (see createLogSubscription)
      error: { name: failure.name, message: failure.message, stack: failure.stack },
      attempts: this.maxAttempts,
      parkedAt: new Date(this.clock.now()),
    };
    await this.checkpoints.commit({ position: event.position, park }, async () => undefined);
    this.options.onParked?.(park);
  }
}
