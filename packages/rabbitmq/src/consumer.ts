import { randomUUID } from 'node:crypto';
import type { Channel, ConsumeMessage } from 'amqplib';
import { type ConsumeOptions, type Consumer, type ReceivedMessage } from '@eventline/core';
import { subjectMatches } from '@eventline/core/backend';
import { ackQuietly, closeQuietly, type Session } from './session.js';
import { partitionOf } from '@eventline/core/backend';
import { CURSOR_QUEUE_ARGUMENTS, PRIVATE_HEADERS, type RabbitMqNames } from './topology.js';

/** What a group member needs from its transport. */
export interface GroupSettings {
  readonly names: RabbitMqNames;
  readonly partitions: number;
  readonly heartbeatMs: number;
  readonly readAhead: number;
  readonly report: (error: Error) => void;
  /** Records a queue this client declared (see `topology()`). */
  readonly declared: (queue: string) => void;
}

/**
 * Where a partition of a group is in the stream, stored as the body of the single "cursor token" in the partition's
 * cursor queue. `offset` is the stream offset to resume from; `deliveries` how many times the message at `offset` was
 * delivered already (0: not yet). `marker`: a group created with `from: 'new'` starts after this marker.
 */
interface Cursor {
  readonly offset: number | 'first';
  readonly deliveries: number;
  readonly marker?: string;
}

interface Token extends Cursor {
  readonly v: 1;
  readonly id: string;
  /** Each token written by a holder has the sequence number of the one it replaces plus one: the highest is current. */
  readonly seq: number;
  /** The member that wrote it (none for a group's first tokens). */
  readonly holder?: string;
  /** Written by a holder handing the partition over or stopping; a token without it that comes back means its holder died. */
  readonly released?: boolean;
  readonly group: string;
  readonly partition: number;
  readonly partitions: number;
}

interface PeerMessage {
  /** `gone`: `member` died (a member found its cursor token returned, not released). */
  readonly kind: 'hello' | 'alive' | 'bye' | 'gone';
  readonly member: string;
}

/** Thrown inside a lease that ended (its connection was lost, or it was handed over). */
class LeaseEnded extends Error {
  constructor() {
    super('the partition lease ended');
  }
}

const COMMIT_SKIPPED_EVERY = 500;
/** Tokens a cursor queue consumer may hold at once: the current one plus stale ones left by crashed holders. */
const CURSOR_PREFETCH = 16;

function parseToken(content: Buffer): Token | null {
  try {
    const token = JSON.parse(content.toString('utf8')) as Partial<Token>;
    if (token.v !== 1 || typeof token.id !== 'string' || typeof token.group !== 'string') return null;
    if (
      typeof token.partition !== 'number' ||
      typeof token.partitions !== 'number' ||
      typeof token.deliveries !== 'number'
    )
      return null;
    if (typeof token.seq !== 'number') return null;
    if (token.offset !== 'first' && typeof token.offset !== 'number') return null;
    return token as Token;
  } catch {
    return null;
  }
}

function headerString(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return String(value);
}

function offsetOf(message: ConsumeMessage): number {
  const offset = Number(message.properties.headers?.[PRIVATE_HEADERS.offset]);
  if (!Number.isSafeInteger(offset))
    throw new Error('a message read from the RabbitMQ stream has no x-stream-offset header');
  return offset;
}

function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

/**
 * One `consume()` call: a member of a consumer group. The group's messages are split into partitions by stream id;
 * each partition is read from the namespace's stream by one member at a time, the one that holds the partition's
 * cursor token (RabbitMQ's single active consumer on the cursor queue decides who). Members announce themselves on the
 * members exchange, and a member holding a partition that another live member should own (partitions are spread
 * evenly over the members, sorted by id) hands it over after the message in progress.
 */
export class GroupMember implements Consumer {
  readonly id = randomUUID();
  readonly retryDelayMs: number;
  session: Session | null = null;
  stopping = false;
  private readonly workers: PartitionWorker[];
  private readonly peers = new Map<string, number>();
  private membersChannel: Channel | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped: Promise<void> | null = null;

  constructor(
    readonly settings: GroupSettings,
    readonly options: ConsumeOptions,
    private readonly onStopped: (member: GroupMember) => void,
  ) {
    if (!options.group) throw new Error('consume: a group name is required');
    this.retryDelayMs = options.retryDelayMs ?? 1000;
    if (!(this.retryDelayMs >= 0)) throw new Error('consume: retryDelayMs must be 0 or more');
    this.workers = Array.from({ length: settings.partitions }, (_, partition) => new PartitionWorker(this, partition));
  }

  get group(): string {
    return this.options.group;
  }

  cursorQueue(partition: number): string {
    return this.settings.names.cursorQueue(this.group, partition);
  }

  /** Joins the group on a (new) connection: cursor queues and tokens, one consumer per cursor queue, announcement. */
  async attach(session: Session): Promise<void> {
    if (this.stopping) return;
    this.session = session;
    await this.declare(session);
    for (const worker of this.workers) await worker.register(session);
    const channel = await session.channel();
    const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
    await channel.bindQueue(queue, this.settings.names.members, this.group);
    await channel.consume(queue, (message) => message && this.onPeerMessage(message), { noAck: true });
    this.membersChannel = channel;
    this.announce('hello');
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.settings.heartbeatMs);
      this.timer.unref();
    }
  }

  /** The connection is gone: every lease ends (a handler in progress finishes, but is not acknowledged). */
  detach(session: Session): void {
    if (this.session !== session) return;
    this.session = null;
    this.membersChannel = null;
    this.peers.clear();
    for (const worker of this.workers) worker.connectionLost();
  }

  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping = true;
      this.announce('bye');
      this.clearTimer();
      await Promise.all(this.workers.map((worker) => worker.stop()));
      const channel = this.membersChannel;
      this.membersChannel = null;
      await closeQuietly(channel);
      this.onStopped(this);
    })();
    return this.stopped;
  }

  /** Stops at once without waiting for handlers (the transport is closing or crashed; tokens return with the connection). */
  kill(): void {
    this.stopping = true;
    this.clearTimer();
    for (const worker of this.workers) worker.connectionLost();
    this.session = null;
    this.membersChannel = null;
  }

  /** The member that should own a partition: partitions are dealt round-robin over the live members sorted by id. */
  ownerOf(partition: number): string {
    const members = [this.id, ...this.peers.keys()].sort();
    return members[partition % members.length]!;
  }

  /**
   * Whether this member should hand a partition it holds over to its owner. Not to the same owner again within a
   * cool-down: when the owner is not in the queue's line (yet), the token comes back to this member, which keeps it.
   */
  shouldHandOver(worker: PartitionWorker): boolean {
    if (this.stopping || !this.session) return false;
    const owner = this.ownerOf(worker.partition);
    if (owner === this.id || !this.peers.has(owner)) return false;
    return worker.lastHandOver?.to !== owner || Date.now() - worker.lastHandOver.at >= 2 * this.settings.heartbeatMs;
  }

  report(error: Error): void {
    this.settings.report(error);
  }

  async publishToken(
    session: Session,
    partition: number,
    id: string,
    seq: number,
    cursor: Cursor,
    released = false,
  ): Promise<void> {
    const token: Token = {
      v: 1,
      id,
      seq,
      group: this.group,
      partition,
      partitions: this.settings.partitions,
      ...cursor,
      holder: this.id,
      released,
    };
    await session.publishConfirmed(
      session.tokenChannel,
      '',
      this.cursorQueue(partition),
      Buffer.from(JSON.stringify(token)),
      {
        persistent: true,
        messageId: id,
        contentType: 'application/json',
      },
    );
  }

  /**
   * Declares the cursor queues; a cursor queue with no token and no consumer gets a first token (a new group). Two
   * members creating the group at once may both write one: the extra token is recognised as stale and dropped.
   */
  private async declare(session: Session): Promise<void> {
    const missing = await session.scratchChannel(async (channel) => {
      const partitions: number[] = [];
      for (let partition = 0; partition < this.settings.partitions; partition++) {
        const queue = this.cursorQueue(partition);
        const ok = await channel.assertQueue(queue, { durable: true, arguments: CURSOR_QUEUE_ARGUMENTS });
        this.settings.declared(queue);
        if (ok.messageCount === 0 && ok.consumerCount === 0) partitions.push(partition);
      }
      return partitions;
    });
    if (missing.length === 0) return;
    let marker: string | undefined;
    if (this.options.from === 'new') {
      // Written straight into the stream (default exchange): the group starts after it.
      marker = randomUUID();
      await session.publishConfirmed(session.tokenChannel, '', this.settings.names.stream, Buffer.alloc(0), {
        persistent: true,
        messageId: `marker.${marker}`,
        headers: { [PRIVATE_HEADERS.marker]: marker },
      });
    }
    for (const partition of missing) {
      await this.publishToken(
        session,
        partition,
        randomUUID(),
        0,
        marker ? { offset: 'first', deliveries: 0, marker } : { offset: 'first', deliveries: 0 },
      );
    }
  }

  /** A member's cursor token came back without being released: its connection died. Everyone forgets it at once. */
  peerGone(member: string): void {
    if (member === this.id) return;
    this.peers.delete(member);
    this.announce('gone', member);
    this.rebalance();
  }

  private announce(kind: PeerMessage['kind'], member: string = this.id): void {
    const channel = this.membersChannel;
    if (!channel) return;
    const message: PeerMessage = { kind, member };
    try {
      channel.publish(this.settings.names.members, this.group, Buffer.from(JSON.stringify(message)), {
        contentType: 'application/json',
      });
    } catch {
      // the channel is closing: the connection is being lost, and the announcement is repeated after reconnecting
    }
  }

  private onPeerMessage(message: ConsumeMessage): void {
    let peer: PeerMessage;
    try {
      peer = JSON.parse(message.content.toString('utf8')) as PeerMessage;
    } catch {
      return;
    }
    if (typeof peer.member !== 'string') return;
    if (peer.member === this.id) {
      // Said of this member by another: its previous connection died. It is alive now: say so.
      if (peer.kind === 'gone' && !this.stopping) this.announce('alive');
      return;
    }
    if (peer.kind === 'bye' || peer.kind === 'gone') {
      this.peers.delete(peer.member);
      this.rebalance();
      return;
    }
    const known = this.peers.has(peer.member);
    this.peers.set(peer.member, Date.now());
    if (peer.kind === 'hello' && !this.stopping) this.announce('alive');
    if (!known) this.rebalance();
  }

  private tick(): void {
    if (!this.session || this.stopping) return;
    this.announce('alive');
    const expired = Date.now() - 3.5 * this.settings.heartbeatMs;
    for (const [peer, seen] of this.peers) if (seen < expired) this.peers.delete(peer);
    this.rebalance();
  }

  private rebalance(): void {
    for (const worker of this.workers) if (worker.holding && this.shouldHandOver(worker)) void worker.handOver();
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/** One partition of a group, in one member: its consumer on the cursor queue, and the lease while it holds the token. */
class PartitionWorker {
  lockChannel: Channel | null = null;
  lease: Lease | null = null;
  /** The last lease's run: a new lease starts only after it (a handler from a lost connection may still run). */
  previous: Promise<void> = Promise.resolve();
  lastHandOver: { to: string; at: number } | null = null;
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

  get holding(): boolean {
    return this.lease !== null && !this.lease.draining;
  }

  /** Joins the line of the partition's cursor queue (single active consumer, one unacknowledged token at most). */
  async register(session: Session): Promise<void> {
    if (this.disabled || this.member.stopping || !session.alive) return;
    const channel = await session.channel();
    await channel.prefetch(CURSOR_PREFETCH);
    this.lockChannel = channel;
    await channel.consume(this.queue, (message) => this.onToken(session, channel, message), { noAck: false });
  }

  private onToken(session: Session, channel: Channel, message: ConsumeMessage | null): void {
    if (channel !== this.lockChannel) return; // an old channel, being closed: what it holds returns to the queue
    if (!message) {
      session.lose(new Error(`RabbitMQ cancelled the consumer of ${this.queue} (was the queue deleted?)`));
      return;
    }
    const token = parseToken(message.content);
    if (!token) {
      this.member.report(new Error(`dropping an unreadable message from cursor queue ${this.queue}`));
      ackQuietly(channel, message);
      return;
    }
    const lease = this.lease;
    if (lease && lease.channel === channel) {
      if (token.id === lease.expected) lease.receive(message);
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
        if (messageCount > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(100, 5 * (round + 1))));
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
        new Error(
          `group ${this.member.group}: the cursor in ${this.queue} is for partition ${token.partition} of ${token.partitions}, ` +
            `but this member uses ${settings.partitions} partitions; every member of a group must use the same number (this member leaves the partition alone)`,
        ),
      );
      return;
    }
    if (message.fields.redelivered && !token.released && token.holder && token.holder !== this.member.id)
      this.member.peerGone(token.holder);
    const next = new Lease(this, session, channel, message, token);
    this.lease = next;
    next.start(this.previous);
    this.previous = next.done;
  }

  /** Hands the partition to the next member in line: finish the message in progress, store the cursor, leave the line, join again. */
  async handOver(): Promise<void> {
    const lease = this.lease;
    if (!lease || lease.draining) return;
    this.lastHandOver = { to: this.member.ownerOf(this.partition), at: Date.now() };
    await lease.drain();
    lease.end();
    if (this.lease === lease) this.lease = null;
    if (this.lockChannel === lease.channel) {
      this.lockChannel = null;
      await closeQuietly(lease.channel); // the token returns to the queue; the next consumer in line gets it
    }
    const session = lease.session;
    if (!this.member.stopping && session.alive && this.member.session === session) {
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
}

/**
 * Holding a partition's cursor token: reads the stream from the cursor, hands this partition's messages to the
 * handler one at a time, and moves the cursor (a new token, then the old one acknowledged) around each delivery.
 */
class Lease {
  draining = false;
  ended = false;
  /** The id of the token written last, not delivered back yet. */
  expected: string | null = null;
  done: Promise<void> = Promise.resolve();
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
    this.cursor =
      token.marker === undefined
        ? { offset: token.offset, deliveries: token.deliveries }
        : { offset: token.offset, deliveries: token.deliveries, marker: token.marker };
    this.seq = token.seq;
    this.marker = token.marker;
    this.seeking = token.marker !== undefined;
  }

  start(previous: Promise<void>): void {
    this.done = (async () => {
      await previous.catch(() => undefined);
      if (this.draining) return;
      if (this.worker.member.shouldHandOver(this.worker)) {
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
    this.draining = true;
    this.wakeUp();
    await this.done;
  }

  /** Ends the lease: nothing more is acknowledged or stored through it. */
  end(): void {
    this.ended = true;
    this.draining = true;
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
        new Error(`RabbitMQ cancelled the consumer of stream ${this.member.settings.names.stream} (was it deleted?)`),
      );
      return;
    }
    this.buffer.push(message);
    this.wakeUp();
  }

  private async next(): Promise<ConsumeMessage | null> {
    for (;;) {
      if (this.draining) return null;
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
        if (!(await this.sleep(this.member.retryDelayMs))) return;
        deliveries++;
        await this.commit({ offset, deliveries });
      }
    }
    if (this.ended) return; // the connection was lost meanwhile: the cursor still points here, so it is redelivered
    ackQuietly(this.readChannel, message);
    this.progress = offset + 1;
    if (this.draining) return; // stored on the way out
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

  /** Waits `ms`; false when the lease is draining or ended meanwhile. */
  private async sleep(ms: number): Promise<boolean> {
    if (this.draining) return false;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    return !this.draining;
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
