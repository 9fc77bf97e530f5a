/**
 * Where a partition of a group is in the stream, stored as the body of the single "cursor token" in the partition's
 * cursor queue. `offset` is the stream offset to resume from; `deliveries` how many times the message at `offset` was
 * delivered already (0: not yet). `marker`: a group created with `from: 'new'` starts after this marker.
 */
export interface Cursor {
  readonly offset: number | 'first';
  readonly deliveries: number;
  readonly marker?: string;
}

export interface Token extends Cursor {
  readonly v: 1;
  readonly id: string;
  /** Each token written by a holder has the sequence number of the one it replaces plus one: the highest is current. */
  readonly seq: number;
  /** The member that wrote it (none for a group's first tokens). */
  readonly holder?: string;
  /** Written by a holder handing the partition over or stopping; a token without it that comes back means its holder died. */
  readonly released?: boolean;
  readonly group: string;
  readonly partition: number;
  readonly partitions: number;
}

/** The token in a cursor queue message, or null when the message is not one. */
export function parseToken(content: Buffer): Token | null {
  try {
    const token = JSON.parse(content.toString('utf8')) as Partial<Token>;
    if (token.v !== 1 || typeof token.id !== 'string' || typeof token.group !== 'string') return null;
    if (
      typeof token.partition !== 'number' ||
      typeof token.partitions !== 'number' ||
      typeof token.deliveries !== 'number'
    )
      return null;
    if (typeof token.seq !== 'number') return null;
    if (token.offset !== 'first' && typeof token.offset !== 'number') return null;
    return token as Token;
  } catch {
    return null;
  }
}

/** The cursor a token holds (its marker only when it has one). */
export function cursorOf(token: Token): Cursor {
  return token.marker === undefined
    ? { offset: token.offset, deliveries: token.deliveries }
    : { offset: token.offset, deliveries: token.deliveries, marker: token.marker };
}
