/**
 * Group commit for the PostgreSQL store's appends outside transactions.
 *
 * Appends are not sent the moment they are made: the ones made during the same turn of the event loop, and the ones
 * made while `maxInFlight` statements are already at the server, go together in one statement (`append_group`,
 * sql/statements.ts): one round trip, one transaction, one commit for all of them. Each append of a group still succeeds or is
 * refused on its own, with the answer it would have had alone. A writer alone waits one event-loop turn
 * (`setImmediate`): writers whose previous appends just came back make their next ones in promise continuations of the
 * same turn, and those go together. Eight concurrent writers make one statement where they made eight, and the server
 * and the client each spend about half the CPU per append (see bench/README.md).
 *
 * A group never waits for a stream's row that another transaction holds: that append comes back `busy` and is sent
 * alone. If the group's statement fails (a stored id, a deadlock, a lost connection), each append in it is sent again
 * alone: appends are idempotent by event id, so one that the group did store gets that same result back
 * (`duplicate: true`), and none is stored twice. Appends sent alone after a group go to different streams side by
 * side, and to one stream one after the other, in the order they were made: decided in that order, as in the group.
 */
import type { ExpectedVersion } from '@eventline/core';

/** What a group needs of an append: see EncodedAppend in session.ts. */
export interface GroupableAppend {
  readonly streamId: string;
  readonly expectedVersion: ExpectedVersion;
  readonly eventIds: readonly string[];
  /** The batch as a JSON array, as the append statement takes it. */
  readonly batch: string;
}

export interface AppendGroupOptions {
  /** Statements (groups or single appends) at the server at once; appends made meanwhile wait for the next group. */
  readonly maxInFlight: number;
  /** A group closes before the append that would take it over this many events (an append alone may be bigger)... */
  readonly maxEvents: number;
  /** ...or over this many characters of JSON. */
  readonly maxChars: number;
}

export const DEFAULT_APPEND_GROUP_OPTIONS: AppendGroupOptions = { maxInFlight: 4, maxEvents: 1000, maxChars: 4 << 20 };

/** The statement's parameters for a group: see appendGroup in sql/statements.ts. */
export type GroupParameters = [streams: string[], expected: string[], ids: string[], counts: number[], events: string];

interface Waiting<A> {
  readonly item: A;
  readonly resolve: (line: string) => void;
  readonly reject: (error: unknown) => void;
}

/** Groups appends (see the top of the file). */
export class AppendGroups<A extends GroupableAppend> {
  private inFlight = 0;
  private waiting: Array<Waiting<A>> = [];
  private scheduled = false;

  constructor(
    private readonly options: AppendGroupOptions,
    /** Sends one append alone; resolves with its result line. */
    private readonly alone: (append: A) => Promise<string>,
    /** Sends a group; resolves with one result line per append, in order. */
    private readonly together: (parameters: GroupParameters) => Promise<string[]>,
  ) {}

  /** Resolves with the append's result line (see appendEvents in sql/statements.ts), or rejects as the append alone would. */
  submit(item: A): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Sends what waits after the current turn of the event loop (see the top of the file). */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    while (this.inFlight < this.options.maxInFlight && this.waiting.length > 0) {
      // Shared between the free slots, so that a large crowd keeps several server processes busy.
      const share = Math.max(16, Math.ceil(this.waiting.length / (this.options.maxInFlight - this.inFlight)));
      const taken = this.count(share);
      const group = this.waiting.slice(0, taken);
      this.waiting = this.waiting.slice(taken);
      this.inFlight++;
      void this.send(group).finally(() => {
        this.inFlight--;
        if (this.waiting.length > 0) this.schedule();
      });
    }
  }

  /** How many waiting appends go in the next group: in arrival order, up to `share` and the limits (the first always). */
  private count(share: number): number {
    let events = 0;
    let chars = 0;
    let taken = 0;
    for (const { item } of this.waiting) {
      events += item.eventIds.length;
      chars += item.batch.length;
      if (taken > 0 && (taken >= share || events > this.options.maxEvents || chars > this.options.maxChars)) break;
      taken++;
    }
    return taken;
  }

  /** Sends a group and settles each of its appends; never rejects (each append gets its own answer or error). */
  private async send(group: Array<Waiting<A>>): Promise<void> {
    if (group.length === 1) return this.sendAlone(group[0]!);
    // Sorted by stream id (a stable sort keeps one stream's appends in the order they were made): two groups that share
    // streams take their rows' locks in the same order, so they cannot deadlock each other.
    const sorted = [...group].sort((a, b) =>
      a.item.streamId < b.item.streamId ? -1 : a.item.streamId > b.item.streamId ? 1 : 0,
    );
    let results: string[];
    try {
      results = await this.together(groupParameters(sorted.map((waiting) => waiting.item)));
      if (results.length !== sorted.length)
        throw new Error(`append_group returned ${results.length} results for ${sorted.length} appends`);
    } catch {
      // Rolled back, or unknown when the connection was lost: alone, each gets its own answer (see the top of the file).
      await this.sendEachAlone(sorted);
      return;
    }
    const busy: Array<Waiting<A>> = [];
    sorted.forEach((waiting, i) => {
      const line = results[i]!;
      if (line === 'busy') busy.push(waiting);
      else waiting.resolve(line);
    });
    await this.sendEachAlone(busy);
  }

  /**
   * Sends each append alone: the appends to one stream one after the other, in the order they were made (so that they
   * are decided in that order, as in the group), those to different streams side by side.
   */
  private async sendEachAlone(appends: ReadonlyArray<Waiting<A>>): Promise<void> {
    const byStream = new Map<string, Array<Waiting<A>>>();
    for (const waiting of appends) {
      const list = byStream.get(waiting.item.streamId);
      if (list) list.push(waiting);
      else byStream.set(waiting.item.streamId, [waiting]);
    }
    await Promise.all(
      [...byStream.values()].map(async (list) => {
        for (const waiting of list) await this.sendAlone(waiting);
      }),
    );
  }

  private async sendAlone(waiting: Waiting<A>): Promise<void> {
    try {
      waiting.resolve(await this.alone(waiting.item));
    } catch (error) {
      waiting.reject(error);
    }
  }
}

function groupParameters(appends: readonly GroupableAppend[]): GroupParameters {
  const streams: string[] = [];
  const expected: string[] = [];
  const ids: string[] = [];
  const counts: number[] = [];
  let events = '[';
  appends.forEach((append, i) => {
    streams.push(append.streamId);
    expected.push(typeof append.expectedVersion === 'number' ? String(append.expectedVersion) : append.expectedVersion);
    for (const id of append.eventIds) ids.push(id);
    counts.push(append.eventIds.length);
    events += `${i === 0 ? '' : ','}${append.batch}`;
  });
  return [streams, expected, ids, counts, `${events}]`];
}
