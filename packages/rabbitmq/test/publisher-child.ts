// The publisher process of publisher-faults.test.ts (killed with SIGKILL and started again by the test).
import { runPublisherChild } from '@eventline/bus-testing';
import { createRabbitMqTransport } from '../src/index.js';
import { url } from './helpers.js';

await runPublisherChild((prefix) =>
  createRabbitMqTransport({
    url,
    prefix,
    reconnect: { maxAttempts: 1_000, maxDelayMs: 500 },
    onError: () => undefined,
  }),
);
