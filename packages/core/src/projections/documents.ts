import { safeQuote, ValidationError } from '../errors.js';
import { jsonIssues, stringIssue } from '../json.js';
import type { Position } from '../position.js';

/** A read-model document and the position of the last event applied to it. */
export interface StoredDocument<T = unknown> {
  readonly id: string;
  readonly data: T;
  /** The position of the event that wrote it last: an older or repeated event never overwrites it. */
  readonly version: Position;
}

/**
 * Documents of one kind (a table, for PostgreSQL) in a read model. Ids (and `after`) are well-formed Unicode strings
 * of 1 to 500 characters without NUL (U+0000); any other is refused with a ValidationError, on reads as on writes.
 * Reads never create the collection: one that does not exist reads as empty.
 */
export interface DocumentCollection<T = unknown> {
  get(id: string): Promise<StoredDocument<T> | null>;
  /** Writes `data` as of `version`. Does nothing and returns false when the stored version is the same or newer. */
  put(id: string, data: T, version: Position): Promise<boolean>;
  /** Deletes as of `version` (remembering the version, so an older event cannot bring the document back). False when newer. */
  delete(id: string, version: Position): Promise<boolean>;
  /** Documents in id order, `limit` (default 100, a whole number of 1 or more) after the id `after`. */
  list(options?: { after?: string; limit?: number }): Promise<StoredDocument<T>[]>;
  count(): Promise<number>;
}

/**
 * Where projections keep documents. `tx` is the transaction handlers write through (the subscription's, or the
 * append's for inline projections); without it, reads and writes run on their own.
 * In memory: {@link createInMemoryDocumentStore}; PostgreSQL/PGlite (jsonb): `@eventline/postgres`.
 */
export interface DocumentStore<Tx = unknown> {
  collection<T = unknown>(name: string, tx?: Tx): DocumentCollection<T>;
  /** Whether the collection exists: it was written to (created), and not dropped since. Reads never create one. */
  has(name: string): Promise<boolean>;
  /** The names of the existing collections that start with `prefix`, sorted. */
  collections(prefix: string): Promise<string[]>;
  /** Deletes every collection whose name starts with `prefix` (old versions after a rebuild). */
  dropCollections(prefix: string): Promise<void>;
}

export function assertCollectionName(name: string): string {
  if (!/^[a-z][a-z0-9_]{0,50}$/.test(name))
    throw new ValidationError(
      `Collection name '${name}' must be a lowercase letter followed by up to 50 lowercase letters, digits or '_'`,
    );
  return name;
}

/** Longest document id, in characters (UTF-16 code units, as `String.length` counts). */
export const MAX_DOCUMENT_ID_LENGTH = 500;

/** Why a string cannot be a document id (or an `after` bound), or undefined. */
function idIssue(id: unknown): string | undefined {
  if (typeof id !== 'string') return `must be a string, got ${safeQuote(id)}`;
  if (id.length === 0 || id.length > MAX_DOCUMENT_ID_LENGTH)
    return `must be 1 to ${MAX_DOCUMENT_ID_LENGTH} characters long, got ${id.length}`;
  const text = stringIssue(id, 'strings');
  return text === undefined ? undefined : `is refused: ${text}`;
}

/** Checks a document id: a well-formed string of 1 to 500 characters without NUL. @throws {ValidationError} */
export function assertDocumentId(collection: string, id: unknown): string {
  const issue = idIssue(id);
  if (issue !== undefined) throw new ValidationError(`Document id ${safeQuote(id)} in '${collection}' ${issue}`);
  return id as string;
}

/** Checks the options of `list`: `after` like an id, `limit` a whole number of 1 or more. @throws {ValidationError} */
export function assertListOptions(
  collection: string,
  options: { after?: unknown; limit?: unknown },
): { after: string | undefined; limit: number } {
  const { after, limit = 100 } = options;
  if (after !== undefined) {
    const issue = idIssue(after);
    if (issue !== undefined) throw new ValidationError(`List of '${collection}': after ${safeQuote(after)} ${issue}`);
  }
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1)
    throw new ValidationError(
      `List of '${collection}': limit must be a whole number of 1 or more, got ${safeQuote(limit)}`,
    );
  return { after: after as string | undefined, limit };
}

export function assertDocument(collection: string, id: unknown, data: unknown): void {
  assertDocumentId(collection, id);
  const issues = jsonIssues(data, ['data']);
  if (issues.length > 0) throw new ValidationError(`Document '${id as string}' in '${collection}' is not JSON`, issues);
}

/** Read models in process memory. */
export function createInMemoryDocumentStore(): DocumentStore {
  const collections = new Map<string, Map<string, { data: string | null; version: Position }>>();
  return {
    collection<T>(name: string): DocumentCollection<T> {
      assertCollectionName(name);
      /** Writes create the collection; reads see an empty one when it does not exist. */
      const rows = () => {
        let found = collections.get(name);
        if (!found) collections.set(name, (found = new Map()));
        return found;
      };
      const existing = () => collections.get(name) ?? new Map<string, { data: string | null; version: Position }>();
      const live = () =>
        [...existing().entries()]
          .filter(([, row]) => row.data !== null)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return {
        async get(id) {
          assertDocumentId(name, id);
          const row = existing().get(id);
          return row && row.data !== null ? { id, data: JSON.parse(row.data) as T, version: row.version } : null;
        },
        async put(id, data, version) {
          assertDocument(name, id, data);
          const row = rows().get(id);
          if (row && row.version >= version) return false;
          rows().set(id, { data: JSON.stringify(data), version });
          return true;
        },
        async delete(id, version) {
          assertDocumentId(name, id);
          const row = rows().get(id);
          if (row && row.version >= version) return false;
          rows().set(id, { data: null, version });
          return true;
        },
        async list(options = {}) {
          const { after, limit } = assertListOptions(name, options);
          return live()
            .filter(([id]) => after === undefined || id > after)
            .slice(0, limit)
            .map(([id, row]) => ({ id, data: JSON.parse(row.data!) as T, version: row.version }));
        },
        async count() {
          return live().length;
        },
      };
    },
    async has(name) {
      return collections.has(name);
    },
    async collections(prefix) {
      return [...collections.keys()].filter((name) => name.startsWith(prefix)).sort();
    },
    async dropCollections(prefix) {
      for (const name of [...collections.keys()]) if (name.startsWith(prefix)) collections.delete(name);
    },
  };
}
