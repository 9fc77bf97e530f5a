import { TransportError, TransportUnavailableError } from '@eventline/core';

/**
 * An ioredis error as a {@link TransportError} of `operation`: a reply error is Redis refusing the command (a key of
 * another type, a script error); anything else means Redis is not reachable or the connection broke.
 */
export function redisError(operation: string, error: unknown): TransportError {
  if (error instanceof TransportError) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof Error && error.name === 'ReplyError')
    return new TransportError('redis', operation, `Redis refused the command: ${message}`, error);
  return new TransportUnavailableError(
    'redis',
    operation,
    `Redis is not reachable or the connection broke (${message}); it is retried once Redis is back`,
    error,
  );
}
