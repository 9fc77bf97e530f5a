// tier: faults
// The publisher in a child process on PostgreSQL, killed with SIGKILL 10 times while 50k events are appended, and
// the NATS server restarted once mid-stream: a consumer with the SQL inbox applies every event exactly once, in order
// per stream. The figures are printed. The harness is @eventline/bus-testing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runPublisherFaults, faultNamespace } from '@eventline/bus-testing';
import { createNatsTransport, safeName } from '../src/index.js';
import { deleteStream, natsAvailability, NATS_URL, startNatsServer, stopNatsServer, portOpen } from './helpers.js';

const availability = await natsAvailability();

describe('publisher faults on NATS JetStream', { skip: availability.available ? false : availability.reason }, () => {
  it(
    'SIGKILLed 10 times during 50k events, NATS restarted once: every event applied once, in order per stream',
    { timeout: 300_000 },
    async (t) => {
      const prefix = faultNamespace('nats');
      try {
        const figures = await runPublisherFaults({
          broker: 'nats',
          childScript: new URL('./publisher-child.ts', import.meta.url).pathname,
          prefix,
          consumerTransport: () =>
            createNatsTransport({ servers: NATS_URL, prefix, ackWaitMs: 5_000, onError: () => undefined }),
          restartBroker: async () => {
            try {
              await stopNatsServer();
            } finally {
              if (!(await portOpen())) await startNatsServer(30_000);
            }
          },
          log: (line) => t.diagnostic(line),
        });
        t.diagnostic(`figures ${JSON.stringify(figures)}`);
        console.log(`publisher faults on NATS: ${JSON.stringify(figures)}`);
        assert.equal(figures.outOfOrderDropped, 0);
      } finally {
        if (!(await portOpen())) await startNatsServer(30_000);
        await deleteStream(safeName(prefix)).catch(() => undefined);
      }
    },
  );
});
