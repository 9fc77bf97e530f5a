import type { Channel, ChannelModel, ConfirmChannel, Message, Options } from 'amqplib';
import { TransportError, TransportUnavailableError, type Clock, type TransportMessage } from '@eventline/core';
import { toError } from '@eventline/core/backend';

/** Channels closed on purpose: their `close` event is not a failure. */
const closingOnPurpose = new WeakSet<Channel>();

/** Closes a channel without reporting it as a failure, ignoring errors (it may be closed already). */
export async function closeQuietly(channel: Channel | null | undefined): Promise<void> {
  if (!channel) return;
  closingOnPurpose.add(channel);
  await channel.close().catch(() => undefined);
}

/** Acknowledges a message, ignoring a channel that is already closed (the broker then redelivers, as it should). */
export function ackQuietly(channel: Channel | null | undefined, message: Message): void {
  try {
    channel?.ack(message);
  } catch {
    // the channel is closed: the message goes back to its queue, which is what a lost acknowledgement means
  }
}

/** Destroys the connection's socket: no close handshake, nothing acknowledged (a crash, as the broker sees it). */
export function destroySocket(model: ChannelModel): void {
  const internals = model.connection as unknown as { stream?: { destroy(error?: Error): void } };
  // With an error, so that amqplib notices (it listens for 'error' and 'end', not 'close') and stops its heartbeat timers.
  internals.stream?.destroy(new Error('socket destroyed'));
}

/**
 * One live connection and the channels made on it. Any unexpected channel or connection close loses the session
 * (once): the transport then reconnects and every consumer starts again from the cursors stored on the broker.
 */
export class Session {
  alive = true;
  publishChannel!: ConfirmChannel;
  tokenChannel!: ConfirmChannel;
  private lastError: Error | null = null;
  private readonly channels = new Set<Channel>();
  private readonly returned = new WeakMap<Channel, Map<string, number>>();
  private namespace: Promise<void> | null = null;

  private constructor(
    readonly model: ChannelModel,
    readonly generation: number,
    /** Whether the transport opened the connection (and so closes it), or was given it. */
    private readonly owned: boolean,
    private readonly onLost: (session: Session, error: Error) => void,
    private readonly clock: Clock,
  ) {}

  static async open(
    model: ChannelModel,
    generation: number,
    owned: boolean,
    onLost: (session: Session, error: Error) => void,
    clock: Clock,
  ): Promise<Session> {
    const session = new Session(model, generation, owned, onLost, clock);
    model.on('error', (error: Error) => {
      session.lastError = error;
    });
    model.on('close', (error?: Error) => {
      session.lose(error ?? session.lastError ?? new Error('RabbitMQ connection closed'));
    });
    try {
      session.publishChannel = await session.confirmChannel();
      session.tokenChannel = await session.confirmChannel();
    } catch (error) {
      session.lose(toError(error, 'RabbitMQ channel could not be opened'));
      throw error;
    }
    return session;
  }

  /** A channel whose unexpected close loses the session. */
  async channel(): Promise<Channel> {
    const channel = await this.model.createChannel();
    this.watch(channel);
    return channel;
  }

  /** A confirm channel whose unexpected close loses the session; routing failures (mandatory) are tracked. */
  async confirmChannel(): Promise<ConfirmChannel> {
    const channel = await this.model.createConfirmChannel();
    this.watch(channel);
    const returned = new Map<string, number>();
    this.returned.set(channel, returned);
    channel.on('return', (message: Message) => {
      const id = String(message.properties.messageId ?? '');
      returned.set(id, (returned.get(id) ?? 0) + 1);
    });
    return channel;
  }

  /** A short-lived channel for declarations: its errors reject the call instead of losing the session. */
  async scratchChannel<T>(work: (channel: Channel) => Promise<T>): Promise<T> {
    const channel = await this.model.createChannel();
    channel.on('error', () => undefined); // the failing call rejects with the same error
    try {
      return await work(channel);
    } finally {
      await closeQuietly(channel);
    }
  }

  /** Declares the namespace once per connection (retried on the next call if it failed). */
  ensureNamespace(declare: (channel: Channel) => Promise<void>): Promise<void> {
    this.namespace ??= this.scratchChannel(declare).catch((error: unknown) => {
      this.namespace = null;
      throw error;
    });
    return this.namespace;
  }

  /**
   * Publishes one message with `mandatory`. `confirmed` resolves when the broker confirmed it and rejects on a nack,
   * on a closed channel, or when the message could not be routed to any queue; `writable` is false when the caller
   * should wait for {@link drained} before sending more.
   */
  send(
    channel: ConfirmChannel,
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
  ): { confirmed: Promise<void>; writable: boolean } {
    const id = String(options.messageId ?? '');
    let writable = true;
    const confirmed = new Promise<void>((resolve, reject) => {
      try {
        writable = channel.publish(exchange, routingKey, content, { ...options, mandatory: true }, (error: unknown) => {
          const refusal = this.refusal(channel, exchange, routingKey, id, error);
          if (refusal) reject(refusal);
          else resolve();
        });
      } catch (error) {
        reject(new TransportUnavailableError('rabbitmq', 'publish', `message ${id} could not be sent`, error));
      }
    });
    confirmed.catch(() => undefined); // awaited by the caller, maybe after a drain: never an unhandled rejection
    return { confirmed, writable };
  }

  /**
   * Publishes a batch with one promise for all of it (not one per message): resolves when the broker confirmed every
   * message and routed each to a queue, rejects with the first refusal otherwise. Waits for the channel to drain when
   * its buffer is full; stops sending (and rejects) when the session is lost meanwhile.
   */
  async sendBatch(
    channel: ConfirmChannel,
    exchange: string,
    messages: readonly TransportMessage[],
    headerOf: (message: TransportMessage) => Record<string, unknown>,
  ): Promise<void> {
    let open = messages.length;
    let failure: Error | undefined;
    let settle!: () => void;
    const confirmed = new Promise<void>((resolve) => (settle = resolve));
    const timestamp = Math.floor(this.clock.now() / 1000);
    let sent = 0;
    for (const message of messages) {
      const id = message.id;
      const routingKey = message.subject;
      let writable: boolean;
      try {
        writable = channel.publish(
          exchange,
          routingKey,
          Buffer.from(message.body, 'utf8'),
          {
            persistent: true,
            mandatory: true,
            messageId: id,
            contentType: 'application/json',
            timestamp,
            headers: headerOf(message),
          },
          (error: unknown) => {
            failure ??= this.refusal(channel, exchange, routingKey, id, error);
            if (--open === 0) settle();
          },
        );
      } catch (error) {
        failure ??= new TransportUnavailableError(
          'rabbitmq',
          'publish',
          `message ${id} could not be sent (${toError(error).message}); publish the batch again`,
          error,
        );
        break;
      }
      sent++;
      if (!writable) await this.drained(channel);
      if (!this.alive) break;
    }
    if (sent < messages.length) {
      // Not everything went out: the confirms of what did may never come (a lost channel); do not wait for them.
      throw (
        failure ??
        new TransportUnavailableError(
          'rabbitmq',
          'publish',
          'the connection was lost before every message was sent; publish them again',
        )
      );
    }
    await confirmed;
    if (failure) throw failure;
  }

  /** Why the broker refused a published message, from its confirm callback: a nack or closed channel, or no queue took it. */
  private refusal(
    channel: Channel,
    exchange: string,
    routingKey: string,
    id: string,
    error: unknown,
  ): TransportError | undefined {
    if (error)
      return new TransportUnavailableError(
        'rabbitmq',
        'publish',
        `RabbitMQ did not confirm message ${id} (${toError(error).message}); publish it again`,
        error,
      );
    if (this.takeReturned(channel, id))
      return new TransportError(
        'rabbitmq',
        'publish',
        `RabbitMQ could not route message ${id} to any queue (exchange ${exchange || '(default)'}, routing key ${routingKey}): ` +
          'was the stream queue deleted or unbound?',
      );
    return undefined;
  }

  /** Publishes one message and waits for the broker's confirm (see {@link send}). */
  async publishConfirmed(
    channel: ConfirmChannel,
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
  ): Promise<void> {
    const { confirmed, writable } = this.send(channel, exchange, routingKey, content, options);
    if (!writable) await this.drained(channel);
    await confirmed;
  }

  /** Resolves when the channel's write buffer drained (or the channel closed). */
  drained(channel: Channel): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        channel.off('drain', done);
        channel.off('close', done);
        resolve();
      };
      channel.on('drain', done);
      channel.on('close', done);
    });
  }

  /** Loses the session once: consumers detach, the transport reconnects (or gives up), the connection is closed. */
  lose(error: Error): void {
    if (!this.alive) return;
    this.alive = false;
    this.onLost(this, error);
    void this.shutdown();
  }

  /** Closes what this session opened: the whole connection when the transport opened it, else only its channels. */
  async close(): Promise<void> {
    this.alive = false;
    await this.shutdown();
  }

  /** Destroys the socket at once (a simulated crash): nothing is closed cleanly, nothing reported. */
  crash(): void {
    this.alive = false;
    destroySocket(this.model);
  }

  private async shutdown(): Promise<void> {
    if (!this.owned) {
      await Promise.all([...this.channels].map((channel) => closeQuietly(channel)));
      return;
    }
    const bound = new AbortController();
    const timeout = this.clock.sleep(5_000, bound.signal).then(() => 'timeout' as const);
    const closed = this.model.close().then(
      () => 'closed' as const,
      () => 'failed' as const,
    );
    const outcome = await Promise.race([closed, timeout]);
    bound.abort();
    if (outcome !== 'closed') destroySocket(this.model);
  }

  private watch(channel: Channel): void {
    this.channels.add(channel);
    let lastError: Error | null = null;
    channel.on('error', (error: Error) => {
      lastError = error;
    });
    channel.on('close', () => {
      this.channels.delete(channel);
      if (closingOnPurpose.has(channel)) return;
      this.lose(
        new Error(`RabbitMQ channel closed unexpectedly${lastError ? `: ${lastError.message}` : ''}`, {
          cause: lastError ?? undefined,
        }),
      );
    });
  }

  private takeReturned(channel: Channel, id: string): boolean {
    const returned = this.returned.get(channel);
    const count = returned?.get(id) ?? 0;
    if (!returned || count === 0) return false;
    if (count === 1) returned.delete(id);
    else returned.set(id, count - 1);
    return true;
  }
}
