/**
 * eventline core: messages, the event store contract, the in-memory store and the helpers every backend shares.
 * Backends live in their own packages (`@eventline/postgres` for PostgreSQL and embedded PGlite).
 */
export * from './errors.js';
export * from './event.js';
export { newId, isUuid } from './ids.js';
export { jsonIssues, MAX_JSON_DEPTH, type JsonObject, type JsonValue } from './json.js';
export * from './position.js';
export * from './schema.js';
export { assertStreamId, categoryOf, isValidEventType, MAX_STREAM_ID_LENGTH, streamId } from './stream-id.js';
export * from './store/contract.js';
export {
  assertExpectedVersion,
  assertStreamIds,
  assertStreamMetadata,
  checkExpectedVersion,
  firstVisibleVersion,
  normaliseReadAllOptions,
  normaliseReadStreamOptions,
  prepareAppend,
} from './store/validate.js';
export { createInMemoryStore, type InMemoryEventStore, type InMemoryStoreOptions } from './store/memory.js';
export * from './command.js';
export * from './write/aggregate.js';
export * from './write/snapshots.js';
export * from './write/retry.js';
export * from './write/repository.js';
export * from './write/command-bus.js';
export * from './subscriptions/contract.js';
export { createInMemorySubscriptionStore, type InMemoryTransaction } from './subscriptions/memory.js';
export * from './subscriptions/engine.js';
export * from './projections/documents.js';
export * from './projections/projection.js';
export * from './transport/contract.js';
export { createInProcessBroker, type InProcessBroker } from './transport/in-process.js';
export * from './transport/inbox.js';
export * from './transport/publisher.js';
export type { StandardSchemaV1 } from '@standard-schema/spec';
