/**
 * Grouped first pages of stream reads, for the PostgreSQL store's reads outside transactions.
 *
 * A command is a stream read and then an append. The appends of concurrent commands already go together (see
 * append-groups.ts); their reads went one statement each, and on a 2-core machine a statement's cost is mostly not
 * the work inside it but the round trip: the socket write, the server process woken to answer, the protocol. So the
 * first pages of forwards stream reads asked for during the same turn of the event loop go together in one statement
 * (`readStreamFirstGroup`, sql/statements.ts), each read getting exactly the rows its own statement would have returned. That
 * also keeps concurrent commands in step: their reads come back together, so their appends are made in the same turn
 * and go as one group.
 *
 * A read alone waits one event-loop turn (`setImmediate`), as an append does. If the grouped statement fails, each
 * read of it is sent again alone (reads change nothing), so each gets its own answer or error.
 */
import type { EventRow } from './session.js';

/** What a grouped read needs: see readStreamFirstForwards in sql/statements.ts. */
export interface FirstPageRead {
  readonly streamId: string;
  readonly from: number;
  readonly size: number;
  /** For error messages: "read stream 'id'". */
  readonly operation: string;
}

interface Waiting {
  readonly read: FirstPageRead;
  readonly resolve: (rows: EventRow[]) => void;
  readonly reject: (error: unknown) => void;
}

/** A grouped statement's row: a read's row, then the index (1-based) of the read it belongs to. */
export type GroupedRow = [...row: EventRow, n: string | number];

export interface ReadGroupOptions {
  /** Reads in one statement at most; more wait for the next statement of the same turn. */
  readonly maxReads: number;
}

export const DEFAULT_READ_GROUP_OPTIONS: ReadGroupOptions = { maxReads: 64 };

/** Groups first-page reads (see the top of the file). */
export class ReadGroups {
  private waiting: Waiting[] = [];
  private scheduled = false;

  constructor(
    private readonly options: ReadGroupOptions,
    /** Sends one read alone: the rows of readStreamFirstForwards. */
    private readonly alone: (read: FirstPageRead) => Promise<EventRow[]>,
    /** Sends a group: the rows of readStreamFirstGroup. */
    private readonly together: (streamIds: string[], froms: number[], sizes: number[]) => Promise<GroupedRow[]>,
  ) {}

  submit(read: FirstPageRead): Promise<EventRow[]> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ read, resolve, reject });
      if (this.scheduled) return;
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        const waiting = this.waiting;
        this.waiting = [];
        for (let at = 0; at < waiting.length; at += this.options.maxReads)
          void this.send(waiting.slice(at, at + this.options.maxReads));
      });
    });
  }

  /** Sends a group and settles each of its reads; never rejects. */
  private async send(group: Waiting[]): Promise<void> {
    if (group.length === 1) return this.sendAlone(group[0]!);
    let grouped: GroupedRow[];
    try {
      grouped = await this.together(
        group.map((w) => w.read.streamId),
        group.map((w) => w.read.from),
        group.map((w) => w.read.size),
      );
    } catch {
      await Promise.all(group.map((waiting) => this.sendAlone(waiting)));
      return;
    }
    const rows: EventRow[][] = group.map(() => []);
    // The trailing index is left on the row: the store reads a row's columns by position.
    for (const row of grouped) rows[Number(row[row.length - 1]) - 1]!.push(row as unknown as EventRow);
    group.forEach((waiting, i) => waiting.resolve(rows[i]!));
  }

  private async sendAlone(waiting: Waiting): Promise<void> {
    try {
      waiting.resolve(await this.alone(waiting.read));
    } catch (error) {
      waiting.reject(error);
    }
  }
}
