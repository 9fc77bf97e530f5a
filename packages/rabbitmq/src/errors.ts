/** A thrown value as an Error (amqplib and handlers may throw anything); `context` says what failed, for non-Errors. */
export function toError(value: unknown, context?: string): Error {
  if (value instanceof Error) return value;
  if (context === undefined) return new Error(String(value));
  return new Error(value === undefined || value === null ? context : `${context}: ${String(value)}`);
}
