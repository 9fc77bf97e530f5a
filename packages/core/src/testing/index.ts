/**
 * Testing helpers and conformance suites. Every event store backend runs {@link describeEventStoreConformance}; a backend
 * written outside this repository should run it too. {@link DeciderSpecification} tests domain logic without a store.
 */
export { describeEventStoreConformance, type EventStoreFactory } from './event-store-conformance.js';
export { DeciderSpecification } from './specification.js';
export { collect, until, untilLogSettled } from './helpers.js';
export { describeTransportConformance, transportMessages, type TransportFactory } from './transport-conformance.js';
export { createTestClock, type TestClock } from './clock.js';
export { describeProcessStoreConformance, type ProcessStoreFactory } from './process-conformance.js';
