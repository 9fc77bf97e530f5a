/**
 * A position in the global log (`readAll`). Opaque, totally ordered, and comparable as a plain string
 * (`a < b` means a comes first), so it can be stored, sent over HTTP and compared anywhere.
 *
 * Why not a plain number: positions come from a sequence, and PostgreSQL transactions can commit in another order than
 * they drew their numbers. A reader that ordered by the number alone could pass a number whose transaction is still
 * open and never come back to it. The store therefore orders the log by (transaction id, sequence) and only shows
 * transactions older than every open one; a position is that pair, written as two 16-digit hex numbers
 * (`000000000000a1f3/0000000000000042`).
 */
export type Position = string & { readonly __brand?: 'eventline.Position' };

const MAX = 0xffffffffffffffffn;

/** Before the first event: `readAll({ after: START })` reads from the beginning. */
export const START: Position = formatPosition(0n, 0n);

export function formatPosition(transaction: bigint, sequence: bigint): Position {
  return `${hex16(transaction)}/${hex16(sequence)}`;
}

/** The two parts of a position. @throws {TypeError} when the string is not a position. */
export function parsePosition(position: Position): { transaction: bigint; sequence: bigint } {
  if (!isPosition(position))
    throw new TypeError(`'${String(position)}' is not an eventline position (two 16-digit hex numbers, 'hhhh…/hhhh…')`);
  return { transaction: BigInt(`0x${position.slice(0, 16)}`), sequence: BigInt(`0x${position.slice(17)}`) };
}

export function isPosition(value: unknown): value is Position {
  return typeof value === 'string' && /^[0-9a-f]{16}\/[0-9a-f]{16}$/.test(value);
}

/** The position just after every event of transactions numbered below `transaction`: where a reader may safely resume. */
export function positionBeforeTransaction(transaction: bigint): Position {
  return transaction === 0n ? START : formatPosition(transaction - 1n, MAX);
}

/** -1, 0 or 1, for sorting. */
export function comparePositions(a: Position, b: Position): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function hex16(value: bigint): string {
  if (value < 0n || value > MAX) throw new RangeError(`position part out of range: ${value}`);
  return value.toString(16).padStart(16, '0');
}
