// The publisher process of publisher-faults.test.ts (killed with SIGKILL and started again by the test).
import { runPublisherChild } from '@eventline/bus-testing';
import { createNatsTransport } from '../src/index.js';

await runPublisherChild((prefix) =>
  createNatsTransport({ servers: process.env.NATS_URL ?? 'nats://127.0.0.1:4222', prefix, onError: () => undefined }),
);
