/**
 * @eventline/core: define events and commands, decide and append, subscribe, project and publish.
 *
 * This entry holds what an application uses. What a backend author needs (validation and normalisation shared by
 * every store, the message codec of the transports, the log follower) is in `@eventline/core/backend`; conformance
 * suites and given/when/then helpers are in `@eventline/core/testing`. Stores on PostgreSQL and embedded PGlite are in
 * `@eventline/postgres`; transports in `@eventline/nats`, `@eventline/rabbitmq` and `@eventline/redis`.
 */

// Errors: every error eventline throws is an EventlineError with a stable `code`.
export {
  ConcurrencyError,
  DomainError,
  DuplicateHandlerError,
  EventIdConflictError,
  EventlineError,
  IdempotencyKeyReusedError,
  InvalidStreamIdError,
  PayloadTooLargeError,
  StoreClosedError,
  StoreUnavailableError,
  StreamDeletedError,
  TransactionConflictError,
  TransportClosedError,
  TransportConfigurationError,
  TransportError,
  TransportUnavailableError,
  UniquenessConfigurationError,
  UniquenessError,
  UnknownCollectionError,
  UnknownCommandError,
  UnknownEventTypeError,
  UpcasterConfigurationError,
  ValidationError,
  type ActualVersion,
  type EventlineErrorCode,
  type TransportName,
  type ValidationIssue,
} from './errors.js';
export { LeaseLostError } from './subscriptions/contract.js';
export { WaitTimeoutError } from './subscriptions/engine.js';

// Time.
export { systemClock, type Clock } from './clock.js';

// Messages, ids, positions and stream names.
export type { EventInput, EventMetadata, RecordedEvent } from './event.js';
export { isUuid, newId } from './ids.js';
export { MAX_JSON_DEPTH, type JsonObject, type JsonValue } from './json.js';
export { START, comparePositions, formatPosition, isPosition, parsePosition, type Position } from './position.js';
export { MAX_STREAM_ID_LENGTH, categoryOf, isValidEventType, streamId } from './stream-id.js';

// Event and command definitions (Standard Schema), upcasting.
export {
  defineEvent,
  eventRegistry,
  validateEventData,
  validateWithSchema,
  type EventData,
  type EventDefinition,
  type EventDefinitionOptions,
  type EventInputOf,
  type EventOf,
  type EventRegistry,
  type Upcaster,
} from './schema.js';
export {
  createCommand,
  defineCommand,
  type Command,
  type CommandDefinition,
  type CommandMetadata,
  type CommandOf,
} from './command.js';
export type { StandardSchemaV1 } from '@standard-schema/spec';

// The event store.
export {
  DEFAULT_ALL_PAGE_SIZE,
  DEFAULT_MAX_EVENT_BYTES,
  DEFAULT_STREAM_PAGE_SIZE,
  type AppendOptions,
  type AppendResult,
  type EventStore,
  type EventStoreOptions,
  type EventStoreSession,
  type ExpectedVersion,
  type ReadAllFilter,
  type ReadAllHoldback,
  type ReadAllOptions,
  type ReadAllPage,
  type ReadStreamOptions,
  type StreamInfo,
  type StreamMetadata,
} from './store/contract.js';
export { createInMemoryStore, type InMemoryEventStore, type InMemoryStoreOptions } from './store/memory.js';
export {
  MAX_CLAIM_VALUE_LENGTH,
  RELEASES_CLAIMS,
  defineUniqueness,
  type ClaimSource,
  type ClaimedValue,
  type RebuildClaimsResult,
  type UniquenessOptions,
  type UniquenessRule,
} from './store/claims.js';

// The write side: deciders and aggregates, repository, snapshots, command bus and its middleware.
export {
  aggregateFromClass,
  defineAggregate,
  type Aggregate,
  type AggregateRoot,
  type Decider,
  type DomainEvent,
  type SnapshotPolicy,
} from './write/aggregate.js';
export { createInMemorySnapshotStore, type Snapshot, type SnapshotStore } from './write/snapshots.js';
export { isRetryableConflict, retryOnConflict, type RetryOptions } from './write/retry.js';
export {
  createRepository,
  type AppendedEvent,
  type CommandContext,
  type CommandResult,
  type LoadedAggregate,
  type Repository,
  type RepositoryOptions,
  type StateCacheOptions,
} from './write/repository.js';
export {
  commandHooks,
  createCommandBus,
  defaultMiddleware,
  idempotency,
  inTransaction,
  retryOnConflicts,
  validateCommands,
  type CommandBus,
  type CommandHandler,
  type Middleware,
  type MiddlewareContext,
} from './write/command-bus.js';

// Subscriptions.
export type { ParkedEvent, SubscriptionStore } from './subscriptions/contract.js';
export { createInMemorySubscriptionStore, type InMemoryTransaction } from './subscriptions/memory.js';
export {
  createSubscription,
  type EventHandler,
  type HandlerContext,
  type Subscription,
  type SubscriptionOptions,
  type SubscriptionState,
  type SubscriptionStatus,
  type WaitForOptions,
} from './subscriptions/engine.js';

// Projections and document read models.
export {
  MAX_DOCUMENT_ID_LENGTH,
  createInMemoryDocumentStore,
  type DocumentCollection,
  type DocumentStore,
  type StoredDocument,
} from './projections/documents.js';
export {
  createAsyncProjection,
  createInMemoryProjectionCatalog,
  defineProjection,
  projectLive,
  withInlineProjections,
  type AsyncProjection,
  type AsyncProjectionOptions,
  type ProjectionCatalog,
  type ProjectionContext,
  type ProjectionDefinition,
  type ProjectionDocuments,
  type ProjectionHandler,
  type ReadCollection,
  type RebuildProgress,
} from './projections/projection.js';

// Transports: publishing the log to a bus, consuming it, replay.
export type { ConsumeOptions, Consumer, ReceivedMessage, Transport, TransportMessage } from './transport/contract.js';
export { createInProcessBroker, type InProcessBroker } from './transport/in-process.js';
export { consumeEvents, createInMemoryInbox, type ConsumeEventsOptions, type Inbox } from './transport/inbox.js';
export {
  createPublisher,
  replayToTransport,
  type PublisherOptions,
  type ReplayOptions,
} from './transport/publisher.js';

// Process managers (sagas) and timers.
export {
  defineProcess,
  processFromClass,
  type ProcessRoot,
  type ProcessDecision,
  type ProcessDefinition,
  type ProcessEventInput,
  type ProcessInput,
  type ProcessRejectedInput,
  type ProcessTimerInput,
  type TimerRequest,
} from './process/definition.js';
export type { OutboxCommand, ProcessInstanceRecord, ProcessStore, TimerRecord } from './process/contract.js';
export { createInMemoryProcessStore } from './process/memory.js';
export {
  createProcessManager,
  processCommandId,
  type ProcessManager,
  type ProcessManagerOptions,
} from './process/manager.js';
export { ProcessDecisionError, ProcessStoreClosedError } from './process/errors.js';
export type { CommandSendingOptions } from './process/sender.js';
export {
  createCommandScheduler,
  type CommandScheduler,
  type CommandSchedulerOptions,
  type ScheduledCommand,
} from './process/scheduler.js';
