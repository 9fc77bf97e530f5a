/**
 * @eventline/core/backend: the kit for writing a store, a read-model store or a transport.
 *
 * Every backend validates and normalises its input with the same functions, so all of them refuse the same bad input
 * with the same typed errors, and encodes messages for a bus with the same codec, so any consumer reads any
 * publisher. Applications do not need this entry; the conformance suites that prove a backend are in
 * `@eventline/core/testing`.
 */

// Text and JSON rules, and what was thrown as an Error.
export { safeQuote, toError } from './errors.js';
export { jsonIssues } from './json.js';
export { assertStreamId } from './stream-id.js';

// The store: what every append and read checks, and the encoded (publisher) read path.
export type { PreparedEvent } from './event.js';
export { positionBeforeTransaction } from './position.js';
export type { EncodedEvent, EncodedReadAllPage } from './store/contract.js';
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

// Uniqueness claims: the compiled rules, the operations of a batch, a rebuild from the log.
export {
  assertNoReleases,
  claimEventOfJson,
  ClaimsRebuild,
  compileUniqueness,
  Uniqueness,
  type ClaimEvent,
  type ClaimOperation,
} from './store/claims.js';

// Idempotency records.
export { commandFingerprint, idempotencyStreamId } from './write/command-bus.js';

// Following the log and partitioning it.
export { partitionOf, streamHash } from './hash.js';
export { createLogSubscription, type LogItem, type LogSubscriptionOptions } from './subscriptions/engine.js';

// Read-model stores.
export { assertCollectionName, assertDocument, assertDocumentId, assertListOptions } from './projections/documents.js';
export { applyProjection, collectionOf, filterOf } from './projections/projection.js';

// The message codec every transport shares.
export {
  HEADERS,
  asReplay,
  decodeEvent,
  encodeEvent,
  encodeStoredEvent,
  encodedEvent,
  subjectMatches,
  type StoredEventText,
} from './transport/codec.js';
