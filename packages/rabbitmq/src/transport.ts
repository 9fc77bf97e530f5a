import amqp, { type Channel, type ChannelModel } from 'amqplib';
import {
  systemClock,
  TransportClosedError,
  TransportConfigurationError,
  TransportError,
  TransportUnavailableError,
  type Clock,
  type ConsumeOptions,
  type Consumer,
  type Transport,
  type TransportMessage,
} from '@eventline/core';
import { toError } from '@eventline/core/backend';
import { GroupMember, type GroupSettings } from './group-member.js';
import { Session } from './session.js';
import { declareNamespace, namesFor, PRIVATE_HEADERS, type RabbitMqNames, type RetentionOptions } from './topology.js';

export const DEFAULT_AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672';

export interface RabbitMqReconnectOptions {
  /** Attempts before giving up (the transport then fails for good and reports it). Default 60. */
  readonly maxAttempts?: number;
  /** Delay before the first attempt, doubled on each (default 200 ms), up to `maxDelayMs` (default 5000 ms). */
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Longest time rejoining the consumer groups on a new connection may take before the attempt counts as failed. Default 30 s. */
  readonly rejoinTimeoutMs?: number;
}

export interface RabbitMqTransportOptions {
  /** AMQP URL. Default: the `AMQP_URL` environment variable, else `amqp://guest:guest@127.0.0.1:5672`. */
  readonly url?: string;
  /** Prefix of every name on the broker. Default `eventline`. */
  readonly prefix?: string;
  /** The topic exchange; the stream and the queues are named after it. Default `<prefix>.events`. */
  readonly exchange?: string;
  /**
   * A connection to use instead of `url`: an amqplib connection (the transport then never closes it, and cannot
   * reconnect once it is closed), or a function that opens one (called again to reconnect; the transport owns it).
   */
  readonly connection?: ChannelModel | (() => Promise<ChannelModel>);
  /** Partitions of every consumer group (by stream id): the unit of parallelism and of hand-over. Default 4; the same for every client of a namespace. */
  readonly partitions?: number;
  /** Retention of the stream the groups read (see README). */
  readonly retention?: RetentionOptions;
  /** How often group members announce themselves (membership, balancing). Default 1000 ms. */
  readonly heartbeatMs?: number;
  /** Messages read ahead from the stream per partition (AMQP prefetch). Default 100. */
  readonly readAhead?: number;
  readonly reconnect?: RabbitMqReconnectOptions;
  /** Connection losses, reconnection failures, configuration conflicts found while consuming. Default: `console.error`. */
  readonly onError?: (error: TransportError) => void;
  /**
   * Time for the transport's own waits and stamps: reconnection delays, heartbeats and membership, hand-over
   * cool-downs, handler retry delays, message timestamps. Default: the system's.
   */
  readonly clock?: Clock;
  /** The transport's `name`. Default `rabbitmq`. */
  readonly name?: string;
}

export interface RabbitMqTransport extends Transport {
  readonly exchange: string;
  readonly names: RabbitMqNames;
  /** Connected now (not connecting yet, reconnecting, failed or closed). */
  readonly connected: boolean;
  /** The exchanges and queues this client declared (for clean-up and operations). */
  topology(): { exchanges: string[]; queues: string[] };
  /**
   * Destroys the connection's socket at once: no acknowledgement, no close handshake, no reconnection. The broker
   * sees a crashed client (its unacknowledged messages return to their queues). For fault tests.
   */
  destroy(): void;
}

type State = 'idle' | 'open' | 'reconnecting' | 'failed' | 'closed' | 'killed';

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):([^@/]*)@/, '//$1:***@');
}

function withHeartbeat(url: string): string {
  if (/[?&]heartbeat=/.test(url)) return url;
  return `${url}${url.includes('?') ? '&' : '?'}heartbeat=10`;
}

function positiveInteger(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1)
    throw new TransportConfigurationError('rabbitmq', 'configure', `${what} must be a positive integer, got ${value}`);
  return value;
}

/**
 * The eventline transport on RabbitMQ: publish to a durable topic exchange with confirms; every message is kept in a
 * stream; consumer groups read the stream by partition, each partition's cursor held by one member at a time (see
 * README for the guarantees).
 */
export function createRabbitMqTransport(options: RabbitMqTransportOptions = {}): RabbitMqTransport {
  const prefix = options.prefix ?? 'eventline';
  const exchange = options.exchange ?? `${prefix}.events`;
  const names = namesFor(exchange);
  const url = options.url ?? process.env.AMQP_URL ?? DEFAULT_AMQP_URL;
  const partitions = positiveInteger(options.partitions ?? 4, 'partitions');
  const heartbeatMs = positiveInteger(options.heartbeatMs ?? 1000, 'heartbeatMs');
  const readAhead = positiveInteger(options.readAhead ?? 100, 'readAhead');
  const maxAttempts = positiveInteger(options.reconnect?.maxAttempts ?? 60, 'reconnect.maxAttempts');
  const initialDelayMs = options.reconnect?.initialDelayMs ?? 200;
  const maxDelayMs = options.reconnect?.maxDelayMs ?? 5000;
  const rejoinTimeoutMs = options.reconnect?.rejoinTimeoutMs ?? 30_000;
  const clock = options.clock ?? systemClock;
  const onError =
    options.onError ?? ((error: TransportError) => console.error(`[eventline/rabbitmq ${exchange}] ${error.message}`));
  const report = (error: TransportError): void => {
    try {
      onError(error);
    } catch {
      // a failing error callback must not break reconnection or consumption
    }
  };
  const declaredQueues = new Set<string>();
  const members = new Set<GroupMember>();
  const settings: GroupSettings = {
    names,
    partitions,
    heartbeatMs,
    readAhead,
    clock,
    report,
    declared: (queue) => declaredQueues.add(queue),
  };

  let state: State = 'idle';
  let session: Session | null = null;
  let opening: Promise<Session> | null = null;
  let failure: TransportError | null = null;
  let generation = 0;
  /** Aborted by close() and destroy(): ends a reconnection delay at once. */
  const ending = new AbortController();
  let externalClosed = false;
  const external = options.connection && typeof options.connection !== 'function' ? options.connection : null;
  external?.on('close', () => {
    externalClosed = true;
  });

  /** Closed or destroyed (a function, so that the compiler does not narrow the state across awaits). */
  const gone = (): boolean => state === 'closed' || state === 'killed';

  const unavailable = (operation: string): TransportError => {
    switch (state) {
      case 'closed':
        return new TransportClosedError(
          'rabbitmq',
          operation,
          `transport ${exchange} is closed; create a new transport`,
        );
      case 'killed':
        return new TransportClosedError('rabbitmq', operation, `transport ${exchange} was destroyed; create a new one`);
      case 'failed':
        return failure ?? new TransportClosedError('rabbitmq', operation, `transport ${exchange} failed for good`);
      default:
        return new TransportUnavailableError(
          'rabbitmq',
          operation,
          `transport ${exchange} is disconnected from ${redact(url)} and reconnecting; publish again once it is back`,
        );
    }
  };

  const connectModel = async (): Promise<{ model: ChannelModel; owned: boolean }> => {
    if (typeof options.connection === 'function') return { model: await options.connection(), owned: true };
    if (external) {
      if (externalClosed)
        throw new TransportClosedError(
          'rabbitmq',
          'connect',
          `the connection given to transport ${exchange} is closed; create a new transport with an open connection`,
        );
      return { model: external, owned: false };
    }
    return {
      model: await amqp.connect(withHeartbeat(url), {
        noDelay: true,
        timeout: 10_000,
        clientProperties: { connection_name: `eventline ${exchange}` },
      }),
      owned: true,
    };
  };

  const onLost = (lost: Session, error: Error): void => {
    if (session !== lost) return;
    session = null;
    for (const member of members) member.detach(lost);
    if (state !== 'open') return; // closing, or a reconnection attempt failing (the loop goes on)
    if (!external) {
      report(
        new TransportUnavailableError(
          'rabbitmq',
          'connection',
          `connection lost (${error.message}); reconnecting`,
          error,
        ),
      );
      state = 'reconnecting';
      void reconnectLoop(error);
    } else if (externalClosed) {
      fail(
        new TransportClosedError(
          'rabbitmq',
          'connection',
          `the connection given to transport ${exchange} closed (${error.message}); it cannot reconnect: create a new transport with an open connection`,
          error,
        ),
      );
    } else {
      // A channel failed on a connection that is still open: start again on it.
      report(
        new TransportUnavailableError(
          'rabbitmq',
          'connection',
          `channel failed (${error.message}); starting again`,
          error,
        ),
      );
      state = 'reconnecting';
      void reconnectLoop(error);
    }
  };

  const open = async (): Promise<Session> => {
    let connected: { model: ChannelModel; owned: boolean };
    try {
      connected = await connectModel();
    } catch (error) {
      if (error instanceof TransportError) throw error;
      throw new TransportUnavailableError(
        'rabbitmq',
        'connect',
        `RabbitMQ at ${redact(url)} is not reachable: ${toError(error).message}`,
        error,
      );
    }
    let opened: Session | undefined;
    try {
      opened = await Session.open(connected.model, ++generation, connected.owned, onLost, clock);
      await opened.ensureNamespace((channel) => declareNamespace(channel, names, options.retention));
    } catch (error) {
      const alive = opened?.alive ?? false;
      await opened?.close();
      if (error instanceof TransportError) throw error;
      throw new (alive ? TransportError : TransportUnavailableError)(
        'rabbitmq',
        'connect',
        `setting up channels and the namespace of ${exchange} failed: ${toError(error).message}`,
        error,
      );
    }
    return opened;
  };

  const ensureSession = async (operation: string): Promise<Session> => {
    if (state === 'open' && session?.alive) return session;
    if (state !== 'idle') throw unavailable(operation);
    opening ??= open().then(
      async (opened) => {
        opening = null;
        if (state !== 'idle') {
          await opened.close();
          throw unavailable(operation);
        }
        session = opened;
        state = 'open';
        return opened;
      },
      (error: unknown) => {
        opening = null;
        throw error;
      },
    );
    return opening;
  };

  /** `work`, or a TransportUnavailableError when it takes longer than `ms` on the clock. */
  const withTimeout = async <T>(work: Promise<T>, ms: number, what: string): Promise<T> => {
    const bound = new AbortController();
    const timeout = clock.sleep(ms, bound.signal).then((): never => {
      throw new TransportUnavailableError('rabbitmq', 'reconnect', `${what} took more than ${ms} ms`);
    });
    timeout.catch(() => undefined);
    try {
      return await Promise.race([work, timeout]);
    } finally {
      bound.abort();
    }
  };

  /** Bounded: `maxAttempts` tries with exponential back-off; rejoins every consumer group on the new connection. */
  const reconnectLoop = async (cause: Error): Promise<void> => {
    let last = cause;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      await clock.sleep(Math.min(maxDelayMs, initialDelayMs * 2 ** (attempt - 1)), ending.signal);
      if (state !== 'reconnecting') return;
      let opened: Session | null = null;
      try {
        opened = await open();
        if (state !== 'reconnecting') {
          await opened.close();
          return;
        }
        session = opened;
        const joining = opened;
        await withTimeout(
          (async () => {
            for (const member of [...members]) await member.attach(joining);
          })(),
          rejoinTimeoutMs,
          'rejoining the consumer groups',
        );
        if (!opened.alive)
          throw new TransportUnavailableError(
            'rabbitmq',
            'reconnect',
            'the connection was lost again while rejoining the consumer groups',
          );
        state = 'open';
        return;
      } catch (error) {
        last = toError(error);
        if (opened) {
          if (session === opened) {
            session = null;
            for (const member of members) member.detach(opened);
          }
          await opened.close();
        }
      }
    }
    fail(
      new TransportClosedError(
        'rabbitmq',
        'reconnect',
        `transport ${exchange} gave up reconnecting to ${redact(url)} after ${maxAttempts} attempts (${last.message}); ` +
          'create a new transport once RabbitMQ is back, or allow more attempts (reconnect.maxAttempts)',
        last,
      ),
    );
  };

  const fail = (error: TransportError): void => {
    state = 'failed';
    failure = error;
    for (const member of members) member.kill();
    members.clear();
    report(error);
  };

  return {
    name: options.name ?? 'rabbitmq',
    exchange,
    names,
    get connected() {
      return state === 'open' && session?.alive === true;
    },

    async publish(messages: readonly TransportMessage[]): Promise<void> {
      const current = await ensureSession('publish');
      if (messages.length === 0) return;
      try {
        await current.sendBatch(current.publishChannel, exchange, messages, (message) => ({
          ...message.headers,
          [PRIVATE_HEADERS.streamId]: message.streamId,
        }));
      } catch (error) {
        if (!current.alive)
          throw new TransportUnavailableError(
            'rabbitmq',
            'publish',
            `connection lost before the broker confirmed every message; publish them again (${toError(error).message})`,
            error,
          );
        if (error instanceof TransportError) throw error;
        throw new TransportError('rabbitmq', 'publish', toError(error).message, error);
      }
    },

    async consume(consumeOptions: ConsumeOptions): Promise<Consumer> {
      if (state === 'closed' || state === 'killed' || state === 'failed') throw unavailable('consume');
      const member = new GroupMember(settings, consumeOptions, (stopped) => members.delete(stopped));
      if (state === 'reconnecting') {
        members.add(member); // joins when the connection is back
        return member;
      }
      const current = await ensureSession('consume');
      members.add(member);
      try {
        await member.attach(current);
      } catch (error) {
        if (gone()) return member; // closed or destroyed meanwhile: a stopped consumer
        if (!current.alive && members.has(member)) return member; // lost meanwhile: it joins after reconnecting
        await member.stop();
        if (error instanceof TransportError) throw error;
        throw new TransportError(
          'rabbitmq',
          `consume (group ${consumeOptions.group})`,
          `joining the group failed: ${toError(error).message}`,
          error,
        );
      }
      return member;
    },

    async close(): Promise<void> {
      if (state === 'closed') return;
      const killed = state === 'killed';
      state = 'closed';
      ending.abort();
      for (const member of members) member.kill();
      members.clear();
      const current = session;
      session = null;
      if (current && !killed) await current.close();
      await opening?.catch(() => undefined);
    },

    destroy(): void {
      if (state === 'closed' || state === 'killed') return;
      state = 'killed';
      ending.abort();
      for (const member of members) member.kill();
      members.clear();
      const current = session;
      session = null;
      current?.crash();
    },

    topology() {
      return { exchanges: [exchange, names.members], queues: [names.stream, ...declaredQueues] };
    },
  };
}

/**
 * Closes the transports and deletes every exchange and queue they declared (their `topology()`): the clean-up of a
 * namespace that is no longer used, such as a test's or a benchmark's. Connects to `url` (default: `AMQP_URL`, else
 * `amqp://guest:guest@127.0.0.1:5672`). Names already gone are skipped.
 */
export async function deleteRabbitMqTopology(
  transports: readonly RabbitMqTransport[],
  url = process.env.AMQP_URL ?? DEFAULT_AMQP_URL,
): Promise<void> {
  const queues = new Set<string>();
  const exchanges = new Set<string>();
  for (const transport of transports) {
    await transport.close().catch(() => undefined);
    const topology = transport.topology();
    topology.queues.forEach((queue) => queues.add(queue));
    topology.exchanges.forEach((exchange) => exchanges.add(exchange));
  }
  if (queues.size === 0 && exchanges.size === 0) return;
  const connection = await amqp.connect(url);
  try {
    for (const [names, remove] of [
      [queues, (channel: Channel, name: string) => channel.deleteQueue(name)],
      [exchanges, (channel: Channel, name: string) => channel.deleteExchange(name)],
    ] as const) {
      for (const name of names) {
        // A channel each: deleting a name that is gone closes the channel with an error.
        const channel = await connection.createChannel();
        channel.on('error', () => undefined);
        await remove(channel, name).catch(() => undefined);
        await channel.close().catch(() => undefined);
      }
    }
  } finally {
    await connection.close().catch(() => undefined);
  }
}
