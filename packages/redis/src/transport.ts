import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { ConsumeOptions, Consumer, ReceivedMessage, Transport, TransportMessage } from '@eventline/core';
import { Redis } from 'ioredis';
import { compareEntryIds } from './ids.js';
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
  readonly onError?: (error: unknown) => void;
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
/** A consumer stops taking new entries while it holds this many (entries waiting behind another member's). */
const MAX_HELD = 1000;
/** Entries a reclaim takes at once, and pages of them per reclaim. */
const RECLAIM_COUNT = 100;
const RECLAIM_PAGES = 10;
/** The idle time a stopping member gives what it releases: more than any member's claimIdleMs, so the next reclaim takes it. */
const RELEASED_IDLE_MS = 86_400_000;
/** How long stop() waits for Redis (the acknowledgement of the last message, the release of the rest). */
const STOP_GRACE_MS = 5_000;

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
    onError: options.onError ?? (() => undefined),
  };

  const owned = !options.client;
  const redis = options.client ?? new Redis(options.url ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  if (owned) redis.on('error', settings.onError);
  const consumers = new Set<RedisConsumer>();
  let closed = false;
  let destroyed = false;

  return {
    name: 'redis-streams',
    prefix,
    streamKey,

    async publish(messages: readonly TransportMessage[]): Promise<void> {
      if (closed) throw new Error('this Redis transport is closed');
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
      if (failed) throw failed.reason;
      if (results.some((result) => result.status === 'fulfilled' && result.value === -1)) {
        throw new Error(
          'Redis publish: a part of the batch did not run because the part before it did not complete; publish the batch again',
        );
      }
    },

    async consume(consumeOptions: ConsumeOptions): Promise<Consumer> {
      if (closed) throw new Error('this Redis transport is closed');
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
        if (redis.status === 'ready') await withTimeout(redis.quit(), STOP_GRACE_MS).catch(() => redis.disconnect());
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
    throw new RangeError(`createRedisTransport: ${name} must be a positive number, got ${value}`);
  return value;
}

interface ConsumerSettings {
  readonly prefix: string;
  readonly streamKey: string;
  readonly claimIdleMs: number;
  readonly batchSize: number;
  readonly blockMs: number;
  readonly pollMs: number;
  readonly onError: (error: unknown) => void;
}

/** An entry this consumer holds in the group (it is in the group's pending list under the consumer's name). */
interface Held {
  readonly entryId: string;
  readonly message: TransportMessage;
  /** Its stream's key in the group's order index (`<prefix>:order:<group>:<streamId>`). */
  readonly orderKey: string;
  /** No earlier entry of its stream is pending in the group: it may run. */
  head: boolean;
  /** The delivery count Redis keeps for it. */
  deliveries: number;
  /** When a failed entry is due again (0: it did not fail). */
  retryAt: number;
  /** The handler succeeded; only the acknowledgement is left. */
  handled: boolean;
  /** The handler was given it (at least once) by this consumer. */
  started: boolean;
}

/**
 * One member of a consumer group (a Redis consumer with a name of its own). It processes one message at a time: the
 * first entry it holds, in stream order, that is the head of its stream in the group's order index (see scripts.ts).
 * Entries that wait behind another member's entry of their stream are held, and kept alive, until that member
 * acknowledges its entry and wakes this one (or the periodic head check finds them free).
 *
 * Each turn of its loop: take over idle entries when due (XAUTOCLAIM), run the first runnable entry (a failed one when
 * its retry is due), else check waiting heads when due, else read new entries, else block on its own connection
 * until a new entry, a wake-up or the next due time.
 */
class RedisConsumer implements Consumer {
  private readonly name = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  private readonly orderPrefix: string;
  private readonly wakePrefix: string;
  private readonly wakeKey: string;
  private lastWakeId = '0-0';
  private readonly filters: string[];
  private readonly retryDelayMs: number;
  private readonly reclaimEveryMs: number;
  private readonly blocking: Redis;
  private held: Held[] = [];
  private stopping = false;
  private destroyed = false;
  private loop: Promise<void> = Promise.resolve();
  private stopped: Promise<void> | undefined;
  private touchTimer: ReturnType<typeof setInterval> | undefined;
  private touching = false;
  private nextReclaimAt = 0;
  private nextHeadCheckAt = 0;
  private readonly wakers = new Set<() => void>();
  /** The handler running now, if any. */
  private handling: Promise<void> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly settings: ConsumerSettings,
    private readonly options: ConsumeOptions,
    private readonly onStopped: () => void,
  ) {
    this.orderPrefix = `${settings.prefix}:order:${options.group}:`;
    this.wakePrefix = `${settings.prefix}:wake:${options.group}:`;
    this.wakeKey = this.wakePrefix + this.name;
    this.filters = [...(options.subjects ?? [])];
    this.retryDelayMs = options.retryDelayMs ?? 1000;
    this.reclaimEveryMs = Math.max(10, Math.floor(settings.claimIdleMs / 2));
    // A connection of its own for the blocking wait, so that commands and stop() never queue behind it.
    this.blocking = redis.duplicate();
    this.blocking.on('error', settings.onError);
  }

  async start(): Promise<void> {
    try {
      await this.redis.xgroup(
        'CREATE',
        this.settings.streamKey,
        this.options.group,
        this.options.from === 'new' ? '$' : '0',
        'MKSTREAM',
      );
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('BUSYGROUP'))) {
        this.blocking.disconnect();
        throw error;
      }
    }
    // Consumers of crashed processes that hold nothing are removed from the group.
    await run(
      this.redis,
      SCRIPTS.prune,
      [this.settings.streamKey],
      [this.options.group, this.name, Math.max(60_000, this.settings.claimIdleMs * 10)],
    ).catch(this.settings.onError);
    if (this.stopping) return; // stopped (or the transport closed) while starting
    const touchEvery = Math.max(10, Math.floor(this.settings.claimIdleMs / 3));
    this.touchTimer = setInterval(() => void this.touch(), touchEvery);
    this.touchTimer.unref();
    this.loop = this.runLoop();
  }

  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  /** Stops at once without acknowledging or releasing anything (see RedisTransport.destroy). */
  destroy(): void {
    this.destroyed = true;
    this.stopping = true;
    clearInterval(this.touchTimer);
    this.wake();
    this.blocking.disconnect();
  }

  private async shutdown(): Promise<void> {
    if (this.destroyed) return this.onStopped();
    this.stopping = true;
    this.wake();
    this.blocking.disconnect(); // ends a blocking wait at once
    await this.handling; // the message in progress finishes first, however long it takes
    try {
      // Then its acknowledgement, and the release of what it holds; bounded, for when Redis is unreachable (the
      // client would keep a command for its reconnection attempts): what is not released is taken over after
      // claimIdleMs, what is not acknowledged is delivered again.
      await withTimeout(this.loop, STOP_GRACE_MS);
      clearInterval(this.touchTimer);
      if (this.destroyed) return;
      await withTimeout(this.release(), STOP_GRACE_MS);
    } catch (error) {
      this.settings.onError(error);
    } finally {
      clearInterval(this.touchTimer);
      this.onStopped();
    }
  }

  private async release(): Promise<void> {
    for (const held of this.held.filter((h) => h.handled)) await this.ack(held);
    // What it holds and did not process is marked idle, so another member takes it over at once.
    const unstarted = this.held.filter((h) => !h.started).flatMap((h) => [h.entryId, Math.max(0, h.deliveries - 1)]);
    await run(
      this.redis,
      SCRIPTS.release,
      [this.settings.streamKey],
      [this.options.group, this.name, Math.max(this.settings.claimIdleMs, RELEASED_IDLE_MS), ...unstarted],
    );
    this.held = [];
    await this.redis.del(this.wakeKey);
  }

  private async runLoop(): Promise<void> {
    let backoff = 50;
    let lastId: string | undefined;
    while (!this.stopping) {
      try {
        if (Date.now() >= this.nextReclaimAt) {
          await this.reclaim();
          this.nextReclaimAt = Date.now() + this.reclaimEveryMs;
        }
        const next = this.runnable(Date.now());
        if (next) {
          await this.process(next);
        } else if (this.waiting().length > 0 && Date.now() >= this.nextHeadCheckAt && (await this.checkHeads())) {
          // an entry that waited behind another member's may run now
        } else {
          const read = this.held.length < MAX_HELD ? await this.read() : undefined;
          if (read === undefined || read.lastId !== undefined) {
            lastId = read?.lastId ?? lastId;
            await this.waitForWork(read ? lastId : undefined);
          }
        }
        backoff = 50;
      } catch (error) {
        if (this.stopping) break;
        this.settings.onError(error);
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  /** The first held entry, in stream order, that may run now. */
  private runnable(now: number): Held | undefined {
    return this.held.find((h) => h.handled || (h.head && h.retryAt <= now));
  }

  /** Held entries that are the first of their stream in this consumer and wait behind another member's entry. */
  private waiting(): Held[] {
    const seen = new Set<string>();
    const out: Held[] = [];
    for (const h of this.held) {
      if (seen.has(h.orderKey)) continue;
      seen.add(h.orderKey);
      if (!h.head && !h.handled) out.push(h);
    }
    return out;
  }

  private async process(held: Held): Promise<void> {
    if (held.handled) return this.ack(held);
    if (held.retryAt > 0) {
      const deliveries = Number(
        await run(this.redis, SCRIPTS.retry, [this.settings.streamKey], [this.options.group, this.name, held.entryId]),
      );
      if (!(deliveries > 0)) return this.drop(held.entryId); // taken over by another member meanwhile
      held.deliveries = deliveries;
      held.retryAt = 0;
    }
    held.started = true;
    const received: ReceivedMessage = {
      ...held.message,
      headers: { ...held.message.headers },
      deliveryCount: held.deliveries,
    };
    const handling = Promise.resolve()
      .then(() => this.options.handler(received))
      .then(
        () => true,
        () => false,
      );
    this.handling = handling.then(() => undefined);
    const ok = await handling;
    this.handling = undefined;
    if (this.destroyed) return;
    if (!ok) {
      held.retryAt = Date.now() + this.retryDelayMs; // stays pending; its stream waits for it
      return;
    }
    held.handled = true;
    await this.ack(held);
  }

  private async ack(held: Held): Promise<void> {
    const reply = asArray(
      await run(
        this.redis,
        SCRIPTS.ack,
        [this.settings.streamKey],
        [
          this.options.group,
          this.name,
          held.entryId,
          held.orderKey,
          this.wakePrefix,
          Math.max(60_000, this.settings.claimIdleMs * 10),
        ],
      ),
    );
    this.drop(held.entryId);
    this.headIs(String(reply[1] ?? ''));
  }

  /** An entry became the head of its stream: if this consumer holds it, it may run. */
  private headIs(entryId: string): void {
    const held = entryId ? this.held.find((h) => h.entryId === entryId) : undefined;
    if (held) held.head = true;
  }

  /** Reads new entries for this consumer; `lastId` (what to wait after) when there were none. */
  private async read(): Promise<{ lastId?: string }> {
    const reply = asArray(
      await run(
        this.redis,
        SCRIPTS.read,
        [this.settings.streamKey],
        [
          this.options.group,
          this.name,
          this.settings.batchSize,
          this.orderPrefix,
          this.filters.length,
          ...this.filters,
        ],
      ),
    );
    if (Number(reply[0]) === 0) return { lastId: String(reply[1]) };
    for (const entry of asArray(reply[1])) {
      const [entryId, fields, head] = asArray(entry);
      this.hold(String(entryId), fields, Number(head) === 1, 1);
    }
    return {};
  }

  /** Takes over entries other members left idle for longer than claimIdleMs (crashed, hung or stopped). */
  private async reclaim(): Promise<void> {
    let start = '0-0';
    for (let page = 0; page < RECLAIM_PAGES; page++) {
      const reply = asArray(
        await run(
          this.redis,
          SCRIPTS.reclaim,
          [this.settings.streamKey],
          [
            this.options.group,
            this.name,
            this.settings.claimIdleMs,
            start,
            RECLAIM_COUNT,
            this.orderPrefix,
            this.filters.length,
            ...this.filters,
          ],
        ),
      );
      for (const entry of asArray(reply[1])) {
        const [entryId, fields, head, deliveries] = asArray(entry);
        this.hold(String(entryId), fields, Number(head) === 1, Number(deliveries) || 1);
      }
      start = String(reply[0]);
      if (start === '0-0') break;
    }
  }

  private hold(entryId: string, fields: unknown, head: boolean, deliveries: number): void {
    const known = this.held.find((h) => h.entryId === entryId);
    if (known) {
      known.head ||= head;
      known.deliveries = Math.max(known.deliveries, deliveries);
      return;
    }
    const message = toMessage(fields);
    const held: Held = {
      entryId,
      message,
      orderKey: this.orderPrefix + message.streamId,
      head,
      deliveries,
      retryAt: 0,
      handled: false,
      started: false,
    };
    const at = this.held.findIndex((h) => compareEntryIds(h.entryId, entryId) > 0);
    if (at < 0) this.held.push(held);
    else this.held.splice(at, 0, held);
  }

  private drop(entryId: string): void {
    this.held = this.held.filter((h) => h.entryId !== entryId);
  }

  /** Whether an entry that waited behind another member's entry of its stream may run now. */
  private async checkHeads(): Promise<boolean> {
    this.nextHeadCheckAt = Date.now() + this.settings.pollMs;
    const waiting = this.waiting();
    const pairs = waiting.flatMap((h) => [h.entryId, h.message.streamId]);
    const reply = asArray(
      await run(
        this.redis,
        SCRIPTS.heads,
        [this.settings.streamKey],
        [this.options.group, this.name, this.orderPrefix, ...pairs],
      ),
    );
    let changed = false;
    waiting.forEach((h, i) => {
      const status = Number(reply[i]);
      if (status === 1) {
        h.head = true;
        changed = true;
      } else if (status === 0) {
        this.drop(h.entryId); // no longer this consumer's: taken over, or lost with the group
        changed = true;
      }
    });
    return changed;
  }

  /** Keeps the held entries from being taken over while this consumer is alive; forgets those it lost. */
  private async touch(): Promise<void> {
    if (this.touching || this.stopping || this.held.length === 0) return;
    this.touching = true;
    try {
      const ids = this.held.map((h) => h.entryId);
      const lost = asArray(
        await run(this.redis, SCRIPTS.touch, [this.settings.streamKey], [this.options.group, this.name, ...ids]),
      );
      for (const id of lost) {
        const held = this.held.find((h) => h.entryId === String(id));
        if (held && !held.handled) this.drop(held.entryId);
      }
    } catch (error) {
      this.settings.onError(error);
    } finally {
      this.touching = false;
    }
  }

  /** Waits for new entries (after `lastId`) or until the next retry, head check or reclaim is due. */
  private async waitForWork(lastId: string | undefined): Promise<void> {
    const now = Date.now();
    let until = Math.min(now + this.settings.blockMs, this.nextReclaimAt);
    for (const h of this.held) if (h.retryAt > 0) until = Math.min(until, h.retryAt);
    if (this.waiting().length > 0) until = Math.min(until, this.nextHeadCheckAt);
    const ms = Math.ceil(until - now);
    if (ms <= 0 || this.stopping) return;
    if (lastId === undefined) return this.sleep(ms);
    // Wakes up for a new entry of the group's stream, or for an entry of this consumer's that became a head.
    const reply = await this.blocking.xread(
      'COUNT',
      10,
      'BLOCK',
      ms,
      'STREAMS',
      this.settings.streamKey,
      this.wakeKey,
      lastId,
      this.lastWakeId,
    );
    for (const [key, entries] of asArray(reply).map(asArray)) {
      if (key !== this.wakeKey) continue;
      for (const [wakeId, fields] of asArray(entries).map(asArray)) {
        this.lastWakeId = String(wakeId);
        this.headIs(String(asArray(fields)[1] ?? ''));
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }

  private wake(): void {
    for (const waker of [...this.wakers]) waker();
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis transport: Redis did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function toMessage(fields: unknown): TransportMessage {
  const flat = asArray(fields);
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) map.set(String(flat[i]), String(flat[i + 1]));
  let headers: Record<string, string> = {};
  try {
    const parsed: unknown = JSON.parse(map.get('headers') ?? '{}');
    if (parsed && typeof parsed === 'object') headers = parsed as Record<string, string>;
  } catch {
    headers = {};
  }
  return {
    id: map.get('id') ?? '',
    subject: map.get('subject') ?? '',
    streamId: map.get('streamId') ?? '',
    body: map.get('body') ?? '',
    headers,
  };
}
