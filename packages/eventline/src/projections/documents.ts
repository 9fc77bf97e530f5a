import { ValidationError } from '../errors.js';
import { jsonIssues } from '../json.js';
import type { Position } from '../position.js';

/** A read-model document and the position of the last event applied to it. */
export interface StoredDocument<T = unknown> {
  readonly id: string;
  readonly data: T;
  /** The position of the event that wrote it last: an older or repeated event never overwrites it. */
  readonly version: Position;
}

/** Documents of one kind (a table, for PostgreSQL) in a read model. */
export interface DocumentCollection<T = unknown> {
  get(id: string): Promise<StoredDocument<T> | null>;
  /** Writes `data` as of `version`. Does nothing and returns false when the stored version is the same or newer. */
  put(id: string, data: T, version: Position): Promise<boolean>;
  /** Deletes as of `version` (remembering the version, so an older event cannot bring the document back). False when newer. */
  delete(id: string, version: Position): Promise<boolean>;
  /** Documents in id order, `limit` (default 100) after the id `after`. */
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
  /** Deletes every collection whose name starts with `prefix` (old versions after a rebuild). */
  dropCollections(prefix: string): Promise<void>;
}

export function assertCollectionName(name: string): string {
  if (!/^[a-z][a-z0-9_]{0,50}$/.test(name)) throw new ValidationError(`Collection name '${name}' must be a lowercase letter followed by up to 50 lowercase letters, digits or '_'`);
  return name;
}

export function assertDocument(collection: string, id: unknown, data: unknown): void {
  if (typeof id !== 'string' || id.length === 0 || id.length > 500) throw new ValidationError(`Document id in '${collection}' must be a string of 1 to 500 characters`);
  const issues = jsonIssues(data, ['data']);
  if (issues.length > 0) throw new ValidationError(`Document '${id}' in '${collection}' is not JSON`, issues);
}

/** Read models in process memory. */
export function createInMemoryDocumentStore(): DocumentStore {
  const collections = new Map<string, Map<string, { data: string | null; version: Position }>>();
  return {
    collection<T>(name: string): DocumentCollection<T> {
      assertCollectionName(name);
      const rows = () => {
        let found = collections.get(name);
        if (!found) collections.set(name, (found = new Map()));
        return found;
      };
      const live = () => [...rows().entries()].filter(([, row]) => row.data !== null).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return {
        async get(id) {
          const row = rows().get(id);
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
          const row = rows().get(id);
          if (row && row.version >= version) return false;
          rows().set(id, { data: null, version });
          return true;
        },
        async list(options = {}) {
          const after = options.after;
          return live()
            .filter(([id]) => after === undefined || id > after)
            .slice(0, options.limit ?? 100)
            .map(([id, row]) => ({ id, data: JSON.parse(row.data!) as T, version: row.version }));
        },
        async count() {
          return live().length;
        },
      };
    },
    async dropCollections(prefix) {
      for (const name of [...collections.keys()]) if (name.startsWith(prefix)) collections.delete(name);
    },
  };
}
