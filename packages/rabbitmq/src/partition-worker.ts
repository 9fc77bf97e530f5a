import type { Channel, ConsumeMessage } from 'amqplib';
import { TransportConfigurationError, TransportError, TransportUnavailableError } from '@eventline/core';
import { CursorLease } from './cursor-lease.js';
import { parseToken, type Token } from './cursor-token.js';
import { toError } from '@eventline/core/backend';
import type { GroupMember } from './group-member.js';
import { ackQuietly, closeQuietly, type Session } from './session.js';

/** Tokens a cursor queue consumer may hold at once: the current one plus stale ones left by crashed holders. */
const CURSOR_PREFETCH = 16;

/**
 * One partition of a group, in one member: its consumer on the partition's cursor queue (a line of members, the
 * first of which RabbitMQ gives the token), and the {@link CursorLease} while it holds the token.
 */
export class PartitionWorker {
  private lockChannel: Channel | null = null;
  private lease: CursorLease | null = null;
  /** The last lease's run: a new lease starts only after it (a handler from a lost connection may still run). */
  private previous: Promise<void> = Promise.resolve();
  private lastHandOver: { to: string; at: number } | null = null;
  private disabled = false;
  /** Tokens collected before adopting the most advanced one (after a holder died, stale tokens may come first). */
  private gathering: { channel: Channel; best: ConsumeMessage; token: Token } | null = null;

  constructor(
    readonly member: GroupMember,
    readonly partition: number,
  ) {}

  get queue(): string {
    return this.member.cursorQueue(this.partition);
  }

  /** Holds the token, and is not handing it over or stopping. */
  get holding(): boolean {
    return this.lease !== null && !this.lease.draining;
  }

  /** Whether it handed this partition to `owner` less than `withinMs` ago (the token may have come back since). */
  handedOverRecentlyTo(owner: string, withinMs: number): boolean {
    const last = this.lastHandOver;
    return last !== null && last.to === owner && this.member.settings.clock.now() - last.at < withinMs;
  }

  /** Joins the line of the partition's cursor queue (single active consumer, one unacknowledged token at most). */
  async register(session: Session): Promise<void> {
    if (this.disabled || this.member.stopping || !session.alive) return;
    const channel = await session.channel();
    await channel.prefetch(CURSOR_PREFETCH);
    this.lockChannel = channel;
    await channel.consume(this.queue, (message) => this.onToken(session, channel, message), { noAck: false });
  }

  /** Hands the partition to the next member in line: finish the message in progress, store the cursor, leave the line, join again. */
  async handOver(): Promise<void> {
    const lease = this.lease;
    if (!lease || lease.draining) return;
    this.lastHandOver = { to: this.member.ownerOf(this.partition), at: this.member.settings.clock.now() };
    await lease.drain();
    lease.end();
    if (this.lease === lease) this.lease = null;
    if (this.lockChannel === lease.channel) {
      this.lockChannel = null;
      await closeQuietly(lease.channel); // the token returns to the queue; the next consumer in line gets it
    }
    const session = lease.session;
    if (!this.member.stopping && session.alive && this.member.isAttachedTo(session)) {
      try {
        await this.register(session);
      } catch (error) {
        session.lose(toError(error));
      }
    }
  }

  /** Finishes the message in progress, stores the cursor and leaves the line. */
  async stop(): Promise<void> {
    const lease = this.lease;
    if (lease) {
      await lease.drain();
      lease.end();
      if (this.lease === lease) this.lease = null;
    }
    const channel = this.lockChannel;
    this.lockChannel = null;
    await closeQuietly(channel);
  }

  connectionLost(): void {
    this.lockChannel = null;
    this.gathering = null;
    const lease = this.lease;
    this.lease = null;
    lease?.end();
  }

  private onToken(session: Session, channel: Channel, message: ConsumeMessage | null): void {
    if (channel !== this.lockChannel) return; // an old channel, being closed: what it holds returns to the queue
    if (!message) {
      session.lose(
        new TransportUnavailableError(
          'rabbitmq',
          'consume',
          `RabbitMQ cancelled the consumer of ${this.queue} (was the queue deleted?)`,
        ),
      );
      return;
    }
    const token = parseToken(message.content);
    if (!token) {
      this.member.report(
        new TransportError(
          'rabbitmq',
          `consume (group ${this.member.group})`,
          `dropping an unreadable message from cursor queue ${this.queue} (not a cursor token; something else wrote to the queue)`,
        ),
      );
      ackQuietly(channel, message);
      return;
    }
    const lease = this.lease;
    if (lease && lease.channel === channel) {
      if (lease.isExpected(token.id)) lease.receive(message);
      else ackQuietly(channel, message); // stale: written by a holder that died after writing its successor
      return;
    }
    if (this.member.stopping) return; // left unacknowledged: it returns to the queue when the channel closes
    const gathering = this.gathering;
    if (gathering && gathering.channel === channel) {
      // Keep the most advanced token, drop the others.
      if (token.seq > gathering.token.seq) {
        ackQuietly(channel, gathering.best);
        this.gathering = { channel, best: message, token };
      } else {
        ackQuietly(channel, message);
      }
      return;
    }
    if (message.fields.redelivered) {
      // Its holder left or died. If it died just after writing a successor, its acknowledgement of this one may have
      // been lost: collect every token in the queue first, then adopt the one with the highest sequence number.
      this.gathering = { channel, best: message, token };
      void this.gather(session, channel);
      return;
    }
    this.adopt(session, channel, message, token);
  }

  /** Waits until the queue has handed every token to this consumer (its ready count is 0, twice), then adopts the best. */
  private async gather(session: Session, channel: Channel): Promise<void> {
    try {
      let empty = 0;
      for (let round = 0; empty < 2; round++) {
        const { messageCount } = await channel.checkQueue(this.queue);
        empty = messageCount === 0 ? empty + 1 : 0;
        if (messageCount > 0) await this.member.settings.clock.sleep(Math.min(100, 5 * (round + 1)));
      }
    } catch (error) {
      if (this.gathering?.channel === channel) this.gathering = null;
      if (channel === this.lockChannel) session.lose(toError(error));
      return;
    }
    const gathered = this.gathering;
    this.gathering = null;
    if (!gathered || gathered.channel !== channel || channel !== this.lockChannel || this.member.stopping) return;
    this.adopt(session, channel, gathered.best, gathered.token);
  }

  private adopt(session: Session, channel: Channel, message: ConsumeMessage, token: Token): void {
    const settings = this.member.settings;
    if (
      token.partitions !== settings.partitions ||
      token.partition !== this.partition ||
      token.group !== this.member.group
    ) {
      this.disabled = true;
      this.lockChannel = null;
      void closeQuietly(channel);
      this.member.report(
        new TransportConfigurationError(
          'rabbitmq',
          `consume (group ${this.member.group})`,
          `the cursor in ${this.queue} is for partition ${token.partition} of ${token.partitions}, ` +
            `but this member uses ${settings.partitions} partitions; every member of a group must use the same number (this member leaves the partition alone)`,
        ),
      );
      return;
    }
    if (message.fields.redelivered && !token.released && token.holder && token.holder !== this.member.id)
      this.member.peerGone(token.holder);
    const next = new CursorLease(this, session, channel, message, token);
    this.lease = next;
    next.start(this.previous);
    this.previous = next.finished;
  }
}
