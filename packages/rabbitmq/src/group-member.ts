import { randomUUID } from 'node:crypto';
import type { Channel, ConsumeMessage } from 'amqplib';
import {
  TransportConfigurationError,
  type Clock,
  type ConsumeOptions,
  type Consumer,
  type TransportError,
} from '@eventline/core';
import type { Cursor, Token } from './cursor-token.js';
import { PartitionWorker } from './partition-worker.js';
import { closeQuietly, type Session } from './session.js';
import { CURSOR_QUEUE_ARGUMENTS, PRIVATE_HEADERS, type RabbitMqNames } from './topology.js';

/** What a group member needs from its transport. */
export interface GroupSettings {
  readonly names: RabbitMqNames;
  readonly partitions: number;
  readonly heartbeatMs: number;
  readonly readAhead: number;
  readonly clock: Clock;
  readonly report: (error: TransportError) => void;
  /** Records a queue this client declared (see `topology()`). */
  readonly declared: (queue: string) => void;
}

interface PeerMessage {
  /** `gone`: `member` died (a member found its cursor token returned, not released). */
  readonly kind: 'hello' | 'alive' | 'bye' | 'gone';
  readonly member: string;
}

/**
 * One `consume()` call: a member of a consumer group. The group's messages are split into partitions by stream id;
 * each partition is read from the namespace's stream by one member at a time, the one that holds the partition's
 * cursor token (RabbitMQ's single active consumer on the cursor queue decides who; see {@link PartitionWorker}).
 * Members announce themselves on the members exchange, and a member holding a partition that another live member
 * should own (partitions are spread evenly over the members, sorted by id) hands it over after the message in progress.
 */
export class GroupMember implements Consumer {
  readonly id = randomUUID();
  readonly retryDelayMs: number;
  private session: Session | null = null;
  private leaving = false;
  private readonly workers: PartitionWorker[];
  /** Live peers, by member id: when each was last heard of (clock time). */
  private readonly peers = new Map<string, number>();
  private membersChannel: Channel | null = null;
  private heartbeat: AbortController | null = null;
  private stopped: Promise<void> | null = null;

  constructor(
    readonly settings: GroupSettings,
    readonly options: ConsumeOptions,
    private readonly onStopped: (member: GroupMember) => void,
  ) {
    if (!options.group) throw new TransportConfigurationError('rabbitmq', 'consume', 'a group name is required');
    this.retryDelayMs = options.retryDelayMs ?? 1000;
    if (!(this.retryDelayMs >= 0))
      throw new TransportConfigurationError('rabbitmq', 'consume', 'retryDelayMs must be 0 or more');
    this.workers = Array.from({ length: settings.partitions }, (_, partition) => new PartitionWorker(this, partition));
  }

  get group(): string {
    return this.options.group;
  }

  /** Stopping or killed: it takes no partition any more. */
  get stopping(): boolean {
    return this.leaving;
  }

  /** Whether this member runs on `session` now (not detached from it, not moved to a newer one). */
  isAttachedTo(session: Session): boolean {
    return this.session === session;
  }

  cursorQueue(partition: number): string {
    return this.settings.names.cursorQueue(this.group, partition);
  }

  /** Joins the group on a (new) connection: cursor queues and tokens, one consumer per cursor queue, announcement. */
  async attach(session: Session): Promise<void> {
    if (this.leaving) return;
    this.session = session;
    await this.declare(session);
    for (const worker of this.workers) await worker.register(session);
    const channel = await session.channel();
    const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
    await channel.bindQueue(queue, this.settings.names.members, this.group);
    await channel.consume(queue, (message) => message && this.onPeerMessage(message), { noAck: true });
    this.membersChannel = channel;
    this.announce('hello');
    this.startHeartbeat();
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
      this.leaving = true;
      this.announce('bye');
      this.stopHeartbeat();
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
    this.leaving = true;
    this.stopHeartbeat();
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
    if (this.leaving || !this.session) return false;
    const owner = this.ownerOf(worker.partition);
    if (owner === this.id || !this.peers.has(owner)) return false;
    return !worker.handedOverRecentlyTo(owner, 2 * this.settings.heartbeatMs);
  }

  report(error: TransportError): void {
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

  /** A member's cursor token came back without being released: its connection died. Everyone forgets it at once. */
  peerGone(member: string): void {
    if (member === this.id) return;
    this.peers.delete(member);
    this.announce('gone', member);
    this.rebalance();
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
      if (peer.kind === 'gone' && !this.leaving) this.announce('alive');
      return;
    }
    if (peer.kind === 'bye' || peer.kind === 'gone') {
      this.peers.delete(peer.member);
      this.rebalance();
      return;
    }
    const known = this.peers.has(peer.member);
    this.peers.set(peer.member, this.settings.clock.now());
    if (peer.kind === 'hello' && !this.leaving) this.announce('alive');
    if (!known) this.rebalance();
  }

  /** Every `heartbeatMs` of the clock, until stopped: announce, forget silent peers, rebalance. */
  private startHeartbeat(): void {
    if (this.heartbeat) return;
    const beating = new AbortController();
    this.heartbeat = beating;
    void (async () => {
      for (;;) {
        await this.settings.clock.sleep(this.settings.heartbeatMs, beating.signal);
        if (beating.signal.aborted) return;
        this.tick();
      }
    })();
  }

  private stopHeartbeat(): void {
    this.heartbeat?.abort();
    this.heartbeat = null;
  }

  private tick(): void {
    if (!this.session || this.leaving) return;
    this.announce('alive');
    const expired = this.settings.clock.now() - 3.5 * this.settings.heartbeatMs;
    for (const [peer, seen] of this.peers) if (seen < expired) this.peers.delete(peer);
    this.rebalance();
  }

  private rebalance(): void {
    for (const worker of this.workers) if (worker.holding && this.shouldHandOver(worker)) void worker.handOver();
  }
}
