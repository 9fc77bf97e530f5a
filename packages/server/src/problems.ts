import { EventlineError } from 'eventline';

/** An RFC 9457 problem document. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extension: string]: unknown;
}

const STATUS: Record<string, number> = {
  VALIDATION: 400,
  INVALID_STREAM_ID: 400,
  UNKNOWN_EVENT_TYPE: 400,
  PAYLOAD_TOO_LARGE: 413,
  UNKNOWN_COMMAND: 404,
  CONCURRENCY: 409,
  EVENT_ID_CONFLICT: 409,
  DOMAIN_RULE: 422,
  IDEMPOTENCY_KEY_REUSED: 422,
  TRANSACTION_CONFLICT: 409,
  UNKNOWN_COLLECTION: 404,
  DATA_DIR_LOCKED: 503,
  STREAM_DELETED: 410,
  WAIT_TIMEOUT: 504,
  STORE_UNAVAILABLE: 503,
  STORE_CLOSED: 503,
};

/** Maps any error to a problem document: eventline's typed errors by code, body parsing errors, and the rest as 500. */
export function problemOf(error: unknown): Problem {
  if (error instanceof EventlineError) {
    const { name: _name, message, code, ...details } = error.toJSON() as { name: string; message: string; code: string };
    const status = STATUS[code] ?? 500;
    return { type: `https://eventline.dev/problems/${code.toLowerCase().replace(/_/g, '-')}`, title: titleOf(code), status, detail: message, code, ...details };
  }
  const fastifyError = error as { statusCode?: number; code?: string; message?: string };
  if (fastifyError?.statusCode && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    const code = fastifyError.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'UNSUPPORTED_MEDIA_TYPE' : fastifyError.statusCode === 413 ? 'PAYLOAD_TOO_LARGE' : 'MALFORMED_REQUEST';
    return { type: 'about:blank', title: titleOf(code), status: fastifyError.statusCode, detail: fastifyError.message ?? 'the request could not be read', code };
  }
  return { type: 'about:blank', title: 'Internal error', status: 500, detail: 'An unexpected error occurred; it was logged with the request id.', code: 'INTERNAL' };
}

function titleOf(code: string): string {
  return code
    .toLowerCase()
    .split('_')
    .map((word, index) => (index === 0 ? word[0]!.toUpperCase() + word.slice(1) : word))
    .join(' ');
}
