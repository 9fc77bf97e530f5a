// tier: faults
// The publisher in a child process on PostgreSQL, killed with SIGKILL 10 times while 50k events are appended, and
// RabbitMQ restarted once mid-stream: a consumer with the SQL inbox applies every event exactly once, in order per
// stream. The figures are printed. The harness is @eventline/bus-testing. Without RabbitMQ the test is skipped,
// except under CI=true, where it fails.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { faultNamespace, runPublisherFaults } from '@eventline/bus-testing';
import { createRabbitMqTransport, type RabbitMqTransport } from '../src/index.js';
import { deleteTopology, host, port, portOpen, restartRabbitMq, startRabbitMq, url } from './helpers.js';

const reachable = await portOpen();
const skip =
  !reachable && process.env.CI !== 'true'
    ? `RabbitMQ is not reachable at ${host}:${port} (under CI=true this fails instead)`
    : false;

describe('publisher faults on RabbitMQ', { skip }, () => {
  it(
    'SIGKILLed 10 times during 50k events, RabbitMQ restarted once: every event applied once, in order per stream',
    { timeout: 300_000 },
    async (t) => {
      const prefix = faultNamespace('rabbitmq');
      const made: RabbitMqTransport[] = [];
      try {
        const figures = await runPublisherFaults({
          broker: 'rabbitmq',
          childScript: new URL('./publisher-child.ts', import.meta.url).pathname,
          prefix,
          consumerTransport: () => {
            const transport = createRabbitMqTransport({
              url,
              prefix,
              reconnect: { maxAttempts: 1_000, maxDelayMs: 500 },
              onError: () => undefined,
            });
            made.push(transport);
            return transport;
          },
          restartBroker: () => restartRabbitMq(),
          log: (line) => t.diagnostic(line),
        });
        t.diagnostic(`figures ${JSON.stringify(figures)}`);
        console.log(`publisher faults on RabbitMQ: ${JSON.stringify(figures)}`);
        assert.equal(figures.outOfOrderDropped, 0);
      } finally {
        if (!(await portOpen())) await startRabbitMq();
        await deleteTopology(made);
      }
    },
  );
});
