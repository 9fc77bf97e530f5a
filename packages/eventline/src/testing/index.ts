/**
 * Testing helpers and conformance suites. Every event store backend runs {@link describeEventStoreConformance}; a backend
 * written outside this repository should run it too.
 */
export { describeEventStoreConformance, type EventStoreFactory } from './event-store-conformance.js';
