import { randomUUID } from 'node:crypto';
import type { Channel, ConsumeMessage } from 'amqplib';
import { TransportError, type ReceivedMessage } from '@eventline/core';
import { partitionOf, subjectMatches, toError } from '@eventline/core/backend';
import { cursorOf, type Cursor, type Token } from './cursor-token.js';
import type { GroupMember } from './group-member.js';
import type { PartitionWorker } from './partition-worker.js';
import { ackQuietly, closeQuietly, type Session } from './session.js';
import { PRIVATE_HEADERS } from './topology.js';

/** Thrown inside a lease that ended (its connection was lost, or it was handed over). */
class LeaseEnded extends Error {
  constructor() {
    super('the partition lease ended');
  }
}

const COMMIT_SKIPPED_EVERY = 500;

function headerString(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return String(value);
}

function offsetOf(message: ConsumeMessage): number {
  const offset = Number(message.properties.headers?.[PRIVATE_HEADERS.offset]);
  if (!Number.isSafeInteger(offset))
    throw new TransportError(
      'rabbitmq',
      'consume',
      `a message read from the RabbitMQ stream has no ${PRIVATE_HEADERS.offset} header (is the queue a stream?)`,
    );
  return offset;
}

/**
 * Holding a partition's cursor token: reads the stream from the cursor, hands this partition's messages to the
 * handler one at a time, and moves the cursor (a new token, then the old one acknowledged) around each delivery.
 */
export class CursorLease {
  private isDraining = false;
  private ended = false;
  /** Aborted when the lease drains or ends: cuts a retry delay short. */
  private readonly leaving = new AbortController();
  /** The id of the token written last, not delivered back yet. */
  private expected: string | null = null;
  private done: Promise<void> = Promise.resolve();
  private cursor: Cursor;
  private seq: number;
  private held: ConsumeMessage | null;
  private heldWaiters: Array<{ resolve: (message: ConsumeMessage) => void; reject: (error: Error) => void }> = [];
  private readChannel: Channel | null = null;
  private readonly buffer: ConsumeMessage[] = [];
  private wake: (() => void) | null = null;
  private seeking: boolean;
  private readonly marker: string | undefined;
  /** Where to resume if stopped now (advanced by skipped and handled messages), when ahead of the cursor. */
  private progress: number | null = null;
  /** A cursor already written as "delivered once" for the next message, before it was handed to the handler. */
  private prepared: number | null = null;
  private skippedSinceCommit = 0;

  constructor(
    private readonly worker: PartitionWorker,
    readonly session: Session,
    readonly channel: Channel,
    held: ConsumeMessage,
    token: Token,
  ) {
    this.held = held;
    this.cursor = cursorOf(token);
    this.seq = token.seq;
    this.marker = token.marker;
    this.seeking = token.marker !== undefined;
  }

  /** Stopping after the message in progress (handing over, stopping) or ended. */
  get draining(): boolean {
    return this.isDraining;
  }

  /** Settles when the lease's run is over. */
  get finished(): Promise<void> {
    return this.done;
  }

  /** Whether `tokenId` is the token this lease wrote last and waits to get back. */
  isExpected(tokenId: string): boolean {
    return tokenId === this.expected;
  }

  start(previous: Promise<void>): void {
    this.done = (async () => {
      await previous.catch(() => undefined);
      if (this.isDraining) return;
      if (this.member.shouldHandOver(this.worker)) {
        void this.worker.handOver();
        return;
      }
      await this.run();
    })();
  }

  receive(message: ConsumeMessage): void {
    this.held = message;
    this.expected = null;
    for (const waiter of this.heldWaiters.splice(0)) waiter.resolve(message);
  }

  /** Stops reading after the message in progress (which is acknowledged and its cursor stored). */
  async drain(): Promise<void> {
    this.isDraining = true;
    this.leaving.abort();
    this.wakeUp();
    await this.done;
  }

  /** Ends the lease: nothing more is acknowledged or stored through it. */
  end(): void {
    this.ended = true;
    this.isDraining = true;
    this.leaving.abort();
    this.wakeUp();
    for (const waiter of this.heldWaiters.splice(0)) waiter.reject(new LeaseEnded());
    const channel = this.readChannel;
    this.readChannel = null;
    void closeQuietly(channel);
  }

  private get member(): GroupMember {
    return this.worker.member;
  }

  private async run(): Promise<void> {
    const session = this.session;
    try {
      const channel = await session.channel();
      if (this.ended) {
        await closeQuietly(channel);
        return;
      }
      this.readChannel = channel;
      await channel.prefetch(this.member.settings.readAhead);
      const from = this.cursor.offset === 'first' ? 'first' : { '!': 'long', value: this.cursor.offset };
      await channel.consume(this.member.settings.names.stream, (message) => this.onStreamMessage(channel, message), {
        noAck: false,
        arguments: { 'x-stream-offset': from },
      });
      for (;;) {
        const message = await this.next();
        if (!message) break;
        const offset = offsetOf(message);
        if (this.relevant(message, offset)) {
          await this.handle(message, offset);
        } else {
          this.skip(message, offset);
          if (this.skippedSinceCommit >= COMMIT_SKIPPED_EVERY && this.progress !== null)
            await this.commit({ offset: this.progress, deliveries: 0 });
        }
      }
      if (this.ended) return;
      // Stopping or handing over: store how far this lease got, marked as released (its holder did not die).
      if (this.prepared !== null) await this.commit({ offset: this.prepared, deliveries: 0 }, true);
      else if (this.progress !== null && this.progress !== this.cursor.offset)
        await this.commit({ offset: this.progress, deliveries: 0 }, true);
      else await this.commit(this.cursor, true);
    } catch (error) {
      if (this.ended || error instanceof LeaseEnded) return;
      // Anything else (a broker error): start over on a new connection, from the cursor stored on the broker.
      session.lose(toError(error));
    }
  }

  private onStreamMessage(channel: Channel, message: ConsumeMessage | null): void {
    if (channel !== this.readChannel) return;
    if (!message) {
      this.session.lose(
        new TransportError(
          'rabbitmq',
          'consume',
          `RabbitMQ cancelled the consumer of stream ${this.member.settings.names.stream} (was it deleted?)`,
        ),
      );
      return;
    }
    this.buffer.push(message);
    this.wakeUp();
  }

  private async next(): Promise<ConsumeMessage | null> {
    for (;;) {
      if (this.isDraining) return null;
      const message = this.buffer.shift();
      if (message) return message;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = null;
    }
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** Whether a message read from the stream is for this group's handler in this partition. */
  private relevant(message: ConsumeMessage, offset: number): boolean {
    if (typeof this.cursor.offset === 'number' && offset < this.cursor.offset) return false;
    const headers = message.properties.headers ?? {};
    const marker = headerString(headers[PRIVATE_HEADERS.marker]);
    if (marker !== undefined) {
      if (this.seeking && marker === this.marker) this.seeking = false;
      return false;
    }
    if (this.seeking) return false;
    const names = this.member.settings.names;
    if (message.fields.exchange !== names.exchange) return false; // written straight into the stream by someone else
    const streamId = headerString(headers[PRIVATE_HEADERS.streamId]) ?? '';
    if (partitionOf(streamId, this.member.settings.partitions) !== this.worker.partition) return false;
    return subjectMatches(message.fields.routingKey, this.member.options.subjects);
  }

  private skip(message: ConsumeMessage, offset: number): void {
    ackQuietly(this.readChannel, message);
    if (this.seeking) return;
    const floor = typeof this.cursor.offset === 'number' ? this.cursor.offset : 0;
    // Never behind the stored cursor (a stream read may start a little before it).
    if (offset + 1 > floor && (this.progress === null || offset + 1 > this.progress)) this.progress = offset + 1;
    this.skippedSinceCommit++;
  }

  private async handle(message: ConsumeMessage, offset: number): Promise<void> {
    let deliveries: number;
    if (this.prepared === offset) {
      deliveries = this.cursor.deliveries;
    } else {
      deliveries = (this.cursor.offset === offset ? this.cursor.deliveries : 0) + 1;
      await this.commit({ offset, deliveries });
    }
    this.prepared = null;
    this.progress = offset;
    const received = this.toReceived(message);
    for (;;) {
      try {
        await this.member.options.handler({ ...received, deliveryCount: deliveries });
        break;
      } catch {
        // Retried in place after the delay, so nothing of this stream overtakes it; the cursor counts the delivery.
        if (!(await this.retryDelay())) return;
        deliveries++;
        await this.commit({ offset, deliveries });
      }
    }
    if (this.ended) return; // the connection was lost meanwhile: the cursor still points here, so it is redelivered
    ackQuietly(this.readChannel, message);
    this.progress = offset + 1;
    if (this.isDraining) return; // stored on the way out
    const next = this.peekRelevant();
    if (next !== null) {
      // One token write both acknowledges this message and records the next one's delivery.
      await this.commit({ offset: next, deliveries: 1 });
      this.prepared = next;
    } else {
      await this.commit({ offset: this.progress, deliveries: 0 });
    }
  }

  /** The offset of the next buffered message for the handler, skipping (and acknowledging) the ones before it. */
  private peekRelevant(): number | null {
    for (;;) {
      const message = this.buffer[0];
      if (!message) return null;
      const offset = offsetOf(message);
      if (this.relevant(message, offset)) return offset;
      this.buffer.shift();
      this.skip(message, offset);
    }
  }

  /**
   * Moves the cursor: writes the new token (confirmed), then acknowledges the one held. The new token may come back
   * to this consumer before the confirm: it is expected from before it is written.
   */
  private async commit(next: Cursor, released = false): Promise<void> {
    const held = await this.waitHeld();
    const id = randomUUID();
    const seq = this.seq + 1;
    this.held = null;
    this.expected = id;
    await this.member.publishToken(this.session, this.worker.partition, id, seq, next, released);
    if (this.ended) throw new LeaseEnded();
    ackQuietly(this.channel, held);
    this.seq = seq;
    this.cursor = next;
    this.skippedSinceCommit = 0;
  }

  private waitHeld(): Promise<ConsumeMessage> {
    if (this.ended) return Promise.reject(new LeaseEnded());
    if (this.held) return Promise.resolve(this.held);
    return new Promise((resolve, reject) => this.heldWaiters.push({ resolve, reject }));
  }

  /** Waits the group's `retryDelayMs` on the clock; false when the lease is draining or ended meanwhile. */
  private async retryDelay(): Promise<boolean> {
    if (this.isDraining) return false;
    await this.member.settings.clock.sleep(this.member.retryDelayMs, this.leaving.signal);
    return !this.isDraining;
  }

  private toReceived(message: ConsumeMessage): Omit<ReceivedMessage, 'deliveryCount'> {
    const raw = message.properties.headers ?? {};
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(raw)) {
      if (name === PRIVATE_HEADERS.offset || name === PRIVATE_HEADERS.streamId || name === PRIVATE_HEADERS.marker)
        continue;
      const text = headerString(value);
      if (text !== undefined) headers[name] = text;
    }
    return {
      id: headerString(message.properties.messageId) ?? `${this.member.settings.names.stream}:${offsetOf(message)}`,
      subject: message.fields.routingKey,
      streamId: headerString(raw[PRIVATE_HEADERS.streamId]) ?? '',
      body: message.content.toString('utf8'),
      headers,
    };
  }
}
