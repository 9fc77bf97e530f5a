import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifySchema } from 'fastify';
import {
  createCommand,
  MAX_JSON_DEPTH,
  UnknownCommandError,
  ValidationError,
  type AsyncProjection,
  type CommandBus,
  type EventStore,
  type Position,
} from '@eventline/core';
import { parseJsonBody } from './json-body.js';
import { clientErrorProblem, HttpProblem, problemOf, sendProblem } from './problems.js';

/** What the API needs of a projection: read-your-writes and its collections. */
export type ServedProjection = Pick<AsyncProjection<never>, 'waitFor' | 'collection'>;

export interface HttpApiOptions {
  store: EventStore;
  /** Command types are routed to whichever bus registered them. */
  buses: readonly CommandBus[];
  /** Read models by projection name (own properties only, or a Map). */
  projections: Readonly<Record<string, ServedProjection>> | ReadonlyMap<string, ServedProjection>;
  /** Time a read waits for `?position=` (read-your-writes) when the request gives no `timeoutMs`. Default 5000 ms. */
  waitTimeoutMs?: number;
  /** Longest `?timeoutMs=` a request may ask for; a longer one is a 400. Default 30 000 ms. */
  maxWaitMs?: number;
  /** Largest request body in bytes (default 1 MiB + 64 KiB, so the store's own limit of 1 MiB per event speaks first). */
  bodyLimit?: number;
  /** Deepest nesting of objects and arrays in a JSON body (default 100, the store's own limit, MAX_JSON_DEPTH). */
  maxBodyDepth?: number;
  logger?: boolean;
}

/** Longest path segment accepted (percent-encoded): a 255-character stream id or a 500-character document id fits. */
export const MAX_PARAM_LENGTH = 8192;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const visibleAscii = '^[\\x21-\\x7e]+$';
const positionPattern = '^[0-9a-f]{16}/[0-9a-f]{16}$';

/**
 * The HTTP API:
 * - `POST /commands/:type` with the command data as JSON (headers `Idempotency-Key`, `X-Correlation-Id`,
 *   `traceparent`): 200 with the result (stream, version, position, events).
 * - `GET /read-models/:projection/:collection/:id?position=&timeoutMs=`: a document, after waiting until the
 *   projection has processed `position` — pass the position a command returned to read your own writes.
 * - `GET /read-models/:projection/:collection?after=&limit=&position=&timeoutMs=`: a page of documents, in id order.
 * - `GET /streams/:streamId?from=&limit=&direction=`: a stream's events.
 * - `GET /health`.
 * Every parameter is checked against its route's schema: a bad, unknown or repeated one is a 400 naming it. Every
 * error is `application/problem+json` with a `code` (see the package README for the list and the limits).
 */
export function createHttpApi(options: HttpApiOptions): FastifyInstance {
  const waitTimeoutMs = options.waitTimeoutMs ?? 5000;
  const maxWaitMs = options.maxWaitMs ?? 30_000;
  const maxBodyDepth = options.maxBodyDepth ?? MAX_JSON_DEPTH;
  const bodyLimit = options.bodyLimit ?? 1024 * 1024 + 64 * 1024;
  const whole = (value: number, min: number) => Number.isSafeInteger(value) && value >= min;
  if (!whole(maxWaitMs, 0) || maxWaitMs > 2 ** 31 - 1)
    throw new ValidationError(
      `createHttpApi: maxWaitMs must be a whole number of ms from 0 to 2147483647, got ${maxWaitMs}`,
    );
  if (!whole(waitTimeoutMs, 0) || waitTimeoutMs > maxWaitMs)
    throw new ValidationError(
      `createHttpApi: waitTimeoutMs must be a whole number of ms from 0 to maxWaitMs (${maxWaitMs}), got ${waitTimeoutMs}`,
    );
  if (!whole(maxBodyDepth, 1))
    throw new ValidationError(`createHttpApi: maxBodyDepth must be a whole number of 1 or more, got ${maxBodyDepth}`);
  if (!whole(bodyLimit, 1))
    throw new ValidationError(`createHttpApi: bodyLimit must be a whole number of bytes, 1 or more, got ${bodyLimit}`);
  const projections: ReadonlyMap<string, ServedProjection> =
    options.projections instanceof Map ? options.projections : new Map(Object.entries(options.projections));

  let closing = false;
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Unknown query parameters are refused (not silently dropped), and a repeated one is an array: refused by its type.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: true, allErrors: false } },
    // A request arriving while the server closes gets a problem too (see the onRequest hook below).
    return503OnClosing: false,
    // Node answers an HTTP/1.1 request without Host with an empty 400 of its own; the onRequest hook answers a problem.
    http: { requireHostHeader: false },
    frameworkErrors: (error, request, reply) => sendProblem(reply, problemOf(error, request)),
    clientErrorHandler: (error: Error & { code?: string }, socket: Socket) => {
      if (error.code === 'ECONNRESET' || socket.destroyed) return;
      const problem = clientErrorProblem(error);
      const body = JSON.stringify(problem);
      if (socket.writable) {
        socket.write(
          `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? 'Bad Request'}\r\nContent-Type: application/problem+json\r\n` +
            `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      }
      socket.destroy(error);
    },
  });

  app.setErrorHandler((error, request, reply) => {
    const problem = problemOf(error, request);
    if (problem.status >= 500) request.log.error({ err: error }, 'request failed');
    return sendProblem(reply, problem);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, {
      type: 'about:blank',
      title: 'Not found',
      status: 404,
      code: 'NOT_FOUND',
      detail: `No route ${request.method} ${shortUrl(request.url)}. The routes are: ${ROUTES.join(', ')}`,
    }),
  );
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    const version = request.raw.httpVersion;
    if (version !== '1.1' && version !== '1.0' && version !== '2.0')
      throw new HttpProblem(400, 'MALFORMED_REQUEST', `HTTP/${version} is not supported; send HTTP/1.1`);
    if (version === '1.1' && request.headers.host === undefined) {
      throw new HttpProblem(400, 'MALFORMED_REQUEST', 'An HTTP/1.1 request needs a Host header');
    }
    const query = request.url.indexOf('?');
    if (query >= 0 && !wellEncoded(request.url.slice(query + 1))) {
      throw new HttpProblem(
        400,
        'MALFORMED_REQUEST',
        "The query string is not valid: a '%' must be followed by two hex digits, and percent-encoded bytes must be UTF-8",
      );
    }
    if (!closing) return;
    void reply.header('connection', 'close');
    throw new HttpProblem(
      503,
      'SERVER_CLOSING',
      'The server is shutting down; send the request again (to another instance).',
    );
  });

  // Whole numbers in the query string are decimal digits, no sign on 0 and no leading zeros: ajv's coercion alone
  // would take 'Infinity', '1e3', '0x10' or ' 5'.
  app.addHook('preValidation', async (request) => {
    const properties = (
      request.routeOptions.schema?.querystring as { properties?: Record<string, { type?: string }> } | undefined
    )?.properties;
    if (!properties) return;
    const query = request.query as Record<string, unknown>;
    for (const [name, property] of Object.entries(properties)) {
      const value = Object.hasOwn(query, name) ? query[name] : undefined;
      if (property.type === 'integer' && typeof value === 'string' && !/^(0|-?[1-9][0-9]{0,15})$/.test(value)) {
        throw Object.assign(new Error(`querystring/${name} must be a whole number`), {
          statusCode: 400,
          validationContext: 'querystring',
          validation: [
            {
              instancePath: `/${name}`,
              keyword: 'type',
              params: { type: 'integer' },
              message: 'must be a whole number in decimal digits',
            },
          ],
        });
      }
    }
  });

  // Only JSON bodies, parsed with a nesting limit and no prototype keys; anything else is a 415.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    try {
      const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(request.headers['content-type'] ?? '')?.[1];
      if (charset !== undefined && !/^utf-?8$/i.test(charset))
        throw new HttpProblem(
          415,
          'UNSUPPORTED_MEDIA_TYPE',
          `A JSON body must be UTF-8, not charset '${charset.slice(0, 40)}'`,
        );
      done(null, parseJsonBody(body as string, maxBodyDepth));
    } catch (error) {
      done(error as Error, undefined);
    }
  });

  const noQuery = { type: 'object', additionalProperties: false, properties: {} } as const;

  app.get('/health', async () => ({ status: 'ok' }));

  const commandSchema: FastifySchema = {
    params: {
      type: 'object',
      required: ['type'],
      additionalProperties: false,
      properties: {
        type: { type: 'string', minLength: 1, maxLength: 200, description: 'a command type of up to 200 characters' },
      },
    },
    querystring: noQuery,
    headers: {
      type: 'object',
      properties: {
        'idempotency-key': {
          type: 'string',
          minLength: 1,
          maxLength: 200,
          pattern: visibleAscii,
          description: '1 to 200 visible ASCII characters',
        },
        'x-correlation-id': {
          type: 'string',
          minLength: 1,
          maxLength: 200,
          pattern: visibleAscii,
          description: '1 to 200 visible ASCII characters',
        },
        traceparent: {
          type: 'string',
          pattern: '^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$',
          description: "a W3C trace context, '00-<32 hex>-<16 hex>-<2 hex>'",
        },
      },
    },
  };
  const busOf = (type: string) => options.buses.find((bus) => bus.types().includes(type));
  app.post<{
    Params: { type: string };
    Headers: { 'idempotency-key'?: string; 'x-correlation-id'?: string; traceparent?: string };
  }>('/commands/:type', { schema: commandSchema }, async (request) => {
    const { type } = request.params;
    const bus = busOf(type);
    if (!bus) throw new UnknownCommandError(type, [...new Set(options.buses.flatMap((b) => b.types()))].sort());
    const { 'idempotency-key': idempotencyKey, 'x-correlation-id': correlationId, traceparent } = request.headers;
    const command = createCommand(type, request.body ?? null, {
      ...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
      metadata: {
        ...(correlationId !== undefined ? { correlationId } : {}),
        ...(traceparent !== undefined ? { traceparent } : {}),
      },
    });
    return bus.dispatch(command);
  });

  const readParams = (withId: boolean) => ({
    type: 'object',
    additionalProperties: false,
    required: ['projection', 'collection', ...(withId ? ['id'] : [])],
    properties: {
      projection: { type: 'string', minLength: 1, maxLength: 100, description: 'the name of a projection' },
      collection: { type: 'string', minLength: 1, maxLength: 100, description: 'the name of a collection' },
      ...(withId
        ? { id: { type: 'string', minLength: 1, maxLength: 500, description: 'a document id of 1 to 500 characters' } }
        : {}),
    },
  });
  const waitQuery = {
    position: { type: 'string', pattern: positionPattern, description: 'a position a command returned' },
    timeoutMs: {
      type: 'integer',
      minimum: 0,
      maximum: maxWaitMs,
      description: `a whole number of milliseconds from 0 to ${maxWaitMs}, with position`,
    },
  };
  const readQuery = (list: boolean) => ({
    type: 'object',
    additionalProperties: false,
    dependencies: { timeoutMs: ['position'] },
    properties: {
      ...waitQuery,
      ...(list
        ? {
            after: {
              type: 'string',
              minLength: 1,
              maxLength: 500,
              description: 'a document id: the page starts after it',
            },
            limit: { type: 'integer', minimum: 1, maximum: 1000, description: 'a whole number from 1 to 1000' },
          }
        : {}),
    },
  });

  type ReadRequest = FastifyRequest<{
    Params: { projection: string; collection: string; id?: string };
    Querystring: { position?: string; timeoutMs?: number; after?: string; limit?: number };
  }>;
  const readModel = async (request: ReadRequest, reply: FastifyReply) => {
    const { projection: name, collection: collectionName } = request.params;
    const projection = projections.get(name);
    if (!projection) {
      throw new HttpProblem(
        404,
        'NOT_FOUND',
        `No projection ${quote(name)} (known: ${[...projections.keys()].join(', ') || 'none'})`,
      );
    }
    const { position, timeoutMs = waitTimeoutMs } = request.query;
    if (position !== undefined) await waitFor(projection, position as Position, timeoutMs, reply);
    const collection = await projection.collection(collectionName);
    if (request.params.id === undefined) {
      const { after, limit = 100 } = request.query;
      return { items: await collection.list({ limit, ...(after !== undefined ? { after } : {}) }) };
    }
    const document = await collection.get(request.params.id);
    if (document === null)
      throw new HttpProblem(404, 'NOT_FOUND', `No document ${quote(request.params.id)} in ${name}/${collectionName}`);
    return document;
  };
  /** Waits for the projection to reach `position`, and stops waiting when the client goes away. */
  const waitFor = async (projection: ServedProjection, position: Position, timeoutMs: number, reply: FastifyReply) => {
    const next = await options.store.nextPosition();
    if (position >= next) {
      throw new ValidationError(
        `Query parameter 'position' (${position}) was never returned by this store: every position it returned is before ${next}. Pass the position a command returned.`,
      );
    }
    const controller = new AbortController();
    const gone = () => {
      if (!reply.raw.writableFinished)
        controller.abort(
          new HttpProblem(
            499,
            'CLIENT_CLOSED_REQUEST',
            'The client closed the connection before the read-your-writes wait ended.',
          ),
        );
    };
    reply.raw.once('close', gone);
    try {
      await projection.waitFor(position, { timeoutMs, signal: controller.signal });
    } finally {
      reply.raw.off('close', gone);
    }
  };
  app.get(
    '/read-models/:projection/:collection',
    { schema: { params: readParams(false), querystring: readQuery(true) } },
    readModel,
  );
  app.get(
    '/read-models/:projection/:collection/:id',
    { schema: { params: readParams(true), querystring: readQuery(false) } },
    readModel,
  );

  const streamSchema: FastifySchema = {
    params: {
      type: 'object',
      required: ['streamId'],
      additionalProperties: false,
      properties: {
        streamId: { type: 'string', minLength: 1, maxLength: 1000, description: "a stream id, '<category>-<id>'" },
      },
    },
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: {
        from: { type: 'integer', minimum: 0, maximum: MAX_SAFE, description: 'a version, a whole number of 0 or more' },
        limit: { type: 'integer', minimum: 1, maximum: 1000, description: 'a whole number from 1 to 1000' },
        direction: { type: 'string', enum: ['forwards', 'backwards'], description: "'forwards' or 'backwards'" },
      },
    },
  };
  app.get<{
    Params: { streamId: string };
    Querystring: { from?: number; limit?: number; direction?: 'forwards' | 'backwards' };
  }>('/streams/:streamId', { schema: streamSchema }, async (request) => {
    const { from, limit = 100, direction } = request.query;
    const events = [];
    for await (const event of options.store.readStream(request.params.streamId, {
      limit,
      ...(from !== undefined ? { from } : {}),
      ...(direction ? { direction } : {}),
    }))
      events.push(event);
    return { streamId: request.params.streamId, events, info: await options.store.streamInfo(request.params.streamId) };
  });

  // A known path with another method is a 405 that says which methods it has (rather than a 404).
  const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
  for (const [url, allowed] of [
    ['/health', ['GET', 'HEAD']],
    ['/commands/:type', ['POST']],
    ['/read-models/:projection/:collection', ['GET', 'HEAD']],
    ['/read-models/:projection/:collection/:id', ['GET', 'HEAD']],
    ['/streams/:streamId', ['GET', 'HEAD']],
  ] as const) {
    const others = methods.filter((method) => !(allowed as readonly string[]).includes(method));
    app.route({
      method: [...others],
      url,
      handler: async (request, reply) => {
        void reply.header('allow', allowed.join(', '));
        throw new HttpProblem(
          405,
          'METHOD_NOT_ALLOWED',
          `${request.method} is not allowed on ${url}; use ${allowed.join(' or ')}`,
        );
      },
    });
  }

  return app;
}

const ROUTES = [
  'POST /commands/:type',
  'GET /read-models/:projection/:collection[/:id]',
  'GET /streams/:streamId',
  'GET /health',
];

/** Whether every `name=value` of a query string decodes (percent-encoding of UTF-8). */
function wellEncoded(query: string): boolean {
  if (!query.includes('%')) return true;
  for (const part of query.split(/[&=]/)) {
    try {
      decodeURIComponent(part.replace(/\+/g, ' '));
    } catch {
      return false;
    }
  }
  return true;
}

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

function shortUrl(url: string): string {
  return url.length > 200 ? `${url.slice(0, 200)}…` : url;
}
