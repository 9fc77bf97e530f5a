import { ConcurrencyError, PayloadTooLargeError, safeQuote, ValidationError } from '../errors.js';
import type { EventInput, PreparedEvent } from '../event.js';
import { newId, isUuid } from '../ids.js';
import { jsonIssues } from '../json.js';
import { isPosition, START, type Position } from '../position.js';
import { validateEventData, type EventRegistry } from '../schema.js';
import { assertStreamId, isValidEventType } from '../stream-id.js';
import {
  DEFAULT_ALL_PAGE_SIZE,
  DEFAULT_MAX_EVENT_BYTES,
  DEFAULT_STREAM_PAGE_SIZE,
  type ReadAllOptions,
  type ReadStreamOptions,
  type StreamMetadata,
  type ExpectedVersion,
} from './contract.js';

/**
 * Checks an append's inputs and turns them into {@link PreparedEvent}s: ids assigned, data validated against the
 * registry, JSON checked and serialised once, size limit applied. Shared by every backend so that they reject exactly
 * the same inputs, before touching storage.
 */
export async function prepareAppend(
  streamId: unknown,
  events: unknown,
  options: { expectedVersion?: unknown } | undefined,
  config: { registry?: EventRegistry | undefined; maxEventBytes?: number | undefined },
): Promise<{ streamId: string; expectedVersion: ExpectedVersion; events: PreparedEvent[] }> {
  const id = assertStreamId(streamId);
  const expectedVersion = assertExpectedVersion(options?.expectedVersion);
  if (!Array.isArray(events))
    throw new ValidationError(`Append to '${id}': events must be an array, got ${typeof events}`);
  if (events.length === 0) throw new ValidationError(`Append to '${id}': the batch is empty; pass at least one event`);
  const limit = config.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
  const seen = new Set<string>();
  const prepared: PreparedEvent[] = [];
  for (let index = 0; index < events.length; index++) {
    const raw = (events as unknown[])[index];
    if (typeof raw !== 'object' || raw === null)
      throw new ValidationError(`${where(id, index)}: expected an object { type, data, metadata?, id? }`);
    const input = raw as EventInput<string, unknown>;
    if (!isValidEventType(input.type)) {
      throw new ValidationError(
        `${where(id, index)}: invalid event type ${safeQuote((raw as { type?: unknown }).type)}; use a letter followed by letters, digits or '_'`,
      );
    }
    const eventId = input.id ?? newId();
    if (!isUuid(eventId))
      throw new ValidationError(`${where(id, index)} (${input.type}): event id ${safeQuote(eventId)} is not a UUID`);
    const normalisedId = eventId.toLowerCase();
    if (seen.has(normalisedId))
      throw new ValidationError(`${where(id, index)} (${input.type}): event id ${eventId} appears twice in the batch`);
    seen.add(normalisedId);
    const type = input.type;
    if (!('data' in input))
      throw new ValidationError(`${where(id, index)} (${type}): missing 'data' (use null for an event without data)`);
    // Only a registry's schema can be asynchronous; without one, no await (a microtask per event adds up on big batches).
    let data: unknown = input.data;
    let schemaVersion: number | undefined;
    if (config.registry) {
      const validation = validateEventData(config.registry, input.type, input.data);
      const validated = validation instanceof Promise ? await validation : validation;
      data = validated.data;
      schemaVersion = validated.schemaVersion;
    }
    const dataIssues = jsonIssues(data, ['data']);
    const metadataInput = input.metadata ?? {};
    if (typeof metadataInput !== 'object' || metadataInput === null || Array.isArray(metadataInput)) {
      throw new ValidationError(`${where(id, index)} (${input.type}): metadata must be an object`);
    }
    const version = schemaVersion ?? metadataInput.schemaVersion ?? 1;
    const metadataIssues = jsonIssues(metadataInput, ['metadata']);
    if (dataIssues.length + metadataIssues.length > 0) {
      throw new ValidationError(`${where(id, index)} (${input.type}) is not JSON`, [...dataIssues, ...metadataIssues]);
    }
    if (!Number.isInteger(version) || version < 1) {
      throw new ValidationError(
        `${where(id, index)} (${input.type}): metadata.schemaVersion must be a whole number of 1 or more`,
      );
    }
    const dataJson = JSON.stringify(data);
    const metadataJson = metadataWithVersion(metadataInput, version);
    // A UTF-16 code unit is at most 3 bytes of UTF-8: only a payload that might be over the limit is measured.
    if ((dataJson.length + metadataJson.length) * 3 > limit) {
      const bytes = Buffer.byteLength(dataJson) + Buffer.byteLength(metadataJson);
      if (bytes > limit) throw new PayloadTooLargeError(id, input.type, bytes, limit);
    }
    prepared.push({ id: normalisedId, type: input.type, dataJson, metadataJson });
  }
  return { streamId: id, expectedVersion, events: prepared };
}

/**
 * The metadata's JSON with `schemaVersion` set: what `JSON.stringify({ ...metadata, schemaVersion })` writes, without
 * the copy (whose serialisation cost more than the caller's object's). Without the key, it goes last, as the spread
 * puts it; with it (another value), the copy is made, keeping the key where it was.
 */
function metadataWithVersion(metadata: EventInput['metadata'] & object, version: number): string {
  if (Object.hasOwn(metadata, 'schemaVersion')) {
    return metadata.schemaVersion === version
      ? JSON.stringify(metadata)
      : JSON.stringify({ ...metadata, schemaVersion: version });
  }
  const json = JSON.stringify(metadata);
  // A plain object (checked above) serialises to '{...}'; '{}' when it has no key with a value.
  return json === '{}' ? `{"schemaVersion":${version}}` : `${json.slice(0, -1)},"schemaVersion":${version}}`;
}

/** The start of an append's error messages; built only for an error (the loop above runs for every event appended). */
function where(streamId: string, index: number): string {
  return `Append to '${streamId}', event #${index}`;
}

/** Most streams one `lockStreams` call takes. */
export const MAX_LOCKED_STREAMS = 1000;

/** Checks the ids given to `lockStreams` and returns them without repeats, sorted (the order locks are taken in). */
export function assertStreamIds(streamIds: unknown): string[] {
  if (!Array.isArray(streamIds))
    throw new ValidationError(`lockStreams expects an array of stream ids, got ${safeQuote(streamIds)}`);
  if (streamIds.length > MAX_LOCKED_STREAMS)
    throw new ValidationError(
      `lockStreams takes at most ${MAX_LOCKED_STREAMS} streams at once, got ${streamIds.length}`,
    );
  const ids = new Set<string>();
  for (const id of streamIds) ids.add(assertStreamId(id));
  return [...ids].sort();
}

/** Checks an expectedVersion option; `undefined` means `'any'`. */
export function assertExpectedVersion(value: unknown): ExpectedVersion {
  if (value === undefined) return 'any';
  if (value === 'any' || value === 'no_stream' || value === 'stream_exists') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  throw new ValidationError(
    `Invalid expectedVersion ${safeQuote(value)}${typeof value === 'bigint' ? ' (a bigint: pass a number)' : ''}: use a version number (0 or more), 'no_stream', 'stream_exists' or 'any'`,
  );
}

/**
 * The expected-version rule, for backends that check it in JavaScript (the SQL backends check the same rule in SQL).
 * `version` is the stream's last version (0 when never written); `exists` is false when missing or soft-deleted.
 */
export function checkExpectedVersion(
  streamId: string,
  expected: ExpectedVersion,
  stream: { version: number; exists: boolean },
): void {
  const ok =
    expected === 'any' ||
    (expected === 'no_stream' && !stream.exists) ||
    (expected === 'stream_exists' && stream.exists) ||
    (typeof expected === 'number' && expected === stream.version);
  if (!ok) throw new ConcurrencyError(streamId, expected, stream.exists ? stream.version : 'no_stream', stream.version);
}

export function normaliseReadStreamOptions(
  options: ReadStreamOptions = {},
): Required<Omit<ReadStreamOptions, 'from' | 'limit'>> & { from: number | undefined; limit: number } {
  const direction = options.direction ?? 'forwards';
  if (direction !== 'forwards' && direction !== 'backwards')
    throw new ValidationError(`readStream: direction must be 'forwards' or 'backwards', got ${safeQuote(direction)}`);
  if (options.from !== undefined && !(Number.isSafeInteger(options.from) && options.from >= 0)) {
    throw new ValidationError(
      `readStream: from must be a version (a whole number of 0 or more), got ${safeQuote(options.from)}`,
    );
  }
  return {
    direction,
    from: options.from,
    limit: positiveInteger(options.limit, Number.MAX_SAFE_INTEGER, 'readStream: limit'),
    pageSize: positiveInteger(options.pageSize, DEFAULT_STREAM_PAGE_SIZE, 'readStream: pageSize'),
  };
}

export function normaliseReadAllOptions(
  options: ReadAllOptions = {},
  defaultLimit = Number.MAX_SAFE_INTEGER,
): {
  after: Position;
  limit: number;
  pageSize: number;
  types: string[] | null;
  categories: string[] | null;
} {
  const after = options.after ?? START;
  if (!isPosition(after))
    throw new ValidationError(`readAll: after must be a position returned by the store, got ${safeQuote(after)}`);
  const filter = options.filter ?? {};
  return {
    after,
    limit: positiveInteger(options.limit, defaultLimit, 'readAll: limit'),
    pageSize: positiveInteger(options.pageSize, DEFAULT_ALL_PAGE_SIZE, 'readAll: pageSize'),
    types: stringList(filter.types, 'readAll: filter.types'),
    categories: stringList(filter.categories, 'readAll: filter.categories'),
  };
}

export function assertStreamMetadata(metadata: unknown): StreamMetadata {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata))
    throw new ValidationError('Stream metadata must be an object');
  const { maxCount, maxAge, truncateBefore, custom, ...rest } = metadata as StreamMetadata & Record<string, unknown>;
  const unknownKeys = Object.keys(rest);
  if (unknownKeys.length > 0)
    throw new ValidationError(
      `Unknown stream metadata field(s) ${unknownKeys.join(', ')}: use maxCount, maxAge, truncateBefore, or put your own fields under custom`,
    );
  const result: StreamMetadata = {};
  if (maxCount !== undefined) result.maxCount = positiveInteger(maxCount, 1, 'Stream metadata maxCount');
  if (maxAge !== undefined) result.maxAge = positiveInteger(maxAge, 1, 'Stream metadata maxAge (seconds)');
  if (truncateBefore !== undefined)
    result.truncateBefore = positiveInteger(truncateBefore, 1, 'Stream metadata truncateBefore');
  if (custom !== undefined) {
    if (typeof custom !== 'object' || custom === null || Array.isArray(custom))
      throw new ValidationError('Stream metadata custom must be an object');
    const issues = jsonIssues(custom, ['custom']);
    if (issues.length > 0) throw new ValidationError('Stream metadata is not JSON', issues);
    result.custom = JSON.parse(JSON.stringify(custom));
  }
  return result;
}

function positiveInteger(value: unknown, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 1) return value;
  throw new ValidationError(`${what} must be a whole number of 1 or more, got ${safeQuote(value)}`);
}

function stringList(value: unknown, what: string): string[] | null {
  if (value === undefined) return null;
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string'))
    throw new ValidationError(`${what} must be an array of strings`);
  return [...(value as string[])];
}

/** The first version a stream read may show, given the retention rules: max of truncateBefore, the soft-delete point and maxCount. */
export function firstVisibleVersion(
  stream: { version: number; hiddenBefore: number },
  metadata: StreamMetadata,
): number {
  let first = Math.max(1, stream.hiddenBefore, metadata.truncateBefore ?? 1);
  if (metadata.maxCount !== undefined) first = Math.max(first, stream.version - metadata.maxCount + 1);
  return first;
}
