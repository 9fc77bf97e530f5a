import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { until } from '@eventline/core/testing';

/** `perStream` messages for each stream, interleaved, versions 1..perStream. */
export { transportMessages as messages } from '@eventline/core/testing';
export { until };

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** The command that starts the machine's Redis (as the CI script does). */
export const START_REDIS =
  'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log';

/** A client that fails fast instead of queueing commands while Redis is away. */
export function probeClient(): Redis {
  const client = new Redis(REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    connectTimeout: 1000,
  });
  client.on('error', () => undefined);
  return client;
}

export async function pingRedis(): Promise<boolean> {
  const client = probeClient();
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/** Fails (never skips) with a clear message when Redis cannot be reached, within a few seconds. */
export async function requireRedis(): Promise<void> {
  await waitForRedis(5_000, `Redis is not reachable at ${REDIS_URL}: start it: ${START_REDIS}`);
}

export async function waitForRedis(ms: number, message = `Redis did not answer PING within ${ms} ms`): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pingRedis())) {
    if (Date.now() > deadline) assert.fail(message);
    await sleep(100);
  }
}

/**
 * Restarts the machine's Redis (127.0.0.1:6379), which keeps nothing on disk: shuts it down without saving, runs
 * `during` while it is down, and always starts it again and waits until PING answers.
 */
export async function restartRedis(during: () => Promise<void> = async () => undefined): Promise<void> {
  try {
    try {
      execSync('redis-cli -h 127.0.0.1 -p 6379 shutdown nosave', { stdio: 'ignore', timeout: 10_000 });
    } catch {
      // redis-cli reports the closed connection as an error; what counts is that Redis is down
    }
    const deadline = Date.now() + 10_000;
    while (await pingRedis()) {
      if (Date.now() > deadline) assert.fail('Redis did not shut down');
      await sleep(50);
    }
    await during();
  } finally {
    if (!(await pingRedis())) execSync(START_REDIS, { stdio: 'ignore', timeout: 10_000 });
    await waitForRedis(20_000);
  }
}

/** Deletes every key of a namespace (prefix). */
export async function deleteKeys(prefix: string): Promise<void> {
  const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
  client.on('error', () => undefined);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) await client.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
}

export function namespace(): string {
  return `redis-test-${randomUUID().replace(/-/g, '').slice(0, 12)}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
