import { EventlineError } from '../errors.js';
import type { RecordedEvent } from '../event.js';
import type { Position } from '../position.js';

/** An event a subscription gave up on after its retries, with the error, kept for listing and retrying. */
export interface ParkedEvent {
  readonly subscription: string;
  readonly event: RecordedEvent;
  readonly error: { readonly name: string; readonly message: string; readonly stack?: string | undefined };
  readonly attempts: number;
  readonly parkedAt: Date;
}

/**
 * Where subscriptions keep their state: checkpoints, leases and parked events, and the transaction in which a batch's
 * effects and its checkpoint commit together. `Tx` is what handlers get to write through (a SQL client for PostgreSQL).
 * In-memory: `createInMemorySubscriptionStore`; PostgreSQL and PGlite: `@eventline/postgres`.
 */
export interface SubscriptionStore<Tx = unknown> {
  /**
   * True when `commit` rolls back what handlers wrote through `tx` if it fails (PostgreSQL), so a failed batch leaves no
   * effect; false when effects stay (in memory), so the engine commits the events handled before the failing one.
   */
  readonly atomic: boolean;
  /** The stored checkpoint of a subscription, or null when it never committed. */
  checkpoint(name: string): Promise<Position | null>;
  /**
   * Runs `work` and then moves the checkpoint to `position` (when given) and records `park` (when given), all in one
   * transaction. Fenced: when `owner` no longer holds the lease, nothing commits and {@link LeaseLostError} is thrown.
   */
  commit<T>(
    args: { name: string; owner: string; position?: Position; park?: ParkedEvent; unpark?: string },
    work: (tx: Tx) => Promise<T>,
  ): Promise<T>;
  /**
   * Optional: moves the checkpoint with no work to commit, fenced like {@link commit} (throws {@link LeaseLostError}
   * when `owner` no longer holds the lease), in one statement where the store can. Subscriptions whose handlers write
   * nothing through `tx` (`transactional: false`: publishers) use it after their handler; without it they call
   * `commit` with no work.
   */
  moveCheckpoint?(args: { name: string; owner: string; position: Position }): Promise<void>;
  /** Sets (or with null, clears) a checkpoint, outside any lease: for resets by an operator. */
  setCheckpoint(name: string, position: Position | null): Promise<void>;
  /** Acquires the lease for `owner`, or renews it when `owner` already holds it. False when another owner holds it. */
  acquireLease(name: string, owner: string, ttlMs: number): Promise<boolean>;
  releaseLease(name: string, owner: string): Promise<void>;
  /** Parked events of a subscription, oldest first. */
  parked(name: string): Promise<ParkedEvent[]>;
  /** A best-effort wake-up when events are appended (subscribers also poll). Returns a function that unsubscribes. */
  onAppended(listener: () => void): () => void;
  close(): Promise<void>;
}

/** The lease of a subscription was taken over by another instance; this instance's uncommitted batch was rolled back. */
export class LeaseLostError extends EventlineError {
  readonly code = 'LEASE_LOST' as const;
  constructor(
    readonly subscription: string,
    readonly owner: string,
  ) {
    super(
      `Subscription '${subscription}': instance ${owner} lost its lease to another instance; its last batch was not committed and will be processed by the new holder`,
    );
  }
}
