// tier: faults
// The publisher in a child process on PostgreSQL, killed with SIGKILL 10 times while 50k events are appended, and
// Redis restarted once mid-stream: a consumer with the SQL inbox applies every event exactly once, in order per
// stream. Redis here keeps nothing on disk, so its restart loses messages it had confirmed: the consumer drops what
// comes out of order after it, and a replay from the consumer's low-water position brings the rest (the recovery
// README.md describes). The figures are printed. The harness is @eventline/bus-testing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { faultNamespace, runPublisherFaults } from '@eventline/bus-testing';
import { createRedisTransport } from '../src/index.js';
import { deleteKeys, REDIS_URL, requireRedis, restartRedis } from './helpers.js';

describe('publisher faults on Redis Streams', () => {
  it(
    'SIGKILLed 10 times during 50k events, Redis restarted once: every event applied once, in order per stream (with a replay)',
    { timeout: 300_000 },
    async (t) => {
      const { hostname, port } = new URL(REDIS_URL);
      assert.ok(
        hostname === '127.0.0.1' && (port || '6379') === '6379',
        `this test restarts the machine's Redis at 127.0.0.1:6379; REDIS_URL is ${REDIS_URL}`,
      );
      await requireRedis();
      const prefix = faultNamespace('redis');
      try {
        const figures = await runPublisherFaults({
          broker: 'redis',
          childScript: new URL('./publisher-child.ts', import.meta.url).pathname,
          prefix,
          consumerTransport: () => createRedisTransport({ url: REDIS_URL, prefix, claimIdleMs: 2_000 }),
          restartBroker: () => restartRedis(),
          lossyRestart: true,
          log: (line) => t.diagnostic(line),
        });
        t.diagnostic(`figures ${JSON.stringify(figures)}`);
        console.log(`publisher faults on Redis: ${JSON.stringify(figures)}`);
      } finally {
        await deleteKeys(prefix).catch(() => undefined);
      }
    },
  );
});
