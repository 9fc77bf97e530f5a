/**
 * PGlite tests beyond the conformance suite: a file-backed database survives a restart; readers outside an open
 * transaction see committed data only (PGlite has one connection); schema names.
 */
// tier: integration
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { ConcurrencyError, StreamDeletedError, ValidationError, newId, type EventInput } from '@eventline/core';
import { createPGliteStore, type PGliteEventStore } from '@eventline/postgres';
import { uniqueSchema } from './helpers.js';
import { collect } from '@eventline/core/testing';

const ev = (type = 'Deposited', data: unknown = { at: Math.random() }): EventInput & { id: string } => ({
  id: newId(),
  type,
  data,
});

describe('schema names', () => {
  it('are validated before the database is opened', () => {
    for (const bad of ['', 'Upper', 'a b', '9x', 'pg_x', 'a'.repeat(64)]) {
      assert.throws(() => createPGliteStore({ schema: bad, dataDir: 'memory://' }), ValidationError);
    }
  });
});

describe('file-backed database', () => {
  it('keeps events, versions, positions and metadata across close and reopen', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'eventline-pglite-'));
    try {
      const dataDir = join(dir, 'nested', 'data');
      const first = createPGliteStore({ dataDir });
      const a = await first.append('acct-1', [ev('Opened', { owner: 'Ada' }), ev('Deposited', { amount: 5 })]);
      await first.append('acct-2', [ev('Opened', { owner: 'Bob' })]);
      await first.setStreamMetadata('acct-1', { maxCount: 10, custom: { tier: 'gold' } });
      await first.deleteStream('acct-2');
      const before = await collect(first.readAll());
      await first.close();

      const second = createPGliteStore({ dataDir });
      try {
        assert.deepEqual(await second.migrate(), [], 'already migrated');
        const events = await collect(second.readStream('acct-1'));
        assert.deepEqual(
          events.map((e) => [e.version, e.type, e.data]),
          [
            [1, 'Opened', { owner: 'Ada' }],
            [2, 'Deposited', { amount: 5 }],
          ],
        );
        assert.equal(events[1]!.position, a.position);
        assert.deepEqual(await collect(second.readAll()), before);
        assert.deepEqual(await second.getStreamMetadata('acct-1'), { maxCount: 10, custom: { tier: 'gold' } });
        assert.deepEqual(await second.streamInfo('acct-2'), {
          streamId: 'acct-2',
          exists: false,
          version: 1,
          deleted: 'soft',
        });
        const next = await second.append('acct-1', [ev('Withdrawn')], { expectedVersion: 2 });
        assert.equal(next.version, 3);
        assert.ok(next.position > a.position);
      } finally {
        await second.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('one connection: readers outside an open transaction', () => {
  const db = new PGlite('memory://');
  after(() => db.close());
  const store = async (): Promise<PGliteEventStore> => {
    const s = createPGliteStore({ db, schema: uniqueSchema('view') });
    await s.migrate();
    return s;
  };

  /** Runs `inside` in a transaction and `outside` while it is still open; returns when the transaction has ended. */
  async function whileOpen(
    s: PGliteEventStore,
    inside: Parameters<PGliteEventStore['transaction']>[0],
    outside: () => Promise<void>,
    fail = false,
  ) {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => (ready = resolve));
    const running = s.transaction(async (tx) => {
      await inside(tx);
      ready();
      await gate;
      if (fail) throw new Error('rolled back on purpose');
    });
    const settled = running.then(
      () => null,
      (error: unknown) => error,
    );
    await isReady;
    try {
      await outside();
    } finally {
      release();
    }
    return settled;
  }

  it('see committed streams, metadata and deletes until the transaction commits', async () => {
    const s = await store();
    await s.append('acct-1', [ev(), ev()]);
    await s.append('acct-2', [ev(), ev(), ev()]);
    await s.setStreamMetadata('acct-1', { custom: { v: 1 } });
    const before = await collect(s.readAll());
    let outsideAppend: Promise<unknown> | undefined;
    const error = await whileOpen(
      s,
      async (tx) => {
        await tx.append('acct-1', [ev('Inside')]);
        await tx.setStreamMetadata('acct-1', { custom: { v: 2 } });
        await tx.deleteStream('acct-2', { hard: true });
        await tx.append('acct-3', [ev('Inside')]);
        assert.equal((await tx.streamInfo('acct-1')).version, 3, 'the transaction sees its own writes');
        await assert.rejects(collect(tx.readStream('acct-2')), StreamDeletedError);
      },
      async () => {
        assert.deepEqual(
          (await collect(s.readStream('acct-1'))).map((e) => e.version),
          [1, 2],
        );
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { direction: 'backwards' }))).map((e) => e.version),
          [2, 1],
        );
        assert.deepEqual(await s.streamInfo('acct-1'), { streamId: 'acct-1', exists: true, version: 2, deleted: null });
        assert.deepEqual(await s.getStreamMetadata('acct-1'), { custom: { v: 1 } });
        assert.deepEqual((await collect(s.readStream('acct-2'))).length, 3, 'the hard delete is not committed yet');
        assert.deepEqual(await s.streamInfo('acct-3'), {
          streamId: 'acct-3',
          exists: false,
          version: 0,
          deleted: null,
        });
        assert.deepEqual(await collect(s.readAll()), before);
        assert.equal((await s.readAllHoldback()).heldBackEvents, 0);
        // Writes from outside wait for the transaction.
        let done = false;
        outsideAppend = s.append('acct-1', [ev('Outside')]).then(() => (done = true));
        await new Promise((resolve) => setTimeout(resolve, 30));
        assert.equal(done, false, 'an outside write waits for the open transaction');
      },
    );
    assert.equal(error, null);
    await outsideAppend;
    assert.deepEqual((await collect(s.readStream('acct-1'))).map((e) => e.type).slice(2), ['Inside', 'Outside']);
    assert.deepEqual(await s.getStreamMetadata('acct-1'), { custom: { v: 2 } });
    await assert.rejects(collect(s.readStream('acct-2')), StreamDeletedError);
    const all = await collect(s.readAll());
    assert.ok(!all.some((e) => e.streamId === 'acct-2'), 'the hard-deleted events are gone after commit');
    assert.equal(all.length, 2 + 1 + 1 + 1);
  });

  it('after a rollback nothing changed, and nothing was ever hidden from readers', async () => {
    const s = await store();
    await s.append('acct-1', [ev(), ev()]);
    const error = await whileOpen(
      s,
      async (tx) => {
        await tx.deleteStream('acct-1', { hard: true });
      },
      async () => {
        assert.equal((await collect(s.readAll())).length, 2);
        assert.equal((await collect(s.readStream('acct-1'))).length, 2);
      },
      true,
    );
    assert.match(String(error), /rolled back on purpose/);
    assert.equal((await collect(s.readStream('acct-1'))).length, 2);
    assert.equal((await collect(s.readAll())).length, 2);
  });

  it('data that PostgreSQL cannot store as jsonb (a lone surrogate) is a ValidationError, as on every backend', async () => {
    const s = await store();
    await assert.rejects(s.append('acct-1', [ev('Opened', { text: 'half \ud83d of an emoji' })]), ValidationError);
    await assert.rejects(s.setStreamMetadata('acct-1', { custom: { ['\udc00']: 1 } }), ValidationError);
    await s.append('acct-1', [ev('Opened', { text: 'a whole 😀 emoji' })]);
    assert.deepEqual(
      (await collect(s.readStream('acct-1'))).map((e) => e.data),
      [{ text: 'a whole 😀 emoji' }],
    );
  });

  it('a refused append caught inside a transaction does not abort it', async () => {
    const s = await store();
    await s.append('acct-1', [ev()]);
    await s.transaction(async (tx) => {
      await assert.rejects(tx.append('acct-1', [ev()], { expectedVersion: 'no_stream' }), ConcurrencyError);
      await tx.append('acct-2', [ev()]);
    });
    assert.equal((await s.streamInfo('acct-2')).version, 1);
  });
});
