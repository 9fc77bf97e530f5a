// The publisher process of publisher-faults.test.ts (killed with SIGKILL and started again by the test).
import { runPublisherChild } from '@eventline/bus-testing';
import { createRedisTransport } from '../src/index.js';

await runPublisherChild((prefix) =>
  createRedisTransport({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', prefix }),
);
