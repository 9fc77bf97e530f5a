/**
 * A message on an external bus: one committed event. `id` is the event id, which brokers use to de-duplicate a
 * re-published message and consumers use in their inbox.
 */
export interface TransportMessage {
  readonly id: string;
  /** `<category>.<type>` (`account.MoneyDeposited`); transports prefix it (NATS subject, RabbitMQ routing key, ...). */
  readonly subject: string;
  /** Messages of one stream are delivered to a group in publish order. */
  readonly streamId: string;
  /** The event as JSON (see {@link encodeEvent}). */
  readonly body: string;
  /** Metadata as strings: event type, stream, version, position, correlation/causation ids, traceparent, replay flag. */
  readonly headers: Readonly<Record<string, string>>;
}

export interface ReceivedMessage extends TransportMessage {
  /** 1 on first delivery; more when redelivered after a failure or a consumer crash. */
  readonly deliveryCount: number;
}

export interface ConsumeOptions {
  /** The consumer group: every group gets every message; within a group each message is handled by one member. */
  readonly group: string;
  /**
   * Only these subjects (`<category>.<type>`; `<category>.*` for a whole category). Default: everything. Every member
   * of a group must use the same subjects (transports that filter on the consumer side acknowledge the others).
   */
  readonly subjects?: readonly string[];
  /** Runs for each message; the message is acknowledged when it resolves and redelivered when it throws. */
  readonly handler: (message: ReceivedMessage) => Promise<void>;
  /** Where a new group starts: the oldest retained message (default) or only new ones. */
  readonly from?: 'oldest' | 'new';
  /** Delay before a failed message is delivered again (default 1000 ms). */
  readonly retryDelayMs?: number;
}

export interface Consumer {
  /** Stops taking messages; a message in progress finishes (and is acknowledged) first. */
  stop(): Promise<void>;
}

/**
 * An external message bus, the small seam every transport implements (in-process, NATS JetStream, RabbitMQ, Redis
 * Streams) and the transport conformance suite in `@eventline/core/testing` checks:
 * - `publish` resolves only when the broker has accepted every message (confirms); how durable that is depends on the
 *   broker's own settings (a Redis without persistence loses confirmed messages on restart). A message id published
 *   twice is delivered once where the broker de-duplicates, and consumers de-duplicate with an inbox anyway.
 * - Delivery is at least once: a message is acknowledged after its handler succeeds, and redelivered when the handler
 *   throws or the consumer dies before acknowledging.
 * - Within a group, messages of one stream are handled one at a time, in publish order.
 */
export interface Transport {
  readonly name: string;
  publish(messages: readonly TransportMessage[]): Promise<void>;
  consume(options: ConsumeOptions): Promise<Consumer>;
  close(): Promise<void>;
}
