/**
 * The message codec every transport shares: how a recorded event becomes a bus message (subject, headers, body)
 * and back, so a consumer on any transport reads what any publisher wrote.
 */
import type { RecordedEvent } from '../event.js';
import type { Position } from '../position.js';
import type { EncodedEvent } from '../store/contract.js';
import { categoryOf } from '../stream-id.js';
import type { TransportMessage } from './contract.js';

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
