/**
 * The demo service, composed from parts: the bank and the guest list on one event store, their read models as async
 * projections, and the HTTP API. Storage is passed in, so the same app runs on PGlite, PostgreSQL or in memory.
 */
import { bankReadModels, createBank, transferProcess } from '@eventline/example-bank';
import { createGuestlist, guestlistReadModels, responseSaga } from '@eventline/example-guestlist';
import { createHttpApi } from '@eventline/server';
import {
  createAsyncProjection,
  createProcessManager,
  type ProcessStore,
  type DocumentStore,
  type EventStore,
  type ProjectionCatalog,
  type SnapshotStore,
  type SubscriptionStore,
} from '@eventline/core';

export { openSqlStore, sqlStorage, stopOnSignals } from './process.js';

export interface DemoStorage<Tx> {
  store: EventStore;
  subscriptions: SubscriptionStore<Tx>;
  documents: DocumentStore<Tx>;
  catalog: ProjectionCatalog;
  snapshots?: SnapshotStore;
  /** Where the process managers (the guest list's ResponseSaga, the bank's transfers) keep their state; without it, they do not run. */
  processes?: ProcessStore<Tx>;
}

export interface DemoOptions {
  logger?: boolean;
  /** How many guests the guest list has room for (the ResponseSaga confirms that many, then denies). Default 2. */
  guestlistLimit?: number;
  /** When set, an invitation not answered within this many ms is declined by the saga. */
  answerTimeoutMs?: number;
}

export async function createDemo<Tx>(storage: DemoStorage<Tx>, options: DemoOptions = {}) {
  // One process serves the demo, but the caches would stay correct beside others (see `cache` in createRepository).
  const repositories = { cache: true, ...(storage.snapshots ? { snapshots: storage.snapshots } : {}) };
  const bank = createBank(storage.store, repositories);
  const guestlist = createGuestlist(storage.store, repositories);
  const common = {
    store: storage.store,
    subscriptions: storage.subscriptions,
    documents: storage.documents,
    catalog: storage.catalog,
    pollIntervalMs: 500,
  };
  const projections = {
    bank: createAsyncProjection({ ...common, projection: bankReadModels }),
    guestlist: createAsyncProjection({ ...common, projection: guestlistReadModels }),
  };
  for (const projection of Object.values(projections)) await projection.start();
  // The process managers: the guest list's ResponseSaga, and the bank's transfers carried out step by step.
  const processes = storage.processes
    ? [
        createProcessManager({
          process: responseSaga({
            limit: options.guestlistLimit ?? 2,
            ...(options.answerTimeoutMs === undefined ? {} : { answerTimeoutMs: options.answerTimeoutMs }),
          }),
          store: storage.store,
          subscriptions: storage.subscriptions,
          processes: storage.processes,
          bus: guestlist.bus,
        }),
        createProcessManager({
          process: transferProcess,
          store: storage.store,
          subscriptions: storage.subscriptions,
          processes: storage.processes,
          bus: bank.processBus,
        }),
      ]
    : [];
  for (const manager of processes) manager.start();
  const api = createHttpApi({
    store: storage.store,
    buses: [bank.bus, guestlist.bus],
    projections,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  });
  return {
    api,
    bank,
    guestlist,
    projections,
    processes,
    async close() {
      await api.close();
      for (const manager of processes) await manager.stop();
      for (const projection of Object.values(projections)) await projection.stop();
    },
  };
}
