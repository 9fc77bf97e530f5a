import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import {
  TransportUnavailableError,
  type Clock,
  type ConsumeOptions,
  type Consumer,
  type ReceivedMessage,
  type TransportError,
  type TransportMessage,
} from '@eventline/core';
import type { Redis } from 'ioredis';
import { redisError } from './errors.js';
import { HeldEntries, type HeldEntry } from './held.js';
import { run, SCRIPTS } from './scripts.js';

export interface ConsumerSettings {
  readonly prefix: string;
  readonly streamKey: string;
  readonly claimIdleMs: number;
  readonly batchSize: number;
  readonly blockMs: number;
  readonly pollMs: number;
  readonly clock: Clock;
  readonly onError: (error: TransportError) => void;
}

/** A consumer stops taking new entries while it holds this many (entries waiting behind another member's). */
const MAX_HELD = 1000;
/** Entries a reclaim takes at once, and pages of them per reclaim. */
const RECLAIM_COUNT = 100;
const RECLAIM_PAGES = 10;
/** The idle time a stopping member gives what it releases: more than any member's claimIdleMs, so the next reclaim takes it. */
const RELEASED_IDLE_MS = 86_400_000;
/** How long stop() waits for Redis (the acknowledgement of the last message, the release of the rest). */
export const STOP_GRACE_MS = 5_000;

/**
 * One member of a consumer group (a Redis consumer with a name of its own). It processes one message at a time: the
 * first entry it holds, in stream order, that is the head of its stream in the group's order index (see scripts.ts).
 * Entries that wait behind another member's entry of their stream are held, and kept alive, until that member
 * acknowledges its entry and wakes this one (or the periodic head check finds them free).
 *
 * Each turn of its loop: take over idle entries when due (XAUTOCLAIM), run the first runnable entry (a failed one when
 * its retry is due), else check waiting heads when due, else read new entries, else block on its own connection
 * until a new entry, a wake-up or the next due time. Due times are on the clock; the blocking wait and the idle times
 * of entries are Redis's own.
 */
export class RedisConsumer implements Consumer {
  private readonly name = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  private readonly orderPrefix: string;
  private readonly wakePrefix: string;
  private readonly wakeKey: string;
  private lastWakeId = '0-0';
  private readonly filters: string[];
  private readonly retryDelayMs: number;
  private readonly reclaimEveryMs: number;
  private readonly blocking: Redis;
  private readonly held = new HeldEntries();
  private stopping = false;
  private destroyed = false;
  /** Aborted when it stops or is destroyed: ends its sleeps and its touch loop. */
  private readonly leaving = new AbortController();
  private loop: Promise<void> = Promise.resolve();
  private stopped: Promise<void> | undefined;
  private touching = false;
  private nextReclaimAt = 0;
  private nextHeadCheckAt = 0;
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
    this.blocking.on('error', (error: unknown) => settings.onError(redisError('connection', error)));
  }

  private get operation(): string {
    return `consume (group ${this.options.group})`;
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
        throw redisError(this.operation, error);
      }
    }
    // Consumers of crashed processes that hold nothing are removed from the group.
    await run(
      this.redis,
      SCRIPTS.prune,
      [this.settings.streamKey],
      [this.options.group, this.name, Math.max(60_000, this.settings.claimIdleMs * 10)],
    ).catch((error: unknown) => this.settings.onError(redisError(this.operation, error)));
    if (this.stopping) return; // stopped (or the transport closed) while starting
    this.keepAlive();
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
    this.leaving.abort();
    this.blocking.disconnect();
  }

  private async shutdown(): Promise<void> {
    if (this.destroyed) return this.onStopped();
    this.stopping = true;
    this.leaving.abort();
    this.blocking.disconnect(); // ends a blocking wait at once
    await this.handling; // the message in progress finishes first, however long it takes
    try {
      // Then its acknowledgement, and the release of what it holds; bounded, for when Redis is unreachable (the
      // client would keep a command for its reconnection attempts): what is not released is taken over after
      // claimIdleMs, what is not acknowledged is delivered again.
      await withTimeout(this.loop, STOP_GRACE_MS, this.settings.clock, 'stop');
      if (this.destroyed) return;
      await withTimeout(this.release(), STOP_GRACE_MS, this.settings.clock, 'stop');
    } catch (error) {
      this.settings.onError(redisError('stop', error));
    } finally {
      this.onStopped();
    }
  }

  private async release(): Promise<void> {
    for (const held of this.held.handledEntries()) await this.ack(held);
    // What it holds and did not process is marked idle, so another member takes it over at once.
    const unstarted = this.held.unstartedEntries().flatMap((h) => [h.entryId, Math.max(0, h.deliveries - 1)]);
    await run(
      this.redis,
      SCRIPTS.release,
      [this.settings.streamKey],
      [this.options.group, this.name, Math.max(this.settings.claimIdleMs, RELEASED_IDLE_MS), ...unstarted],
    );
    this.held.clear();
    await this.redis.del(this.wakeKey);
  }

  private async runLoop(): Promise<void> {
    const clock = this.settings.clock;
    let backoff = 50;
    let lastId: string | undefined;
    while (!this.stopping) {
      try {
        if (clock.now() >= this.nextReclaimAt) {
          await this.reclaim();
          this.nextReclaimAt = clock.now() + this.reclaimEveryMs;
        }
        const next = this.held.runnable(clock.now());
        if (next) {
          await this.process(next);
        } else if (this.held.waiting().length > 0 && clock.now() >= this.nextHeadCheckAt && (await this.checkHeads())) {
          // an entry that waited behind another member's may run now
        } else {
          const read = this.held.size < MAX_HELD ? await this.read() : undefined;
          if (read === undefined || read.lastId !== undefined) {
            lastId = read?.lastId ?? lastId;
            await this.waitForWork(read ? lastId : undefined);
          }
        }
        backoff = 50;
      } catch (error) {
        if (this.stopping) break;
        this.settings.onError(redisError(this.operation, error));
        await clock.sleep(backoff, this.leaving.signal);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  private async process(held: HeldEntry): Promise<void> {
    if (held.handled) return this.ack(held);
    if (held.retryAt > 0) {
      const deliveries = Number(
        await run(this.redis, SCRIPTS.retry, [this.settings.streamKey], [this.options.group, this.name, held.entryId]),
      );
      if (!(deliveries > 0)) return this.held.drop(held.entryId); // taken over by another member meanwhile
      this.held.retrying(held.entryId, deliveries);
    }
    this.held.markStarted(held.entryId);
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
      this.held.scheduleRetry(held.entryId, this.settings.clock.now() + this.retryDelayMs); // its stream waits for it
      return;
    }
    this.held.markHandled(held.entryId);
    await this.ack(held);
  }

  private async ack(held: HeldEntry): Promise<void> {
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
    this.held.drop(held.entryId);
    this.held.markHead(String(reply[1] ?? ''));
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
    const message = toMessage(fields);
    this.held.hold(entryId, message, this.orderPrefix + message.streamId, head, deliveries);
  }

  /** Whether an entry that waited behind another member's entry of its stream may run now. */
  private async checkHeads(): Promise<boolean> {
    this.nextHeadCheckAt = this.settings.clock.now() + this.settings.pollMs;
    const waiting = this.held.waiting();
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
        this.held.markHead(h.entryId);
        changed = true;
      } else if (status === 0) {
        this.held.drop(h.entryId); // no longer this consumer's: taken over, or lost with the group
        changed = true;
      }
    });
    return changed;
  }

  /** Touches what it holds every third of claimIdleMs on the clock, until it stops (see {@link touch}). */
  private keepAlive(): void {
    const every = Math.max(10, Math.floor(this.settings.claimIdleMs / 3));
    const signal = this.leaving.signal;
    void (async () => {
      for (;;) {
        await this.settings.clock.sleep(every, signal);
        if (signal.aborted) return;
        void this.touch();
      }
    })();
  }

  /** Keeps the held entries from being taken over while this consumer is alive; forgets those it lost. */
  private async touch(): Promise<void> {
    if (this.touching || this.stopping || this.held.size === 0) return;
    this.touching = true;
    try {
      const lost = asArray(
        await run(
          this.redis,
          SCRIPTS.touch,
          [this.settings.streamKey],
          [this.options.group, this.name, ...this.held.ids()],
        ),
      );
      this.held.forgetLost(lost.map(String));
    } catch (error) {
      this.settings.onError(redisError(this.operation, error));
    } finally {
      this.touching = false;
    }
  }

  /** Waits for new entries (after `lastId`) or until the next retry, head check or reclaim is due. */
  private async waitForWork(lastId: string | undefined): Promise<void> {
    const now = this.settings.clock.now();
    let until = Math.min(now + this.settings.blockMs, this.nextReclaimAt);
    const retryAt = this.held.nextRetryAt();
    if (retryAt !== undefined) until = Math.min(until, retryAt);
    if (this.held.waiting().length > 0) until = Math.min(until, this.nextHeadCheckAt);
    const ms = Math.ceil(until - now);
    if (ms <= 0 || this.stopping) return;
    if (lastId === undefined) return this.settings.clock.sleep(ms, this.leaving.signal);
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
        this.held.markHead(String(asArray(fields)[1] ?? ''));
      }
    }
  }
}

/** `promise`, or a TransportUnavailableError when Redis does not answer within `ms` of the clock. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, clock: Clock, operation: string): Promise<T> {
  const bound = new AbortController();
  const timeout = clock.sleep(ms, bound.signal).then((): never => {
    throw new TransportUnavailableError('redis', operation, `Redis did not answer within ${ms} ms`);
  });
  timeout.catch(() => undefined);
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    bound.abort();
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
