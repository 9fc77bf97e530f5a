import Fastify, { type FastifyInstance } from 'fastify';
import {
  createCommand,
  isPosition,
  ValidationError,
  type AsyncProjection,
  type CommandBus,
  type EventStore,
  type Position,
} from 'eventline';
import { problemOf } from './problems.js';

export interface HttpApiOptions {
  store: EventStore;
  /** Command types are routed to whichever bus registered them. */
  buses: readonly CommandBus[];
  /** Read models by projection name. */
  projections: Readonly<Record<string, Pick<AsyncProjection<never>, 'waitFor' | 'collection'>>>;
  /** Default time a read waits for `?position=` (read-your-writes). Default 5000 ms. */
  waitTimeoutMs?: number;
  /** Largest request body in bytes (default 1 MiB + a little, so the store's own limit speaks first). */
  bodyLimit?: number;
  logger?: boolean;
}

/**
 * The HTTP API:
 * - `POST /commands/:type` with the command data as JSON (headers `Idempotency-Key`, `X-Correlation-Id`): 200 with the
 *   result (stream, version, position, events).
 * - `GET /read-models/:projection/:collection[/:id]?position=...`: a document (or a page of them), after waiting until
 *   the projection has processed `position` — pass the position a command returned to read your own writes.
 * - `GET /streams/:streamId?from=&limit=&direction=`: a stream's events.
 * - `GET /health`.
 * Errors are `application/problem+json` with eventline's error `code`.
 */
export function createHttpApi(options: HttpApiOptions): FastifyInstance {
  const app = Fastify({ logger: options.logger ?? false, bodyLimit: options.bodyLimit ?? 1024 * 1024 + 64 * 1024 });
  const busOf = (type: string) => options.buses.find((bus) => bus.types().includes(type)) ?? options.buses[0];

  app.setErrorHandler((error, request, reply) => {
    const problem = problemOf(error);
    if (problem.status >= 500) request.log.error({ err: error }, 'request failed');
    void reply.status(problem.status).type('application/problem+json').send(problem);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).type('application/problem+json').send({ type: 'about:blank', title: 'Not found', status: 404, detail: `No route ${request.method} ${request.url}`, code: 'NOT_FOUND' });
  });

  app.get('/health', async () => ({ status: 'ok' }));

  app.post<{ Params: { type: string } }>('/commands/:type', async (request) => {
    const header = (name: string) => {
      const value = request.headers[name];
      return typeof value === 'string' && value.length > 0 ? value : undefined;
    };
    const idempotencyKey = header('idempotency-key');
    const correlationId = header('x-correlation-id');
    const bus = busOf(request.params.type);
    if (!bus) throw new ValidationError('No command bus is configured');
    const command = createCommand(request.params.type, request.body ?? null, {
      ...(idempotencyKey ? { idempotencyKey } : {}),
      metadata: { ...(correlationId ? { correlationId } : {}), ...(header('traceparent') ? { traceparent: header('traceparent')! } : {}) },
    });
    return bus.dispatch(command);
  });

  app.get<{ Params: { projection: string; collection: string; id?: string }; Querystring: { position?: string; timeoutMs?: string; after?: string; limit?: string } }>(
    '/read-models/:projection/:collection/:id?',
    async (request, reply) => {
      const projection = options.projections[request.params.projection];
      if (!projection) {
        return reply.status(404).type('application/problem+json').send({ type: 'about:blank', title: 'Not found', status: 404, detail: `No projection '${request.params.projection}' (known: ${Object.keys(options.projections).join(', ')})`, code: 'NOT_FOUND' });
      }
      const { position, timeoutMs } = request.query;
      if (position !== undefined) {
        if (!isPosition(position)) throw new ValidationError(`position must be a position returned by a command, got '${position}'`);
        await projection.waitFor(position as Position, { timeoutMs: timeoutMs ? Number(timeoutMs) : (options.waitTimeoutMs ?? 5000) });
      }
      const collection = await projection.collection(request.params.collection);
      if (request.params.id === undefined) {
        const limit = request.query.limit ? Number(request.query.limit) : 100;
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new ValidationError('limit must be a whole number from 1 to 1000');
        return { items: await collection.list({ limit, ...(request.query.after ? { after: request.query.after } : {}) }) };
      }
      const document = await collection.get(request.params.id);
      if (document === null) {
        return reply.status(404).type('application/problem+json').send({ type: 'about:blank', title: 'Not found', status: 404, detail: `No document '${request.params.id}' in ${request.params.projection}/${request.params.collection}`, code: 'NOT_FOUND' });
      }
      return document;
    },
  );

  app.get<{ Params: { streamId: string }; Querystring: { from?: string; limit?: string; direction?: string } }>('/streams/:streamId', async (request) => {
    const number = (value: string | undefined, name: string) => {
      if (value === undefined) return undefined;
      const parsed = Number(value);
      if (!Number.isSafeInteger(parsed)) throw new ValidationError(`${name} must be a whole number`);
      return parsed;
    };
    const from = number(request.query.from, 'from');
    const limit = number(request.query.limit, 'limit') ?? 100;
    const direction = request.query.direction as 'forwards' | 'backwards' | undefined;
    const events = [];
    for await (const event of options.store.readStream(request.params.streamId, { limit, ...(from !== undefined ? { from } : {}), ...(direction ? { direction } : {}) })) events.push(event);
    return { streamId: request.params.streamId, events, info: await options.store.streamInfo(request.params.streamId) };
  });

  return app;
}
