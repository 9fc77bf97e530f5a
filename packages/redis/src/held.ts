import type { TransportMessage } from '@eventline/core';
import { compareEntryIds } from './ids.js';

/** An entry a consumer holds in the group (it is in the group's pending list under the consumer's name). */
export interface HeldEntry {
  readonly entryId: string;
  readonly message: TransportMessage;
  /** Its stream's key in the group's order index (`<prefix>:order:<group>:<streamId>`). */
  readonly orderKey: string;
  /** No earlier entry of its stream is pending in the group: it may run. */
  readonly head: boolean;
  /** The delivery count Redis keeps for it. */
  readonly deliveries: number;
  /** When a failed entry is due again, on the consumer's clock (0: it did not fail). */
  readonly retryAt: number;
  /** The handler succeeded; only the acknowledgement is left. */
  readonly handled: boolean;
  /** The handler was given it (at least once) by this consumer. */
  readonly started: boolean;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The entries one consumer holds, in stream order, and what it knows of each. */
export class HeldEntries {
  private entries: Array<Mutable<HeldEntry>> = [];

  get size(): number {
    return this.entries.length;
  }

  ids(): string[] {
    return this.entries.map((entry) => entry.entryId);
  }

  /** Holds an entry read or claimed from the group; one held already learns its head status and delivery count. */
  hold(entryId: string, message: TransportMessage, orderKey: string, head: boolean, deliveries: number): void {
    const known = this.find(entryId);
    if (known) {
      known.head ||= head;
      known.deliveries = Math.max(known.deliveries, deliveries);
      return;
    }
    const entry = { entryId, message, orderKey, head, deliveries, retryAt: 0, handled: false, started: false };
    const at = this.entries.findIndex((other) => compareEntryIds(other.entryId, entryId) > 0);
    if (at < 0) this.entries.push(entry);
    else this.entries.splice(at, 0, entry);
  }

  drop(entryId: string): void {
    this.entries = this.entries.filter((entry) => entry.entryId !== entryId);
  }

  clear(): void {
    this.entries = [];
  }

  /** The first entry, in stream order, that may run at `now`: handled (to acknowledge), or a head not waiting to retry. */
  runnable(now: number): HeldEntry | undefined {
    return this.entries.find((entry) => entry.handled || (entry.head && entry.retryAt <= now));
  }

  /** Entries that are the first of their stream in this consumer and wait behind another member's entry. */
  waiting(): HeldEntry[] {
    const seen = new Set<string>();
    const out: HeldEntry[] = [];
    for (const entry of this.entries) {
      if (seen.has(entry.orderKey)) continue;
      seen.add(entry.orderKey);
      if (!entry.head && !entry.handled) out.push(entry);
    }
    return out;
  }

  /** The earliest time a failed entry is due again, or undefined. */
  nextRetryAt(): number | undefined {
    let next: number | undefined;
    for (const entry of this.entries) if (entry.retryAt > 0) next = Math.min(next ?? entry.retryAt, entry.retryAt);
    return next;
  }

  handledEntries(): HeldEntry[] {
    return this.entries.filter((entry) => entry.handled);
  }

  unstartedEntries(): HeldEntry[] {
    return this.entries.filter((entry) => !entry.started);
  }

  /** An entry became the head of its stream: if this consumer holds it, it may run. */
  markHead(entryId: string): void {
    const entry = entryId ? this.find(entryId) : undefined;
    if (entry) entry.head = true;
  }

  markStarted(entryId: string): void {
    const entry = this.find(entryId);
    if (entry) entry.started = true;
  }

  markHandled(entryId: string): void {
    const entry = this.find(entryId);
    if (entry) entry.handled = true;
  }

  /** The handler failed: the entry stays pending, and its stream waits for it until `at`. */
  scheduleRetry(entryId: string, at: number): void {
    const entry = this.find(entryId);
    if (entry) entry.retryAt = at;
  }

  /** Redis counted the retry's delivery: it runs now. */
  retrying(entryId: string, deliveries: number): void {
    const entry = this.find(entryId);
    if (!entry) return;
    entry.deliveries = deliveries;
    entry.retryAt = 0;
  }

  /** Redis says these entries are no longer this consumer's: forget those not handled yet. */
  forgetLost(entryIds: readonly string[]): void {
    for (const id of entryIds) {
      const entry = this.find(id);
      if (entry && !entry.handled) this.drop(entry.entryId);
    }
  }

  private find(entryId: string): Mutable<HeldEntry> | undefined {
    return this.entries.find((entry) => entry.entryId === entryId);
  }
}
