// tier: integration
// Grouped stream reads in the PostgreSQL store (src/read-groups.ts): the first pages of forwards reads made in the
// same turn go in one statement, and each read yields exactly what it yields alone. On the real server.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StreamDeletedError, newId, type RecordedEvent, type ReadStreamOptions } from '@eventline/core';
import type { PostgresEventStore } from '@eventline/postgres';
import { spiedStores } from './helpers.js';

const openSpied = spiedStores('rgrp');

/**
 * A store on a pool of its own, with a count of the statements that read first pages (alone or grouped), and a way to
 * make the next grouped statements fail as a lost connection would.
 */
async function countedStore(options: { grouping?: number } = {}) {
  const counts = { alone: 0, grouped: 0, failNextGroups: 0 };
  const store = await openSpied(({ name = '' }) => {
    if (name.endsWith('.first_fwd')) counts.alone++;
    if (!name.endsWith('.first_group')) return;
    counts.grouped++;
    if (counts.failNextGroups === 0) return;
    counts.failNextGroups--;
    return Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
  }, options);
  return { store, counts };
}

const events = (count: number, from = 0) =>
  Array.from({ length: count }, (_, i) => ({
    id: newId(),
    type: 'Deposited',
    data: { amount: from + i, note: 'é€😀' },
  }));

/** A read's outcome: the events' ids and versions, or the error's name. */
async function outcome(
  store: PostgresEventStore,
  streamId: string,
  options?: ReadStreamOptions,
): Promise<string[] | string> {
  try {
    const read: RecordedEvent[] = [];
    for await (const event of store.readStream(streamId, options)) read.push(event);
    return read.map((event) => `${event.version}:${event.id}:${JSON.stringify(event.data)}:${event.position}`);
  } catch (error) {
    return error instanceof StreamDeletedError ? 'StreamDeletedError' : String(error);
  }
}

/** Streams in every state a read can meet, and the reads to make of them. */
async function seedStreams(store: PostgresEventStore): Promise<Array<[string, ReadStreamOptions | undefined]>> {
  await store.append('acct-small', events(3));
  await store.append('acct-long', events(12));
  await store.append('acct-soft', events(2));
  await store.deleteStream('acct-soft');
  await store.append('acct-again', events(2));
  await store.deleteStream('acct-again');
  await store.append('acct-again', events(1, 100));
  await store.append('acct-gone', events(2));
  await store.deleteStream('acct-gone', { hard: true });
  await store.append('acct-capped', events(6));
  await store.setStreamMetadata('acct-capped', { maxCount: 2 });
  await store.append('acct-cut', events(6));
  await store.setStreamMetadata('acct-cut', { truncateBefore: 4, maxAge: 3600 });
  await store.setStreamMetadata('acct-meta-only', { maxCount: 5 });
  return [
    ['acct-missing', undefined],
    ['acct-small', undefined],
    ['acct-small', { from: 2 }],
    ['acct-small', { from: 9 }],
    ['acct-long', { pageSize: 5 }],
    ['acct-long', { from: 3, pageSize: 4, limit: 6 }],
    ['acct-long', { direction: 'backwards', pageSize: 5 }],
    ['acct-soft', undefined],
    ['acct-again', undefined],
    ['acct-gone', undefined],
    ['acct-capped', undefined],
    ['acct-cut', { pageSize: 2 }],
    ['acct-meta-only', undefined],
  ];
}

describe('grouped stream reads', () => {
  it('reads made together go in one statement, and each yields what it yields alone', async () => {
    const { store, counts } = await countedStore();
    const reads = await seedStreams(store);
    const alone: Array<string[] | string> = [];
    for (const [streamId, options] of reads) alone.push(await outcome(store, streamId, options));
    assert.equal(counts.grouped, 0, 'a read by itself is sent alone');

    const before = { ...counts };
    const together = await Promise.all(reads.map(([streamId, options]) => outcome(store, streamId, options)));
    assert.deepEqual(together, alone);
    assert.equal(counts.grouped - before.grouped, 1, 'one grouped statement for the first pages');
    assert.equal(counts.alone - before.alone, 0, 'no first page sent alone');
    // The outcomes are what the store promises, not only equal to each other.
    assert.deepEqual(together[0], []);
    assert.equal((together[4] as string[]).length, 12);
    assert.deepEqual(
      (together[5] as string[]).map((line) => Number(line.split(':')[0])),
      [3, 4, 5, 6, 7, 8],
    );
    assert.deepEqual(
      (together[6] as string[]).map((line) => Number(line.split(':')[0])),
      [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1],
    );
    assert.deepEqual(together[7], []);
    assert.deepEqual(
      (together[8] as string[]).map((line) => Number(line.split(':')[0])),
      [3],
      'numbering goes on after a soft delete',
    );
    assert.equal(together[9], 'StreamDeletedError');
    assert.deepEqual(
      (together[10] as string[]).map((line) => Number(line.split(':')[0])),
      [5, 6],
    );
    assert.deepEqual(
      (together[11] as string[]).map((line) => Number(line.split(':')[0])),
      [4, 5, 6],
    );
    assert.deepEqual(together[12], []);
  });

  it('more reads than a statement takes go in several, all answered', async () => {
    const { store, counts } = await countedStore();
    const ids = Array.from({ length: 150 }, (_, i) => `acct-many${i}`);
    for (const [i, id] of ids.entries()) if (i % 3 !== 0) await store.append(id, events(1 + (i % 4), i));
    const before = counts.grouped;
    const read = await Promise.all(ids.map((id) => outcome(store, id)));
    read.forEach((lines, i) => assert.equal((lines as string[]).length, i % 3 === 0 ? 0 : 1 + (i % 4), ids[i]));
    assert.equal(counts.grouped - before, 3, '150 reads, at most 64 a statement');
  });

  it('a grouped statement that fails sends each read again alone', async () => {
    const { store, counts } = await countedStore();
    const reads = await seedStreams(store);
    const alone: Array<string[] | string> = [];
    for (const [streamId, options] of reads) alone.push(await outcome(store, streamId, options));
    counts.failNextGroups = 1;
    const before = { ...counts };
    const together = await Promise.all(reads.map(([streamId, options]) => outcome(store, streamId, options)));
    assert.deepEqual(together, alone);
    assert.equal(counts.grouped - before.grouped, 1);
    assert.equal(
      counts.alone - before.alone,
      reads.filter(([, options]) => options?.direction !== 'backwards').length,
      'each forwards read again, alone',
    );
  });

  it('grouping: 0 sends every read alone', async () => {
    const { store, counts } = await countedStore({ grouping: 0 });
    await store.append('acct-one', events(2));
    const read = await Promise.all(['acct-one', 'acct-two', 'acct-one'].map((id) => outcome(store, id)));
    assert.deepEqual(
      read.map((lines) => (lines as string[]).length),
      [2, 0, 2],
    );
    assert.equal(counts.grouped, 0);
    assert.equal(counts.alone, 3);
  });
});
