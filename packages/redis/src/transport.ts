import { randomUUID } from 'node:crypto';
import {
  systemClock,
  TransportClosedError,
  TransportConfigurationError,
  TransportUnavailableError,
  type Clock,
  type ConsumeOptions,
  type Consumer,
  type Transport,
  type TransportError,
  type TransportMessage,
} from '@eventline/core';
import { Redis } from 'ioredis';
import { RedisConsumer, STOP_GRACE_MS, withTimeout, type ConsumerSettings } from './consumer.js';
import { redisError } from './errors.js';
import { packStrings } from './pack.js';
import { run, SCRIPTS } from './scripts.js';

export interface RedisTransportOptions {
  /** Where Redis is (default: `REDIS_URL`, else `redis://127.0.0.1:6379`). Ignored when `client` is given. */
  readonly url?: string;
  /** Prefix of every key the transport uses (default `eventline`): the stream is `<prefix>:events`. */
  readonly prefix?: string;
  /** Trims the stream to about this many entries on publish (`XADD MAXLEN ~`). Default: no trimming. */
  readonly maxLength?: number;
  /** A member's entries idle for longer than this are taken over by another member (default 30 000 ms). */
  readonly claimIdleMs?: number;
  /**
   * A client you own, used for commands (the transport creates one blocking connection per consumer with
   * `client.duplicate()`, and closes only those). Default: a client the transport creates and closes.
   */
  readonly client?: Redis;
  /** How long a published id is remembered to drop a re-published copy (default 3 600 000 ms, one hour). */
  readonly dedupeWindowMs?: number;
  /** Most entries a consumer takes from the group at once (default 10). */
  readonly batchSize?: number;
  /** Longest blocking wait for new entries before a consumer looks again (default 5000 ms). */
  readonly blockMs?: number;
  /**
   * How often a consumer looks whether an entry that waits behind another member's entry of its stream may run
   * (default 500 ms). The other member wakes it when it acknowledges its entry; this is the safety net.
   */
  readonly pollMs?: number;
  /** Connection and consumer errors the transport recovers from (it reconnects and retries); default: ignored. */
  readonly onError?: (error: TransportError) => void;
  /**
   * Time for the consumers' own schedule: handler retry delays, when to take over idle entries, check waiting heads
   * and touch held entries, back-off after errors, stop()'s bound. Default: the system's. Redis's own times (the
   * idle time of entries, the blocking wait, the de-duplication window) stay Redis's.
   */
  readonly clock?: Clock;
}

/** A {@link Transport} on Redis Streams. */
export interface RedisTransport extends Transport {
  readonly prefix: string;
  /** The Redis stream that carries the messages: `<prefix>:events`. */
  readonly streamKey: string;
  /**
   * Drops the connections at once, as a crash of the process would: messages in progress are neither acknowledged
   * nor released, so other members take them over after `claimIdleMs`. For tests of failure handling.
   */
  destroy(): void;
}

const DEFAULTS = {
  prefix: 'eventline',
  claimIdleMs: 30_000,
  dedupeWindowMs: 3_600_000,
  batchSize: 10,
  blockMs: 5_000,
  pollMs: 500,
};
/** Most messages one publish script call carries; a larger batch is sent as a chain of calls (see PUBLISH in scripts.ts). */
const PUBLISH_CHUNK = 100;
const PUBLISH_CHUNK_BYTES = 4 * 1024 * 1024;

export function createRedisTransport(options: RedisTransportOptions = {}): RedisTransport {
  const prefix = options.prefix ?? DEFAULTS.prefix;
  const streamKey = `${prefix}:events`;
  const claimIdleMs = positive('claimIdleMs', options.claimIdleMs ?? DEFAULTS.claimIdleMs);
  const dedupeWindowMs = positive('dedupeWindowMs', options.dedupeWindowMs ?? DEFAULTS.dedupeWindowMs);
  if (options.maxLength !== undefined) positive('maxLength', options.maxLength);
  const settings: ConsumerSettings = {
    prefix,
    streamKey,
    claimIdleMs,
    batchSize: positive('batchSize', options.batchSize ?? DEFAULTS.batchSize),
    blockMs: positive('blockMs', options.blockMs ?? DEFAULTS.blockMs),
    pollMs: positive('pollMs', options.pollMs ?? DEFAULTS.pollMs),
    clock: options.clock ?? systemClock,
    onError: options.onError ?? (() => undefined),
  };

  const owned = !options.client;
  const redis = options.client ?? new Redis(options.url ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  if (owned) redis.on('error', (error: unknown) => settings.onError(redisError('connection', error)));
  const consumers = new Set<RedisConsumer>();
  let closed = false;
  let destroyed = false;

  return {
    name: 'redis-streams',
    prefix,
    streamKey,

    async publish(messages: readonly TransportMessage[]): Promise<void> {
      if (closed) throw new TransportClosedError('redis', 'publish', 'the transport is closed; create a new transport');
      // A chain of script calls, sent without waiting between them, each refusing to run unless the one before it
      // completed (see PUBLISH in scripts.ts): Redis runs a call while the next one is still being sent.
      const chain = [streamKey, `${prefix}:chain:${randomUUID()}`];
      const calls: Array<Array<string | number | Buffer>> = [];
      const chunk = (fields: string[], last: boolean) => [
        `${prefix}:dedupe:`,
        dedupeWindowMs,
        options.maxLength ?? '',
        calls.length,
        last ? 1 : 0,
        packStrings(fields),
      ];
      let fields: string[] = [];
      let bytes = 0;
      for (const message of messages) {
        const headers = JSON.stringify(message.headers);
        const size =
          message.id.length + message.subject.length + message.streamId.length + message.body.length + headers.length;
        if (fields.length > 0 && (fields.length / 5 >= PUBLISH_CHUNK || bytes + size > PUBLISH_CHUNK_BYTES)) {
          calls.push(chunk(fields, false));
          fields = [];
          bytes = 0;
        }
        fields.push(message.id, message.subject, message.streamId, message.body, headers);
        bytes += size;
      }
      if (fields.length > 0) calls.push(chunk(fields, true));
      if (calls.length === 0) return;
      const results = await Promise.allSettled(calls.map((call) => run(redis, SCRIPTS.publish, chain, call)));
      const failed = results.find((result) => result.status === 'rejected');
      if (failed) throw redisError('publish', failed.reason);
      if (results.some((result) => result.status === 'fulfilled' && result.value === -1)) {
        throw new TransportUnavailableError(
          'redis',
          'publish',
          'a part of the batch did not run because the part before it did not complete; publish the batch again',
        );
      }
    },

    async consume(consumeOptions: ConsumeOptions): Promise<Consumer> {
      if (closed) throw new TransportClosedError('redis', 'consume', 'the transport is closed; create a new transport');
      const consumer = new RedisConsumer(redis, settings, consumeOptions, () => consumers.delete(consumer));
      consumers.add(consumer); // so that close() or destroy() during start() reaches it
      try {
        await consumer.start();
      } catch (error) {
        consumers.delete(consumer);
        throw error;
      }
      return consumer;
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      if (destroyed) return;
      await Promise.all([...consumers].map((consumer) => consumer.stop()));
      if (owned) {
        // QUIT waits for the replies of earlier commands; without a connection it would wait for a reconnection.
        if (redis.status === 'ready')
          await withTimeout(redis.quit(), STOP_GRACE_MS, settings.clock, 'close').catch(() => redis.disconnect());
        else redis.disconnect();
      }
    },

    destroy(): void {
      closed = true;
      destroyed = true;
      for (const consumer of consumers) consumer.destroy();
      consumers.clear();
      if (owned) redis.disconnect();
    },
  };
}

function positive(name: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0))
    throw new TransportConfigurationError('redis', 'configure', `${name} must be a positive number, got ${value}`);
  return value;
}
