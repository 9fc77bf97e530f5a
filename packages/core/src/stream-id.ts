import { InvalidStreamIdError } from './errors.js';

/** Longest stream id accepted, in characters. */
export const MAX_STREAM_ID_LENGTH = 255;

const CATEGORY = /^[A-Za-z][A-Za-z0-9_]*$/;
// Visible characters only: no whitespace and no control characters anywhere in the id.
const VISIBLE = /^[^\s\p{Cc}]+$/u;

/**
 * Checks that `value` is a stream id of the form `<category>-<id>` (`account-42`, `payment-0193b7e2-...`) and returns it.
 * The category (before the first `-`) starts with a letter and holds letters, digits and `_` only, so it can be used as a
 * subject or routing-key token by the transports; the id is one or more visible characters (it may contain `-`), and the
 * whole id is well-formed Unicode (no lone UTF-16 surrogate).
 * @throws {InvalidStreamIdError}
 */
export function assertStreamId(value: unknown): string {
  if (typeof value !== 'string') throw new InvalidStreamIdError(value, `expected a string, got ${typeof value}`);
  if (value.length === 0) throw new InvalidStreamIdError(value, 'it is empty');
  if (value.length > MAX_STREAM_ID_LENGTH)
    throw new InvalidStreamIdError(value, `it is ${value.length} characters long`);
  // PostgreSQL's text cannot hold a lone UTF-16 surrogate: the driver sends it as U+FFFD, so 'a-x\ud800' and
  // 'a-x\udbff' would be one stream there and two in memory. Refused on every backend alike.
  if (!value.isWellFormed())
    throw new InvalidStreamIdError(value, 'it is not well-formed Unicode (it holds a lone UTF-16 surrogate)');
  const dash = value.indexOf('-');
  if (dash < 0) throw new InvalidStreamIdError(value, "it has no '-' between category and id");
  const category = value.slice(0, dash);
  if (!CATEGORY.test(category))
    throw new InvalidStreamIdError(
      value,
      `the category '${category}' is not a letter followed by letters, digits or '_'`,
    );
  const id = value.slice(dash + 1);
  if (id.length === 0) throw new InvalidStreamIdError(value, 'the id after the category is empty');
  if (!VISIBLE.test(id)) throw new InvalidStreamIdError(value, 'the id contains whitespace or control characters');
  return value;
}

/** The category of a stream id: the part before the first `-` (`account` for `account-42`). */
export function categoryOf(streamId: string): string {
  const dash = streamId.indexOf('-');
  return dash < 0 ? streamId : streamId.slice(0, dash);
}

/** Builds a stream id from a category and an id: `streamId('account', 42)` is `'account-42'`. Validated. */
export function streamId(category: string, id: string | number): string {
  return assertStreamId(`${category}-${id}`);
}

const EVENT_TYPE = /^[A-Za-z][A-Za-z0-9_]*$/;

/** Event type names: a letter followed by letters, digits or `_`, at most 200 characters (`AccountOpened`). */
export function isValidEventType(value: unknown): value is string {
  return typeof value === 'string' && value.length <= 200 && EVENT_TYPE.test(value);
}
