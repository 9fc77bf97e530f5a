import type { JsonValue } from '../json.js';
import type { EventStoreSession } from '../store/contract.js';

/** A saved state of one stream at one version. */
export interface Snapshot {
  readonly streamId: string;
  /** The stream version the state includes (events after it are replayed on load). */
  readonly version: number;
  /** The version of the state's shape (the aggregate's snapshot policy `stateVersion`). */
  readonly stateVersion: number;
  readonly state: JsonValue;
}

/**
 * Where snapshots live, apart from the log. Snapshots are only a speed-up: deleting every one of them changes no result.
 * Implementations: {@link createInMemorySnapshotStore}, and `createPostgresSnapshotStore` in `@eventline/postgres`.
 */
export interface SnapshotStore {
  /** The snapshot of a stream. Inside a transaction, `session` is that transaction (an embedded database has one connection). */
  load(streamId: string, session?: EventStoreSession): Promise<Snapshot | null>;
  /** Keeps the newest snapshot per stream: saving an older version than the stored one does nothing. */
  save(snapshot: Snapshot): Promise<void>;
  /** Deletes the snapshot of one stream, or all snapshots. */
  delete(streamId?: string): Promise<void>;
}

export function createInMemorySnapshotStore(): SnapshotStore {
  const snapshots = new Map<string, Snapshot>();
  return {
    async load(streamId) {
      const snapshot = snapshots.get(streamId);
      return snapshot ? structuredClone(snapshot) : null;
    },
    async save(snapshot) {
      const current = snapshots.get(snapshot.streamId);
      if (current && current.version > snapshot.version && current.stateVersion === snapshot.stateVersion) return;
      snapshots.set(snapshot.streamId, structuredClone(snapshot));
    },
    async delete(streamId) {
      if (streamId === undefined) snapshots.clear();
      else snapshots.delete(streamId);
    },
  };
}
