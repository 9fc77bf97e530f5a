/**
 * The one hash of a stream id, shared by every part that spreads streams over workers, partitions or locks: FNV-1a,
 * 32 bits, over the id's UTF-8 bytes (so a program in another language computes the same value).
 */
export function streamHash(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** The partition (0 to `partitions - 1`) a stream id always lands in. */
export function partitionOf(streamId: string, partitions: number): number {
  return streamHash(streamId) % partitions;
}
