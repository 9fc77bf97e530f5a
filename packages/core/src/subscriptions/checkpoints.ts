import type { Clock } from '../clock.js';
import type { Position } from '../position.js';
import type { ParkedEvent, SubscriptionStore } from './contract.js';

/** A stretch with nothing to handle is stored at most this often (see {@link Checkpoints.skipTo}). */
const PERSIST_IDLE_CHECKPOINT_MS = 5_000;

/** What a commit of the subscription's state does besides running the handlers' work. */
export interface CommitArgs {
  readonly position?: Position;
  readonly park?: ParkedEvent;
  readonly unpark?: string;
  /** A handled batch's checkpoint may be stored later (see `checkpointIntervalMs`). */
  readonly deferrable?: boolean;
}

/**
 * The checkpoint of one subscription (and partition): where the next batch reads from, in memory, and when and how it
 * is stored, fenced by the lease: with the handlers' work in one transaction, or (`transactional: false`) after it,
 * at most once per `intervalMs` while catching up.
 */
export class Checkpoints<Tx> {
  /** undefined: not loaded yet (or given up with the lease). */
  private position: Position | null | undefined;
  private persisted: Position | null = null;
  private persistedAt = 0;
  /** The checkpoint moved past handled events (with an interval) and is not stored yet. */
  private unsaved = false;

  constructor(
    private readonly args: {
      readonly key: string;
      readonly owner: string;
      readonly subscriptions: SubscriptionStore<Tx>;
      readonly transactional: boolean;
      readonly intervalMs: number;
      readonly clock: Clock;
      /** Called each time the checkpoint in memory moves. */
      readonly onMoved: () => void;
    },
  ) {}

  /** The checkpoint in memory: undefined when not loaded, null before the first commit. */
  get current(): Position | null | undefined {
    return this.position;
  }

  /** The checkpoint in memory, loaded from the subscription store the first time. */
  async load(): Promise<Position | null> {
    if (this.position === undefined) this.position = await this.args.subscriptions.checkpoint(this.args.key);
    return this.position;
  }

  /** The lease went to another instance: it moves the checkpoint now; load it again on taking over. */
  forget(): void {
    this.unsaved = false;
    this.position = undefined;
  }

  /** Sets the stored checkpoint outside any lease (a reset while not running). */
  async set(position: Position): Promise<void> {
    await this.args.subscriptions.setCheckpoint(this.args.key, position);
    this.position = position;
  }

  /**
   * Runs `work` and moves the checkpoint to `position`, parks `park` and unparks `unpark`, fenced by the lease: in one
   * transaction, or (`transactional: false`) `work` first, with no transaction open, then the rest alone.
   */
  async commit({ deferrable, ...args }: CommitArgs, work: (tx: Tx) => Promise<void>): Promise<void> {
    const { subscriptions, key: name, owner } = this.args;
    if (this.args.transactional) await subscriptions.commit({ name, owner, ...args }, work);
    else {
      await work(undefined as Tx);
      if (
        deferrable &&
        args.position !== undefined &&
        this.args.intervalMs > 0 &&
        this.args.clock.now() - this.persistedAt < this.args.intervalMs
      ) {
        // Handled: moves on in memory now, stored with a later batch, when caught up, or at stop.
        this.unsaved = true;
        this.moveTo(args.position);
        return;
      }
      if (args.position !== undefined && !args.park && args.unpark === undefined && subscriptions.moveCheckpoint) {
        await subscriptions.moveCheckpoint({ name, owner, position: args.position });
      } else await subscriptions.commit({ name, owner, ...args }, async () => undefined);
    }
    if (args.position !== undefined) {
      this.persisted = args.position;
      this.persistedAt = this.args.clock.now();
      this.unsaved = false;
      this.moveTo(args.position);
    }
  }

  /** Stores `position` with no work. */
  store(position: Position): Promise<void> {
    return this.commit({ position }, async () => undefined);
  }

  /**
   * Moves past a stretch with nothing to handle (filtered out, or only other transactions' numbers). In memory at once;
   * stored at most every few seconds (or when asked), since a restart from the stored one only re-reads that stretch.
   * Storing it on every poll would write a transaction per poll, and each one would move the boundary again.
   */
  async skipTo(position: Position, persistNow: boolean): Promise<void> {
    if (persistNow || this.args.clock.now() - this.persistedAt >= PERSIST_IDLE_CHECKPOINT_MS) {
      await this.store(position);
      return;
    }
    this.moveTo(position);
  }

  /** Caught up: stores what was handled since the last stored checkpoint (see `checkpointIntervalMs`). */
  async storeUnsaved(): Promise<void> {
    if (this.unsaved && this.position) await this.store(this.position);
  }

  /** Stopping: stores the checkpoint in memory when it is ahead of the stored one (best effort: the lease may be gone). */
  async storeAtStop(): Promise<void> {
    if (this.position && this.position !== this.persisted) await this.store(this.position).catch(() => undefined);
  }

  /** The checkpoint in memory (where the next batch reads from, what `waitFor` sees) moves to `position`. */
  private moveTo(position: Position): void {
    this.position = position;
    this.args.onMoved();
  }
}
