import type { RecordedEvent } from '../event.js';
import type { Position } from '../position.js';
import type { EncodedEvent } from '../store/contract.js';
import { categoryOf } from '../stream-id.js';

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

/** Header names, shared by every transport. */
export const HEADERS = {
  eventType: 'eventline-type',
  streamId: 'eventline-stream',
  version: 'eventline-version',
  position: 'eventline-position',
  correlationId: 'eventline-correlation-id',
  causationId: 'eventline-causation-id',
  traceparent: 'traceparent',
  replay: 'eventline-replay',
} as const;

/** The message for an event. `replay` marks republished history, so consumers can tell. */
export function encodeEvent(event: RecordedEvent, options: { replay?: boolean } = {}): TransportMessage {
  const { metadata } = event;
  const message: TransportMessage = {
    id: event.id,
    subject: `${categoryOf(event.streamId)}.${event.type}`,
    streamId: event.streamId,
    body: JSON.stringify(event),
    headers: headersOf({
      type: event.type,
      streamId: event.streamId,
      version: String(event.version),
      position: event.position,
      correlationId: metadata.correlationId,
      causationId: metadata.causationId,
      traceparent: metadata.traceparent,
    }),
  };
  return options.replay ? asReplay(message) : message;
}

/** The message marked as republished history (header `eventline-replay: true`), the rest as it is. */
export function asReplay(message: TransportMessage): TransportMessage {
  return { ...message, headers: { ...message.headers, [HEADERS.replay]: 'true' } };
}

/** An event with its message ({@link encodeEvent}), as `readAllPageEncoded` gives it. */
export function encodedEvent(event: RecordedEvent): EncodedEvent {
  return { id: event.id, streamId: event.streamId, position: event.position, message: encodeEvent(event) };
}

/** A stored event as text: what a backend has of it before parsing its JSON (see {@link encodeStoredEvent}). */
export interface StoredEventText {
  readonly id: string;
  readonly streamId: string;
  /** Letters, digits and '_' (as every stored type is): put in the JSON as it is. */
  readonly type: string;
  /** The version as digits. */
  readonly version: string;
  readonly position: Position;
  readonly recordedAt: Date;
  /** The event's data and metadata as JSON text, exactly as stored. */
  readonly dataJson: string;
  readonly metadataJson: string;
  /** From the metadata, for the headers (null or undefined when absent). */
  readonly correlationId?: string | null | undefined;
  readonly causationId?: string | null | undefined;
  readonly traceparent?: string | null | undefined;
}

/**
 * The message {@link encodeEvent} makes of an event, built from its stored JSON text with no parse and no second
 * serialisation: the body decodes ({@link decodeEvent}) to the same event. For backends' `readAllPageEncoded`.
 */
export function encodeStoredEvent(event: StoredEventText): TransportMessage {
  // The id is a UUID, the position hex digits and '/', the type letters, digits and '_': none needs escaping.
  const body =
    `{"id":"${event.id}","type":"${event.type}","streamId":${JSON.stringify(event.streamId)},"version":${event.version},` +
    `"position":"${event.position}","recordedAt":"${isoTime(event.recordedAt)}","data":${event.dataJson},"metadata":${event.metadataJson}}`;
  return {
    id: event.id,
    subject: `${categoryOf(event.streamId)}.${event.type}`,
    streamId: event.streamId,
    body,
    headers: headersOf(event),
  };
}

/** The second last formatted by {@link isoTime}, and its text up to the milliseconds. */
let isoSecond = Number.NaN;
let isoPrefix = '';

/**
 * `date.toISOString()`, formatting each second once: the events of a page were mostly recorded within the same
 * second, and `toISOString` cost more than the rest of {@link encodeStoredEvent}.
 */
function isoTime(date: Date): string {
  const ms = date.getTime();
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    if (!Number.isFinite(ms)) return date.toISOString(); // throws, as toISOString does
    isoSecond = second;
    isoPrefix = new Date(second * 1000).toISOString().slice(0, -4);
  }
  const milli = ms - second * 1000;
  return `${isoPrefix}${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`;
}

type HeaderFields = Pick<
  StoredEventText,
  'type' | 'streamId' | 'version' | 'position' | 'correlationId' | 'causationId' | 'traceparent'
>;

function headersOf(event: HeaderFields): Record<string, string> {
  const headers: Record<string, string> = {
    [HEADERS.eventType]: event.type,
    [HEADERS.streamId]: event.streamId,
    [HEADERS.version]: event.version,
    [HEADERS.position]: event.position,
  };
  if (event.correlationId) headers[HEADERS.correlationId] = event.correlationId;
  if (event.causationId) headers[HEADERS.causationId] = event.causationId;
  if (event.traceparent) headers[HEADERS.traceparent] = event.traceparent;
  return headers;
}

/** The event in a message (with `recordedAt` as a Date again). */
export function decodeEvent(message: TransportMessage): RecordedEvent {
  const parsed = JSON.parse(message.body) as RecordedEvent & { recordedAt: string };
  return { ...parsed, recordedAt: new Date(parsed.recordedAt) };
}

/** Whether a subject matches a filter entry: exact, or `<category>.*`. */
export function subjectMatches(subject: string, filters: readonly string[] | undefined): boolean {
  if (!filters || filters.length === 0) return true;
  return filters.some(
    (filter) => filter === subject || (filter.endsWith('.*') && subject.startsWith(filter.slice(0, -1))),
  );
}
