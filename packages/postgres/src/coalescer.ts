/**
 * Requests made together go together: the PostgreSQL store's appends outside transactions are collected during one
 * turn of the event loop, and while `maxInFlight` statements are at the server, and then sent as one statement per
 * group (see append-groups.ts). A caller alone waits one turn
 * (`setImmediate`); callers whose previous requests just came back make their next ones in promise continuations of
 * the same turn, and those go together.
 */
export interface Waiting<I, O> {
  readonly item: I;
  readonly resolve: (result: O) => void;
  readonly reject: (error: unknown) => void;
}

export abstract class Coalescer<I, O> {
  private inFlight = 0;
  private waiting: Array<Waiting<I, O>> = [];
  private scheduled = false;

  constructor(protected readonly maxInFlight: number) {}

  submit(item: I): Promise<O> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** How many of the waiting requests (at least one) go in the next group, at most `share`. */
  protected count(waiting: ReadonlyArray<Waiting<I, O>>, share: number): number {
    return Math.min(share, waiting.length);
  }

  /** Sends a group and settles each of its requests. */
  protected abstract send(group: Array<Waiting<I, O>>): Promise<void>;

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    while (this.inFlight < this.maxInFlight && this.waiting.length > 0) {
      // Shared between the free slots, so that a large crowd keeps several server processes busy.
      const share = Math.max(16, Math.ceil(this.waiting.length / (this.maxInFlight - this.inFlight)));
      const taken = Math.max(1, this.count(this.waiting, share));
      const group = this.waiting.slice(0, taken);
      this.waiting = this.waiting.slice(taken);
      this.inFlight++;
      void this.send(group)
        .catch((error: unknown) => {
          for (const waiting of group) waiting.reject(error);
        })
        .finally(() => {
          this.inFlight--;
          if (this.waiting.length > 0) this.schedule();
        });
    }
  }
}
