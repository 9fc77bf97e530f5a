import type { FastifyReply, FastifyRequest } from 'fastify';
import { EventlineError, type EventlineErrorCode } from '@eventline/core';

/** An RFC 9457 problem document. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extension: string]: unknown;
}

/**
 * The HTTP status of every eventline error code, decided here one by one: a new code does not compile until it has one,
 * so none falls to a 500 unnoticed. A 500 is kept for errors that say the server itself is set up wrong (a second
 * handler for a command, upcasters that do not chain); they answer as an internal error and are logged.
 */
export const STATUS_OF_CODE: Readonly<Record<EventlineErrorCode, number>> = {
  VALIDATION: 400,
  INVALID_STREAM_ID: 400,
  UNKNOWN_EVENT_TYPE: 400,
  PAYLOAD_TOO_LARGE: 413,
  UNKNOWN_COMMAND: 404,
  UNKNOWN_COLLECTION: 404,
  CONCURRENCY: 409,
  EVENT_ID_CONFLICT: 409,
  UNIQUENESS_VIOLATION: 409,
  TRANSACTION_CONFLICT: 409,
  STREAM_DELETED: 410,
  DOMAIN_RULE: 422,
  IDEMPOTENCY_KEY_REUSED: 422,
  DUPLICATE_HANDLER: 500,
  UPCASTER_CONFIGURATION: 500,
  UNIQUENESS_CONFIGURATION: 500,
  STORE_UNAVAILABLE: 503,
  STORE_CLOSED: 503,
  DATA_DIR_LOCKED: 503,
  LEASE_LOST: 503,
  WAIT_TIMEOUT: 504,
  // The broker sits behind this server: whatever it lacks or refuses, the client did nothing wrong and may retry later.
  TRANSPORT_FAILED: 503,
  TRANSPORT_UNAVAILABLE: 503,
  TRANSPORT_CLOSED: 503,
  TRANSPORT_CONFIGURATION: 503,
  PROCESS_DECISION: 500,
  PROCESS_STORE_CLOSED: 503,
};

/** An HTTP-level problem the API answers with (not found, method not allowed, a body it cannot read...). */
export class HttpProblem extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Where a schema-checked value came from, as a client would name it. */
const PLACE: Record<string, string> = {
  querystring: 'Query parameter',
  params: 'Path segment',
  headers: 'Header',
  body: 'Body',
};

interface AjvIssue {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
  message?: string;
}

/** A failed route schema as a sentence naming the parameter, what is wrong, and what is expected. */
function validationProblem(issues: readonly AjvIssue[], context: string, request: FastifyRequest | undefined): Problem {
  const issue = issues[0]!;
  const place = PLACE[context] ?? context;
  let name = issue.instancePath.replace(/^\//, '').replace(/~1/g, '/').replace(/~0/g, '~');
  let detail: string;
  if (issue.keyword === 'additionalProperties') {
    name = String(issue.params.additionalProperty);
    const known = Object.keys(schemaOf(request, context)?.properties ?? {});
    detail = `${place} ${quoteName(name)} is not one this route takes (${known.length === 0 ? 'it takes none' : `it takes ${known.join(', ')}`})`;
  } else if (issue.keyword === 'dependencies' || issue.keyword === 'dependentRequired') {
    detail = `${place} ${quoteName(String(issue.params.property))} needs ${quoteName(String(issue.params.missingProperty))} too`;
  } else if (issue.keyword === 'required') {
    name = String(issue.params.missingProperty);
    detail = `${place} ${quoteName(name)} is required`;
  } else {
    const expected = schemaOf(request, context)?.properties?.[name]?.description;
    const given = (valuesOf(request, context) as Record<string, unknown> | undefined)?.[name];
    const what = Array.isArray(given)
      ? 'is given more than once; give it once'
      : issue.keyword === 'pattern'
        ? 'is not valid'
        : (issue.message ?? 'is not valid');
    detail = `${place} ${quoteName(name)} ${what}${expected ? `: expected ${expected}` : ''}`;
  }
  return {
    type: 'https://eventline.dev/problems/validation',
    title: 'Validation',
    status: 400,
    detail,
    code: 'VALIDATION',
    issues: [{ path: [context === 'querystring' ? 'query' : context, ...(name ? [name] : [])], message: detail }],
  };
}

function schemaOf(
  request: FastifyRequest | undefined,
  context: string,
): { properties?: Record<string, { description?: string }> } | undefined {
  const schema = request?.routeOptions.schema as Record<string, unknown> | undefined;
  return schema?.[context] as { properties?: Record<string, { description?: string }> } | undefined;
}

function valuesOf(request: FastifyRequest | undefined, context: string): unknown {
  if (!request) return undefined;
  return context === 'querystring'
    ? request.query
    : context === 'params'
      ? request.params
      : context === 'headers'
        ? request.headers
        : undefined;
}

function quoteName(name: string): string {
  return `'${name.length > 60 ? `${name.slice(0, 60)}…` : name}'`;
}

/** What fastify's own errors mean to a client, by fastify's error code. */
const FASTIFY: Record<string, { status?: number; code: string; detail?: (message: string) => string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
    detail: () => "Send the body as JSON, with the header 'content-type: application/json'",
  },
  FST_ERR_CTP_INVALID_TYPE: {
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
    detail: () => "Send the body as JSON, with the header 'content-type: application/json'",
  },
  FST_ERR_CTP_BODY_TOO_LARGE: {
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
    detail: () =>
      'The body is larger than this server accepts; send a smaller one (store large payloads elsewhere and send a reference)',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    status: 400,
    code: 'MALFORMED_REQUEST',
    detail: () =>
      "The body is empty but its content-type is 'application/json': send a JSON value (for a command with no data, 'null' or '{}')",
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: {
    status: 400,
    code: 'MALFORMED_REQUEST',
    detail: () => 'The body is not as long as its Content-Length header says',
  },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'MALFORMED_REQUEST', detail: () => 'The body is not valid JSON' },
  FST_ERR_BAD_URL: {
    status: 400,
    code: 'MALFORMED_REQUEST',
    detail: () =>
      "The URL is not valid: a '%' must be followed by two hex digits, and percent-encoded bytes must be UTF-8",
  },
  FST_ERR_MAX_PARAM_LENGTH: {
    status: 414,
    code: 'URI_TOO_LONG',
    detail: () =>
      'A path segment of the URL is too long; stream ids are at most 255 characters and document ids at most 500',
  },
  FST_ERR_ASYNC_CONSTRAINT: { status: 400, code: 'MALFORMED_REQUEST', detail: () => 'The request could not be routed' },
};

/**
 * Maps any error to a problem document: eventline's typed errors by code, the API's own problems, route schema
 * failures (naming the parameter), fastify's body and URL errors, and the rest as a 500 that says nothing of the inside.
 */
export function problemOf(error: unknown, request?: FastifyRequest): Problem {
  if (error instanceof EventlineError) {
    const {
      name: _name,
      message,
      code,
      ...details
    } = error.toJSON() as { name: string; message: string; code: string };
    const status = (STATUS_OF_CODE as Readonly<Record<string, number | undefined>>)[code] ?? 500;
    if (status === 500) return internal();
    return {
      type: `https://eventline.dev/problems/${code.toLowerCase().replace(/_/g, '-')}`,
      title: titleOf(code),
      status,
      detail: message,
      code,
      ...details,
    };
  }
  if (error instanceof HttpProblem) {
    return {
      type: 'about:blank',
      title: titleOf(error.code),
      status: error.statusCode,
      detail: error.message,
      code: error.code,
    };
  }
  const fastifyError = error as {
    statusCode?: number;
    code?: string;
    message?: string;
    validation?: AjvIssue[];
    validationContext?: string;
  };
  if (Array.isArray(fastifyError?.validation) && fastifyError.validation.length > 0) {
    return validationProblem(fastifyError.validation, fastifyError.validationContext ?? 'request', request);
  }
  const known = fastifyError?.code ? FASTIFY[fastifyError.code] : undefined;
  if (known) {
    const status = known.status ?? fastifyError.statusCode ?? 400;
    return {
      type: 'about:blank',
      title: titleOf(known.code),
      status,
      detail: known.detail?.(fastifyError.message ?? '') ?? fastifyError.message ?? 'The request could not be read',
      code: known.code,
    };
  }
  if (fastifyError?.statusCode && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    const code =
      fastifyError.statusCode === 413
        ? 'PAYLOAD_TOO_LARGE'
        : fastifyError.statusCode === 415
          ? 'UNSUPPORTED_MEDIA_TYPE'
          : 'MALFORMED_REQUEST';
    return {
      type: 'about:blank',
      title: titleOf(code),
      status: fastifyError.statusCode,
      detail: fastifyError.message || 'The request could not be read',
      code,
    };
  }
  return internal();
}

function internal(): Problem {
  return {
    type: 'about:blank',
    title: 'Internal error',
    status: 500,
    detail: 'An unexpected error occurred; it was logged with the request id.',
    code: 'INTERNAL',
  };
}

/** The problem for a request Node's HTTP parser refused before any route saw it (see fastify's clientErrorHandler). */
export function clientErrorProblem(error: Error & { code?: string }): Problem {
  const code = error.code ?? '';
  const problem = (status: number, problemCode: string, detail: string): Problem => ({
    type: 'about:blank',
    title: titleOf(problemCode),
    status,
    detail,
    code: problemCode,
  });
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT')
    return problem(408, 'REQUEST_TIMEOUT', 'The request was not received in time; send it again, whole');
  if (code === 'HPE_HEADER_OVERFLOW')
    return problem(
      431,
      'HEADERS_TOO_LARGE',
      'The request line and headers are larger than this server accepts (16 KiB); send shorter headers or URL',
    );
  if (code === 'HPE_INVALID_HEADER_TOKEN' || code === 'HPE_INVALID_CONSTANT') {
    return problem(
      400,
      'MALFORMED_REQUEST',
      'A header holds a character HTTP does not allow (a control character such as NUL, or a space in a name)',
    );
  }
  if (code === 'HPE_INVALID_METHOD')
    return problem(400, 'MALFORMED_REQUEST', 'The request method is not one HTTP knows; use GET or POST');
  if (code === 'HPE_INVALID_URL')
    return problem(400, 'MALFORMED_REQUEST', 'The request target is not a valid URL path');
  return problem(400, 'MALFORMED_REQUEST', `The request is not valid HTTP/1.1 (${code || error.message})`);
}

/** Sends `problem` as `application/problem+json`. */
export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  return reply.status(problem.status).type('application/problem+json').send(problem);
}

function titleOf(code: string): string {
  return code
    .toLowerCase()
    .split('_')
    .map((word, index) => (index === 0 ? word[0]!.toUpperCase() + word.slice(1) : word))
    .join(' ');
}
