import assert from 'node:assert/strict';
import { parsePosition, positionBeforeTransaction } from '../position.js';
import type { EventStore } from '../store/contract.js';

/** Every item of an async iterable (a stream read, `readAll`), in order. */
export async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

/**
 * Polls `check` (every `intervalMs`, default 10) until it is true, and fails the test with `what` when it is still
 * false after `ms` (default 30 s). A guard for something that will happen, not a timing assertion: keep the bound
 * generous, and measure speed with the benchmark instead.
 */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = 30_000,
  intervalMs = 10,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * Waits until `readAll` shows every event committed before the call: on the SQL stores a reader is held back by any
 * transaction open on the server (another test's, a projection's), so a count of the log taken at once may be short.
 * Afterwards a count is exact for everything committed before this call.
 */
export async function untilLogSettled(
  store: Pick<EventStore, 'nextPosition' | 'headPosition'>,
  ms = 30_000,
): Promise<void> {
  const boundary = positionBeforeTransaction(parsePosition(await store.nextPosition()).transaction);
  await until(async () => (await store.headPosition()) >= boundary, 'the transactions open before now to end', ms);
}
