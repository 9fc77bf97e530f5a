import { partitionOf } from '../hash.js';
import type { Position } from '../position.js';
import type { ReadAllFilter } from '../store/contract.js';

/** What the engine needs of an item of the log it reads. */
export interface LogItem {
  readonly id: string;
  readonly streamId: string;
  readonly position: Position;
}

/** A page of the log: its items, where the next page starts, and whether it reached the end. */
export type LogPage<E> = { readonly events: E[]; readonly next: Position; readonly atEnd: boolean };

/** Reads one page of the log (the paging contract of `readAllPage`). */
export type LogReader<E> = (page: { after: Position; limit: number; filter?: ReadAllFilter }) => Promise<LogPage<E>>;

/**
 * Reads a subscription's share of the log page by page: its filter, its partition of the streams, and a read ahead of
 * the next page while the current one is handled.
 */
export class LogFollower<E extends LogItem> {
  /** The next page, read while the current batch is handled (catching up only); used when the checkpoint lands on `after`. */
  private prefetched: { after: Position; page: Promise<LogPage<E>> } | null = null;

  constructor(
    private readonly args: {
      readonly read: LogReader<E>;
      readonly batchSize: number;
      readonly filter?: ReadAllFilter | undefined;
      readonly partition?: { readonly count: number; readonly index: number } | undefined;
    },
  ) {}

  /** The page after `after`: the one read ahead when it starts there, else read now. */
  readPage(after: Position): Promise<LogPage<E>> {
    const prefetched = this.prefetched;
    this.prefetched = null;
    if (prefetched && prefetched.after === after) return prefetched.page;
    return this.read(after);
  }

  /** Reads the page after `after` ahead, so that reading the log and handling it overlap instead of taking turns. */
  readAhead(after: Position): void {
    const page = this.read(after);
    page.catch(() => undefined); // a failed read ahead is read again when its turn comes
    this.prefetched = { after, page };
  }

  /** Drops the page read ahead (the checkpoint moved elsewhere: a reset, a lost lease). */
  dropReadAhead(): void {
    this.prefetched = null;
  }

  /** Whether the subscription's partition holds this item's stream. */
  inPartition(item: { readonly streamId: string }): boolean {
    const partition = this.args.partition;
    return !partition || partition.count === 1 || partitionOf(item.streamId, partition.count) === partition.index;
  }

  private read(after: Position): Promise<LogPage<E>> {
    return this.args.read({
      after,
      limit: this.args.batchSize,
      ...(this.args.filter ? { filter: this.args.filter } : {}),
    });
  }
}
