/** The strings as one MessagePack array of strings (what `cmsgpack.unpack` in a Redis script reads as a table). */
export function packStrings(values: readonly string[]): Buffer {
  let bound = 5;
  for (const value of values) bound += 5 + value.length * 3;
  const buffer = Buffer.allocUnsafe(bound);
  buffer[0] = 0xdd;
  buffer.writeUInt32BE(values.length, 1);
  let at = 5;
  for (const value of values) {
    const written = buffer.write(value, at + 5, 'utf8');
    buffer[at] = 0xdb;
    buffer.writeUInt32BE(written, at + 1);
    at += 5 + written;
  }
  return buffer.subarray(0, at);
}
