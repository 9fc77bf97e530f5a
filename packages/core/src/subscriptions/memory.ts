import { systemClock, type Clock } from '../clock.js';
import type { Position } from '../position.js';
import type { InMemoryEventStore } from '../store/memory.js';
import { LeaseLostError, type ParkedEvent, type SubscriptionStore } from './contract.js';

/** What in-memory handlers get as their transaction: nothing to write through; effects go to in-memory read models. */
export interface InMemoryTransaction {
  readonly kind: 'memory';
}

/**
 * Subscription state in process memory, for the in-memory store. Leases work between subscriptions of one process
 * (as with several instances in a test), and expire on `clock` (default the system's; give the subscriptions the same
 * clock). Commits cannot roll back a handler's in-memory effects, so handlers should be idempotent, as the in-memory
 * document store is (last write wins by version).
 */
export function createInMemorySubscriptionStore(
  store: InMemoryEventStore,
  options: { clock?: Clock } = {},
): SubscriptionStore<InMemoryTransaction> {
  const clock = options.clock ?? systemClock;
  const now = () => clock.now();
  const checkpoints = new Map<string, Position>();
  const leases = new Map<string, { owner: string; expiresAt: number }>();
  const parked = new Map<string, ParkedEvent[]>();
  const holds = (name: string, owner: string) => {
    const lease = leases.get(name);
    return lease !== undefined && lease.owner === owner && lease.expiresAt > now();
  };
  const tx: InMemoryTransaction = { kind: 'memory' };
  return {
    atomic: false,
    async checkpoint(name) {
      return checkpoints.get(name) ?? null;
    },
    async commit(args, work) {
      if (!holds(args.name, args.owner)) throw new LeaseLostError(args.name, args.owner);
      const result = await work(tx);
      if (!holds(args.name, args.owner)) throw new LeaseLostError(args.name, args.owner);
      if (args.position !== undefined) checkpoints.set(args.name, args.position);
      if (args.park) parked.set(args.name, [...(parked.get(args.name) ?? []), structuredClone(args.park)]);
      if (args.unpark !== undefined)
        parked.set(
          args.name,
          (parked.get(args.name) ?? []).filter((p) => p.event.id !== args.unpark),
        );
      return result;
    },
    async moveCheckpoint(args) {
      if (!holds(args.name, args.owner)) throw new LeaseLostError(args.name, args.owner);
      checkpoints.set(args.name, args.position);
    },
    async setCheckpoint(name, position) {
      if (position === null) checkpoints.delete(name);
      else checkpoints.set(name, position);
    },
    async acquireLease(name, owner, ttlMs) {
      const lease = leases.get(name);
      if (lease && lease.owner !== owner && lease.expiresAt > now()) return false;
      leases.set(name, { owner, expiresAt: now() + ttlMs });
      return true;
    },
    async releaseLease(name, owner) {
      if (leases.get(name)?.owner === owner) leases.delete(name);
    },
    async parked(name) {
      return structuredClone(parked.get(name) ?? []);
    },
    onAppended: (listener) => store.onAppended(listener),
    async close() {},
  };
}
