import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { StandardSchemaV1 } from '@standard-schema/spec';
import {
  ConcurrencyError,
  EventIdConflictError,
  InvalidStreamIdError,
  isPosition,
  MAX_CLAIM_VALUE_LENGTH,
  MAX_JSON_DEPTH,
  RELEASES_CLAIMS,
  UniquenessConfigurationError,
  UniquenessError,
  defineUniqueness,
  PayloadTooLargeError,
  StreamDeletedError,
  UnknownEventTypeError,
  ValidationError,
  type EventInput,
  type EventStore,
  type EventStoreOptions,
  type ExpectedVersion,
  type RecordedEvent,
} from '../index.js';
import { decodeEvent, encodeEvent } from '../backend.js';
import { defineEvent, eventRegistry } from '../schema.js';
import { newId } from '../ids.js';
import { collect } from './helpers.js';
import { START } from '../position.js';

/** How the suite gets stores from a backend. */
export interface EventStoreFactory {
  /** Shown in test names. */
  readonly name: string;
  /** A new, empty store (its own schema or database), configured with `options`. The suite closes it. */
  create(options?: EventStoreOptions): Promise<EventStore>;
  /** Called once after the suite (drop what `create` made). */
  teardown?(): Promise<void>;
}

/**
 * The behaviours every event store must have, as node:test suites. Call it at the top level of a test file:
 * `describeEventStoreConformance({ name: 'my backend', create: async (options) => createMyStore(options) })`.
 */
export function describeEventStoreConformance(factory: EventStoreFactory): void {
  describe(`event store conformance: ${factory.name}`, () => {
    const open: EventStore[] = [];
    const store = async (options?: EventStoreOptions) => {
      const created = await factory.create(options);
      open.push(created);
      return created;
    };
    after(async () => {
      await Promise.all(open.map((s) => s.close()));
      await factory.teardown?.();
    });

    describe('append and expected versions', () => {
      const modes: ExpectedVersion[] = ['any', 'no_stream', 'stream_exists', 0, 1, 2];
      // Which modes succeed against each kind of stream: missing, existing at version 2, soft-deleted at version 2.
      const allowed: Record<string, ExpectedVersion[]> = {
        missing: ['any', 'no_stream', 0],
        existing: ['any', 'stream_exists', 2],
        softDeleted: ['any', 'no_stream', 2],
      };
      for (const [kind, okModes] of Object.entries(allowed)) {
        for (const mode of modes) {
          const ok = okModes.includes(mode);
          it(`${String(mode)} against a ${kind} stream ${ok ? 'appends' : 'is a ConcurrencyError'}`, async () => {
            const s = await store();
            const id = `acct-${kind}`;
            if (kind !== 'missing') await s.append(id, [ev('Opened'), ev('Deposited')]);
            if (kind === 'softDeleted') await s.deleteStream(id);
            if (ok) {
              const result = await s.append(id, [ev('Deposited', { amount: 5 })], { expectedVersion: mode });
              const expectedVersion = kind === 'missing' ? 1 : 3;
              assert.equal(result.version, expectedVersion);
              assert.equal(result.firstVersion, expectedVersion);
              assert.equal(result.duplicate, false);
              const info = await s.streamInfo(id);
              assert.deepEqual(info, { streamId: id, exists: true, version: expectedVersion, deleted: null });
            } else {
              const error = await rejection(s.append(id, [ev('Deposited')], { expectedVersion: mode }));
              assert.ok(error instanceof ConcurrencyError, `expected ConcurrencyError, got ${String(error)}`);
              assert.equal(error.code, 'CONCURRENCY');
              assert.equal(error.streamId, id);
              assert.equal(error.expected, mode);
              assert.equal(error.actual, kind === 'existing' ? 2 : 'no_stream');
              assert.match(error.message, new RegExp(id));
              const info = await s.streamInfo(id);
              assert.equal(info.version, kind === 'missing' ? 0 : 2, 'nothing was appended');
            }
          });
        }
        it(`every mode against a tombstoned stream is a StreamDeletedError (${kind === 'missing' ? 'never written' : 'written'})`, async () => {
          const s = await store();
          const id = `acct-tomb${kind}`;
          if (kind !== 'missing') await s.append(id, [ev('Opened')]);
          await s.deleteStream(id, { hard: true });
          for (const mode of modes) {
            const error = await rejection(s.append(id, [ev('Opened')], { expectedVersion: mode }));
            assert.ok(error instanceof StreamDeletedError, `mode ${String(mode)}: got ${String(error)}`);
            assert.equal(error.code, 'STREAM_DELETED');
            assert.equal(error.streamId, id);
          }
        });
      }

      it('appends a batch atomically with contiguous versions and increasing positions', async () => {
        const s = await store();
        const first = await s.append('acct-1', [
          ev('Opened'),
          ev('Deposited', { amount: 1 }),
          ev('Deposited', { amount: 2 }),
        ]);
        assert.deepEqual([first.firstVersion, first.version], [1, 3]);
        const second = await s.append('acct-1', [ev('Withdrawn', { amount: 1 })], { expectedVersion: 3 });
        assert.deepEqual([second.firstVersion, second.version], [4, 4]);
        assert.ok(second.position > first.position);
        const events = await collect(s.readStream('acct-1'));
        assert.deepEqual(
          events.map((e) => e.version),
          [1, 2, 3, 4],
        );
        assert.deepEqual(
          events.map((e) => e.type),
          ['Opened', 'Deposited', 'Deposited', 'Withdrawn'],
        );
        assert.equal(events[2]!.position < events[3]!.position, true);
        assert.equal(events[3]!.position, second.position);
        for (const event of events) {
          assert.equal(event.streamId, 'acct-1');
          assert.ok(event.recordedAt instanceof Date && !Number.isNaN(event.recordedAt.getTime()));
          assert.match(
            event.id,
            /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/,
            'generated ids are UUIDv7',
          );
          assert.equal(event.metadata.schemaVersion, 1);
        }
      });

      it('keeps the event ids it is given', async () => {
        const s = await store();
        const id = newId();
        await s.append('acct-1', [{ id, type: 'Opened', data: null }]);
        const [event] = await collect(s.readStream('acct-1'));
        assert.equal(event!.id, id);
      });

      it('a real race: 16 concurrent appenders with the same expected version, exactly one wins', async () => {
        const s = await store();
        await s.append('acct-race', [ev('Opened')]);
        const results = await Promise.allSettled(
          Array.from({ length: 16 }, (_, i) =>
            s.append('acct-race', [ev('Deposited', { i }), ev('Deposited', { i })], { expectedVersion: 1 }),
          ),
        );
        const won = results.filter((r) => r.status === 'fulfilled');
        const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        assert.equal(won.length, 1, 'exactly one appender wins');
        assert.equal(lost.length, 15);
        for (const failure of lost) {
          assert.ok(failure.reason instanceof ConcurrencyError, String(failure.reason));
          assert.equal(failure.reason.actual, 3);
        }
        const events = await collect(s.readStream('acct-race'));
        assert.deepEqual(
          events.map((e) => e.version),
          [1, 2, 3],
        );
        assert.equal((await s.streamInfo('acct-race')).version, 3);
      });

      it('16 concurrent appenders creating the same stream with no_stream: exactly one wins', async () => {
        const s = await store();
        const results = await Promise.allSettled(
          Array.from({ length: 16 }, (_, i) =>
            s.append('acct-new', [ev('Opened', { i })], { expectedVersion: 'no_stream' }),
          ),
        );
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
        for (const r of results) if (r.status === 'rejected') assert.ok(r.reason instanceof ConcurrencyError);
        assert.equal((await collect(s.readStream('acct-new'))).length, 1);
      });

      it("concurrent appenders with 'any' all succeed with contiguous versions", async () => {
        const s = await store();
        await Promise.all(Array.from({ length: 16 }, (_, i) => s.append('acct-any', [ev('Deposited', { i })])));
        const events = await collect(s.readStream('acct-any'));
        assert.deepEqual(
          events.map((e) => e.version),
          Array.from({ length: 16 }, (_, i) => i + 1),
        );
      });
    });

    describe('idempotent retry', () => {
      it('the same batch at the same place returns the original result and stores nothing twice', async () => {
        const s = await store();
        await s.append('acct-1', [ev('Opened')]);
        const batch = [ev('Deposited', { amount: 1 }), ev('Deposited', { amount: 2 })];
        const first = await s.append('acct-1', batch, { expectedVersion: 1 });
        await s.append('acct-1', [ev('Withdrawn')]);
        // A retry after a lost reply: same ids, same expected version, even though the stream moved on.
        const retry = await s.append('acct-1', batch, { expectedVersion: 1 });
        assert.deepEqual({ ...retry, duplicate: false }, first);
        assert.equal(retry.duplicate, true);
        assert.equal((await collect(s.readStream('acct-1'))).length, 4);
        assert.equal((await collect(s.readAll())).length, 4);
      });

      it('concurrent retries of one batch store it once', async () => {
        const s = await store();
        const batch = [ev('Opened'), ev('Deposited')];
        const results = await Promise.all(
          Array.from({ length: 8 }, () => s.append('acct-1', batch, { expectedVersion: 'no_stream' })),
        );
        assert.equal(results.filter((r) => !r.duplicate).length, 1);
        assert.ok(results.every((r) => r.version === 2 && r.position === results[0]!.position));
        assert.equal((await collect(s.readAll())).length, 2);
      });

      it('the same ids in another stream are an EventIdConflictError', async () => {
        const s = await store();
        const batch = [ev('Opened')];
        await s.append('acct-1', batch);
        const error = await rejection(s.append('acct-2', batch));
        assert.ok(error instanceof EventIdConflictError, String(error));
        assert.equal(error.code, 'EVENT_ID_CONFLICT');
        assert.deepEqual(error.eventIds, [batch[0]!.id]);
        assert.equal((await s.streamInfo('acct-2')).exists, false);
      });

      it('a batch that only partly matches a stored one is an EventIdConflictError, with nothing stored', async () => {
        const s = await store();
        const a = ev('Opened');
        const b = ev('Deposited');
        await s.append('acct-1', [a, b]);
        for (const batch of [
          [a, ev('Deposited')],
          [b, a],
          [ev('Deposited'), b],
        ]) {
          const error = await rejection(s.append('acct-1', batch));
          assert.ok(error instanceof EventIdConflictError, String(error));
        }
        assert.equal((await s.streamInfo('acct-1')).version, 2);
        // A run of the stored batch, in order and in place, is a retry of those events.
        const tail = await s.append('acct-1', [b]);
        assert.deepEqual([tail.duplicate, tail.version], [true, 2]);
      });

      it('ids are compared case-insensitively', async () => {
        const s = await store();
        const event = ev('Opened');
        await s.append('acct-1', [event]);
        const retry = await s.append('acct-1', [{ ...event, id: event.id!.toUpperCase() }]);
        assert.equal(retry.duplicate, true);
      });
    });

    describe('data and metadata round trip', () => {
      it('nested JSON, unicode, numbers, booleans, null data and custom metadata come back equal', async () => {
        const s = await store();
        const data = {
          text: 'olá, 世界 🎉 "quoted" \\ back\nslash',
          numbers: [0, -1, 1.5, 1e-7, 123456789012, Number.MAX_SAFE_INTEGER],
          nested: { deep: { deeper: [{ a: null }, [], {}] } },
          flags: [true, false],
          emptyString: '',
        };
        const metadata = {
          correlationId: newId(),
          causationId: newId(),
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
          tenant: 'acme',
          actor: 'ada',
          custom: { n: 1, list: ['x'] },
        };
        await s.append('acct-1', [
          ev('Opened', data, metadata),
          { type: 'Noted', data: null },
          { type: 'Counted', data: 42 },
          { type: 'Named', data: 'plain string' },
        ]);
        const events = await collect(s.readStream('acct-1'));
        assert.deepEqual(events[0]!.data, data);
        assert.deepEqual(events[0]!.metadata, { ...metadata, schemaVersion: 1 });
        assert.equal(events[1]!.data, null);
        assert.equal(events[2]!.data, 42);
        assert.equal(events[3]!.data, 'plain string');
        const fromAll = await collect(s.readAll());
        assert.deepEqual(
          fromAll.map((e) => e.data),
          events.map((e) => e.data),
        );
        assert.deepEqual(
          fromAll.map((e) => e.metadata),
          events.map((e) => e.metadata),
        );
      });

      it('prototype keys (__proto__, constructor, prototype) are data like any other key, and pollute nothing', async () => {
        const s = await store();
        const data = JSON.parse(
          '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}},"prototype":1,"toString":"x"}',
        ) as Record<string, unknown>;
        const metadata = JSON.parse('{"__proto__":{"polluted":true},"hasOwnProperty":"y"}') as Record<string, unknown>;
        await s.append('acct-1', [{ type: 'Opened', data, metadata: metadata as never }]);
        for (const event of [...(await collect(s.readStream('acct-1'))), ...(await collect(s.readAll()))]) {
          const read = event.data as Record<string, unknown>;
          assert.ok(Object.hasOwn(read, '__proto__'), 'an own key, not the prototype');
          assert.deepEqual(Object.keys(read).sort(), ['__proto__', 'constructor', 'prototype', 'toString']);
          assert.equal(Object.getPrototypeOf(read), Object.prototype);
          assert.ok(Object.hasOwn(event.metadata, '__proto__'));
          assert.equal(event.metadata.hasOwnProperty, 'y');
        }
        assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is untouched');
      });

      it('numbers at the edges of what JSON holds come back equal', async () => {
        const s = await store();
        const numbers = [
          Number.MAX_VALUE,
          Number.MIN_VALUE,
          -Number.MAX_VALUE,
          Number.MAX_SAFE_INTEGER,
          -Number.MAX_SAFE_INTEGER,
          2 ** 53 + 2,
          1e21,
          1e-7,
          0.1 + 0.2,
          123456.789e-300,
        ];
        await s.append('acct-1', [{ type: 'Measured', data: { numbers } }]);
        const [event] = await collect(s.readStream('acct-1'));
        assert.deepEqual((event!.data as { numbers: number[] }).numbers, numbers);
      });

      it('object properties that are undefined are dropped, as in JSON', async () => {
        const s = await store();
        await s.append('acct-1', [ev('Opened', { a: 1, b: undefined })]);
        const [event] = await collect(s.readStream('acct-1'));
        assert.deepEqual(event!.data, { a: 1 });
      });

      it('returned events are copies: mutating one does not change the store', async () => {
        const s = await store();
        await s.append('acct-1', [ev('Opened', { list: [1] })]);
        const [first] = await collect(s.readStream('acct-1'));
        (first!.data as { list: number[] }).list.push(2);
        const [again] = await collect(s.readStream('acct-1'));
        assert.deepEqual(again!.data, { list: [1] });
      });
    });

    describe('reading streams', () => {
      it('reads forwards and backwards from a version, with limits, across page boundaries', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 23);
        const all = await collect(s.readStream('acct-1', { pageSize: 5 }));
        assert.deepEqual(
          all.map((e) => e.version),
          range(1, 23),
        );
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { from: 20, pageSize: 2 }))).map((e) => e.version),
          [20, 21, 22, 23],
        );
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { from: 5, limit: 3 }))).map((e) => e.version),
          [5, 6, 7],
        );
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { direction: 'backwards', pageSize: 4 }))).map((e) => e.version),
          range(1, 23).reverse(),
        );
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { direction: 'backwards', from: 3 }))).map((e) => e.version),
          [3, 2, 1],
        );
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { direction: 'backwards', limit: 2 }))).map((e) => e.version),
          [23, 22],
        );
        assert.deepEqual((await collect(s.readStream('acct-1', { from: 24 }))).length, 0);
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { direction: 'backwards', from: 100, limit: 1 }))).map(
            (e) => e.version,
          ),
          [23],
        );
        assert.deepEqual((await collect(s.readStream('acct-1', { pageSize: 23 }))).length, 23);
        assert.deepEqual((await collect(s.readStream('acct-1', { pageSize: 1, limit: 23 }))).length, 23);
      });

      it('only reads the stream asked for', async () => {
        const s = await store();
        await s.append('acct-1', [ev('Opened')]);
        await s.append('acct-10', [ev('Opened'), ev('Opened')]);
        await s.append('acct-1x', [ev('Opened')]);
        assert.equal((await collect(s.readStream('acct-1'))).length, 1);
        assert.equal((await collect(s.readStream('acct-10'))).length, 2);
      });

      it('a missing stream reads as empty and has version 0', async () => {
        const s = await store();
        assert.deepEqual(await collect(s.readStream('acct-none')), []);
        assert.deepEqual(await s.streamInfo('acct-none'), {
          streamId: 'acct-none',
          exists: false,
          version: 0,
          deleted: null,
        });
      });

      it('a stream read pages from storage: a reader can stop early', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 50);
        const seen: number[] = [];
        for await (const event of s.readStream('acct-1', { pageSize: 10 })) {
          seen.push(event.version);
          if (seen.length === 12) break;
        }
        assert.deepEqual(seen, range(1, 12));
      });
    });

    describe('reading all', () => {
      it('reads every stream in commit order, after a position, across pages', async () => {
        const s = await store();
        const appended: string[] = [];
        for (let i = 0; i < 12; i++) {
          const batch = [ev('Deposited', { i }), ev('Deposited', { i })];
          await s.append(`acct-${i % 3}`, batch);
          appended.push(...batch.map((e) => e.id!));
        }
        const all = await collect(s.readAll({ pageSize: 5 }));
        assert.deepEqual(
          all.map((e) => e.id),
          appended,
        );
        assertIncreasing(all);
        const after = all[9]!.position;
        assert.deepEqual(
          (await collect(s.readAll({ after, pageSize: 4 }))).map((e) => e.id),
          appended.slice(10),
        );
        assert.deepEqual(
          (await collect(s.readAll({ after: START, limit: 3 }))).map((e) => e.id),
          appended.slice(0, 3),
        );
        assert.deepEqual(await collect(s.readAll({ after: all[all.length - 1]!.position })), []);
      });

      it('filters by event type and by category', async () => {
        const s = await store();
        await s.append('acct-1', [ev('Opened'), ev('Deposited')]);
        await s.append('payment-1', [ev('PaymentCreated'), ev('PaymentConfirmed')]);
        await s.append('acct-2', [ev('Opened'), ev('Withdrawn')]);
        await s.append('accounting-1', [ev('Opened')]);
        const types = (events: RecordedEvent[]) => events.map((e) => `${e.streamId}:${e.type}`);
        assert.deepEqual(types(await collect(s.readAll({ filter: { types: ['Opened'] } }))), [
          'acct-1:Opened',
          'acct-2:Opened',
          'accounting-1:Opened',
        ]);
        assert.deepEqual(types(await collect(s.readAll({ filter: { categories: ['acct'] } }))), [
          'acct-1:Opened',
          'acct-1:Deposited',
          'acct-2:Opened',
          'acct-2:Withdrawn',
        ]);
        assert.deepEqual(
          types(
            await collect(
              s.readAll({
                filter: { categories: ['acct', 'payment'], types: ['Opened', 'PaymentConfirmed'] },
                pageSize: 1,
              }),
            ),
          ),
          ['acct-1:Opened', 'payment-1:PaymentConfirmed', 'acct-2:Opened'],
        );
        assert.deepEqual(await collect(s.readAll({ filter: { types: [] } })), []);
      });

      it('readAllPage: next resumes after the last event, and moves past what a filter skipped', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 5);
        const first = await s.readAllPage({ limit: 3 });
        assert.equal(first.events.length, 3);
        assert.equal(first.atEnd, false);
        assert.equal(first.next, first.events[2]!.position);
        const second = await s.readAllPage({ after: first.next, limit: 3 });
        assert.equal(second.events.length, 2);
        assert.equal(second.atEnd, true);
        assert.ok(second.next >= second.events[1]!.position);
        const filtered = await s.readAllPage({ filter: { types: ['Nothing'] } });
        assert.deepEqual(filtered.events, []);
        assert.equal(filtered.atEnd, true);
        assert.ok(filtered.next >= second.events[1]!.position, 'a filtered reader moves past the events it skipped');
        await s.append('acct-2', [ev('Nothing')]);
        const later = await s.readAllPage({ after: filtered.next, filter: { types: ['Nothing'] } });
        assert.deepEqual(
          later.events.map((e) => e.type),
          ['Nothing'],
        );
        const empty = await s.readAllPage({ after: later.next });
        assert.deepEqual(empty.events, []);
        assert.ok(empty.next >= later.next, 'next never goes backwards');
      });

      it('headPosition: reading after it yields only events appended later', async () => {
        const s = await store();
        assert.equal(typeof (await s.headPosition()), 'string');
        await appendMany(s, 'acct-1', 3);
        const head = await s.headPosition();
        assert.deepEqual(await collect(s.readAll({ after: head })), []);
        const appended = await s.append('acct-1', [ev('Deposited')]);
        const after = await collect(s.readAll({ after: head }));
        assert.deepEqual(
          after.map((e) => e.position),
          [appended.position],
        );
      });

      it('readAllHoldback reports nothing held back when no transaction is open', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 3);
        const holdback = await s.readAllHoldback();
        assert.equal(holdback.heldBackEvents, 0);
      });

      it('readAll reads from storage page by page: a reader can stop early', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 30);
        let count = 0;
        for await (const _ of s.readAll({ pageSize: 7 })) if (++count === 10) break;
        assert.equal(count, 10);
      });
    });

    describe('stream metadata, truncation and deletion', () => {
      it('metadata round trips and replaces, also before the stream exists', async () => {
        const s = await store();
        assert.deepEqual(await s.getStreamMetadata('acct-1'), {});
        await s.setStreamMetadata('acct-1', { maxCount: 10, custom: { owner: 'Ada', tags: ['x', 'ü'] } });
        assert.deepEqual(await s.getStreamMetadata('acct-1'), {
          maxCount: 10,
          custom: { owner: 'Ada', tags: ['x', 'ü'] },
        });
        assert.equal((await s.streamInfo('acct-1')).exists, false, 'metadata alone does not create the stream');
        await s.append('acct-1', [ev('Opened')], { expectedVersion: 'no_stream' });
        await s.setStreamMetadata('acct-1', { truncateBefore: 1 });
        assert.deepEqual(await s.getStreamMetadata('acct-1'), { truncateBefore: 1 });
      });

      it('setStreamMetadata checks the expected version', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 2);
        await assert.rejects(s.setStreamMetadata('acct-1', { maxCount: 1 }, { expectedVersion: 1 }), ConcurrencyError);
        await s.setStreamMetadata('acct-1', { maxCount: 1 }, { expectedVersion: 2 });
        assert.deepEqual(await s.getStreamMetadata('acct-1'), { maxCount: 1 });
      });

      it('rejects invalid metadata', async () => {
        const s = await store();
        for (const bad of [
          { maxCount: 0 },
          { maxAge: -1 },
          { truncateBefore: 1.5 },
          { colour: 'red' },
          { custom: [] },
          { custom: { d: new Date() } },
        ]) {
          await assert.rejects(s.setStreamMetadata('acct-1', bad as never), ValidationError, JSON.stringify(bad));
        }
      });

      it('truncateBefore hides earlier events from stream reads, not from the global log', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 5);
        await s.setStreamMetadata('acct-1', { truncateBefore: 4 });
        assert.deepEqual(
          (await collect(s.readStream('acct-1'))).map((e) => e.version),
          [4, 5],
        );
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { direction: 'backwards' }))).map((e) => e.version),
          [5, 4],
        );
        assert.deepEqual(
          (await collect(s.readStream('acct-1', { from: 2, limit: 1 }))).map((e) => e.version),
          [4],
        );
        assert.equal((await collect(s.readAll())).length, 5);
        assert.equal((await s.streamInfo('acct-1')).version, 5);
      });

      it('maxCount keeps the last N events visible as the stream grows', async () => {
        const s = await store();
        await s.setStreamMetadata('acct-1', { maxCount: 3 });
        await appendMany(s, 'acct-1', 5);
        assert.deepEqual(
          (await collect(s.readStream('acct-1'))).map((e) => e.version),
          [3, 4, 5],
        );
        await appendMany(s, 'acct-1', 1);
        assert.deepEqual(
          (await collect(s.readStream('acct-1'))).map((e) => e.version),
          [4, 5, 6],
        );
      });

      it('maxAge hides events older than the limit', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 2);
        await sleep(1300);
        await appendMany(s, 'acct-1', 1);
        await s.setStreamMetadata('acct-1', { maxAge: 1 });
        assert.deepEqual(
          (await collect(s.readStream('acct-1'))).map((e) => e.version),
          [3],
        );
        await s.setStreamMetadata('acct-1', {});
        assert.deepEqual(
          (await collect(s.readStream('acct-1'))).map((e) => e.version),
          [1, 2, 3],
        );
      });

      it('soft delete hides the events; appending again continues the numbering', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 3);
        await s.deleteStream('acct-1', { expectedVersion: 3 });
        assert.deepEqual(await s.streamInfo('acct-1'), {
          streamId: 'acct-1',
          exists: false,
          version: 3,
          deleted: 'soft',
        });
        assert.deepEqual(await collect(s.readStream('acct-1')), []);
        await s.deleteStream('acct-1');
        const result = await s.append('acct-1', [ev('Reopened')], { expectedVersion: 'no_stream' });
        assert.equal(result.version, 4);
        assert.deepEqual(
          (await collect(s.readStream('acct-1'))).map((e) => [e.version, e.type]),
          [[4, 'Reopened']],
        );
        assert.deepEqual(await s.streamInfo('acct-1'), { streamId: 'acct-1', exists: true, version: 4, deleted: null });
        assert.equal((await collect(s.readAll())).length, 4, 'soft-deleted events stay in the global log');
      });

      it('soft-deleting a missing stream does nothing', async () => {
        const s = await store();
        await s.deleteStream('acct-none');
        assert.deepEqual(await s.streamInfo('acct-none'), {
          streamId: 'acct-none',
          exists: false,
          version: 0,
          deleted: null,
        });
      });

      it('delete checks the expected version', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 2);
        await assert.rejects(s.deleteStream('acct-1', { expectedVersion: 1 }), ConcurrencyError);
        await assert.rejects(s.deleteStream('acct-1', { expectedVersion: 'no_stream', hard: true }), ConcurrencyError);
        assert.equal((await s.streamInfo('acct-1')).exists, true);
      });

      it('hard delete removes the events everywhere and leaves a tombstone forever', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 3);
        await appendMany(s, 'acct-2', 2);
        await s.deleteStream('acct-1', { hard: true, expectedVersion: 'stream_exists' });
        assert.deepEqual(await s.streamInfo('acct-1'), {
          streamId: 'acct-1',
          exists: false,
          version: 3,
          deleted: 'hard',
        });
        await assert.rejects(collect(s.readStream('acct-1')), StreamDeletedError);
        await assert.rejects(s.deleteStream('acct-1'), StreamDeletedError);
        await assert.rejects(s.deleteStream('acct-1', { hard: true }), StreamDeletedError);
        await assert.rejects(s.setStreamMetadata('acct-1', { maxCount: 1 }), StreamDeletedError);
        assert.deepEqual(
          (await collect(s.readAll())).map((e) => e.streamId),
          ['acct-2', 'acct-2'],
        );
      });

      it('hard-deleting a missing stream reserves its id', async () => {
        const s = await store();
        await s.deleteStream('acct-never', { hard: true });
        await assert.rejects(s.append('acct-never', [ev('Opened')]), StreamDeletedError);
      });
    });

    describe('transactions', () => {
      it('several appends commit together', async () => {
        const s = await store();
        const result = await s.transaction(async (tx) => {
          await tx.append('acct-1', [ev('Withdrawn')], { expectedVersion: 'no_stream' });
          await tx.append('acct-2', [ev('Deposited')], { expectedVersion: 'no_stream' });
          const inside = await collect(tx.readStream('acct-1'));
          assert.equal(inside.length, 1, 'a transaction reads its own writes');
          assert.equal((await tx.streamInfo('acct-2')).version, 1);
          return 'done';
        });
        assert.equal(result, 'done');
        assert.equal((await collect(s.readAll())).length, 2);
      });

      it('a failure rolls every append back and rethrows', async () => {
        const s = await store();
        await s.append('acct-2', [ev('Opened')]);
        const error = await rejection(
          s.transaction(async (tx) => {
            await tx.append('acct-1', [ev('Withdrawn')]);
            await tx.append('acct-2', [ev('Deposited')], { expectedVersion: 'no_stream' });
          }),
        );
        assert.ok(error instanceof ConcurrencyError, String(error));
        assert.equal((await s.streamInfo('acct-1')).exists, false);
        assert.equal((await collect(s.readAll())).length, 1);
      });

      it('an error thrown by the caller rolls back, including deletes and metadata', async () => {
        const s = await store();
        await appendMany(s, 'acct-1', 2);
        await assert.rejects(
          s.transaction(async (tx) => {
            await tx.deleteStream('acct-1', { hard: true });
            await tx.setStreamMetadata('acct-2', { maxCount: 5 });
            throw new Error('changed my mind');
          }),
          /changed my mind/,
        );
        assert.equal((await s.streamInfo('acct-1')).version, 2);
        assert.equal((await collect(s.readStream('acct-1'))).length, 2);
        assert.deepEqual(await s.getStreamMetadata('acct-2'), {});
      });

      it('uncommitted events are invisible to other readers until commit', async () => {
        const s = await store();
        let release!: () => void;
        const gate = new Promise<void>((resolve) => (release = resolve));
        let appended!: () => void;
        const appendedInside = new Promise<void>((resolve) => (appended = resolve));
        const running = s.transaction(async (tx) => {
          await tx.append('acct-1', [ev('Opened')]);
          appended();
          await gate;
        });
        await appendedInside;
        assert.deepEqual(await collect(s.readAll()), []);
        assert.deepEqual(await collect(s.readStream('acct-1')), []);
        release();
        await running;
        assert.equal((await collect(s.readAll())).length, 1);
      });
    });

    describe('bad input is a typed error and stores nothing', () => {
      it('an empty batch', async () => {
        const s = await store();
        await expectNothingStored(s, s.append('acct-1', []), ValidationError, /empty/);
      });

      it('invalid stream ids', async () => {
        const s = await store();
        for (const bad of [
          '',
          'account',
          '-42',
          'acct-',
          'acc t-1',
          'acct-1 2',
          '1acct-2',
          'ac.ct-1',
          `acct-${'x'.repeat(300)}`,
          'acct-a\nb',
          42,
          null,
        ]) {
          const error = await rejection(s.append(bad as string, [ev('Opened')]));
          assert.ok(error instanceof InvalidStreamIdError, `${JSON.stringify(bad)}: ${String(error)}`);
          assert.equal(error.code, 'INVALID_STREAM_ID');
          assert.ok(error instanceof ValidationError);
        }
        await assert.rejects(collect(s.readStream('nope')), InvalidStreamIdError);
        await assert.rejects(s.streamInfo('nope'), InvalidStreamIdError);
        assert.deepEqual(await collect(s.readAll()), []);
        // Ids may contain '-', unicode and punctuation after the category.
        for (const good of [
          'acct-0193b7e2-aa7c-7c1e-9d3e-0e5a0c6d1f00',
          'user_profile-ädå',
          'x-1:2/3',
          'acct-\u{1F600}',
          'acct-\ufffd',
        ])
          await s.append(good, [ev('Opened')]);
      });

      it('stream ids that are not well-formed Unicode, or hold NUL, on every operation; none aliases another stream', async () => {
        const s = await store();
        // The SQL drivers send a lone surrogate as U+FFFD: accepted, these three would be one stream there.
        const bad = ['acct-s\ud800', 'acct-s\udbff', 'acct-\udc00x', 'acct-x\ud83d', 'acct-a\u0000b', 'acct-\u0000'];
        for (const id of bad) {
          const error = await rejection(s.append(id, [ev('Opened')]));
          assert.ok(error instanceof InvalidStreamIdError, `${escape(id)}: ${String(error)}`);
          await assert.rejects(collect(s.readStream(id)), InvalidStreamIdError);
          await assert.rejects(s.streamInfo(id), InvalidStreamIdError);
          await assert.rejects(s.getStreamMetadata(id), InvalidStreamIdError);
          await assert.rejects(s.setStreamMetadata(id, { maxCount: 1 }), InvalidStreamIdError);
          await assert.rejects(s.deleteStream(id), InvalidStreamIdError);
          await assert.rejects(s.lockStreams(['acct-1', id]), InvalidStreamIdError);
          await assert.rejects(
            s.transaction((t) => t.append(id, [ev('Opened')])),
            InvalidStreamIdError,
          );
        }
        await s.append('acct-s\ufffd', [ev('Opened')]);
        assert.deepEqual(await s.streamInfo('acct-s\ufffd'), {
          streamId: 'acct-s\ufffd',
          exists: true,
          version: 1,
          deleted: null,
        });
        assert.equal((await collect(s.readAll())).length, 1, 'only the well-formed stream was written');
      });

      it('event types and metadata keys or values that are not well-formed Unicode, or hold NUL', async () => {
        const s = await store();
        for (const type of ['Open\ud800', 'Open\u0000ed', 'Öpened']) {
          await expectNothingStored(s, s.append('acct-1', [{ type, data: null }]), ValidationError, /event type/);
        }
        const metadata = [
          { ['k\ud800']: 1 },
          { ['k\u0000']: 1 },
          { v: 'x\udfff' },
          { v: 'x\u0000' },
          { correlationId: '\ud800' },
        ];
        for (const m of metadata)
          await expectNothingStored(
            s,
            s.append('acct-1', [{ type: 'Opened', data: null, metadata: m as never }]),
            ValidationError,
          );
        const data = [{ ['k\udbff']: 1 }, { ['\u0000']: true }, ['\ud800x'], { nested: { deeper: ['ok', 'x\udc00'] } }];
        for (const d of data)
          await expectNothingStored(s, s.append('acct-1', [{ type: 'Opened', data: d }]), ValidationError);
      });

      it('bigints, symbols and functions anywhere in the options are a ValidationError, not a TypeError', async () => {
        const s = await store();
        const odd: unknown[] = [10n, Symbol('x'), () => 1];
        for (const value of odd) {
          await expectNothingStored(
            s,
            s.append('acct-1', [ev('Opened')], { expectedVersion: value as never }),
            ValidationError,
            /expectedVersion/,
          );
          await expectNothingStored(s, s.append(value as string, [ev('Opened')]), InvalidStreamIdError);
          await expectNothingStored(
            s,
            s.append('acct-1', [{ type: value as string, data: null }]),
            ValidationError,
            /event type/,
          );
          await expectNothingStored(
            s,
            s.append('acct-1', [{ id: value as string, type: 'Opened', data: null }]),
            ValidationError,
            /UUID/,
          );
          await expectNothingStored(
            s,
            s.append('acct-1', [{ type: 'Opened', data: null, metadata: { schemaVersion: value } as never }]),
            ValidationError,
          );
          await expectNothingStored(s, s.append('acct-1', [{ type: 'Opened', data: { value } }]), ValidationError);
          await assert.rejects(collect(s.readStream('acct-1', { limit: value as number })), ValidationError);
          await assert.rejects(collect(s.readStream('acct-1', { from: value as number })), ValidationError);
          await assert.rejects(collect(s.readStream('acct-1', { pageSize: value as number })), ValidationError);
          await assert.rejects(collect(s.readAll({ limit: value as number })), ValidationError);
          await assert.rejects(collect(s.readAll({ after: value as string })), ValidationError);
          await assert.rejects(s.readAllPage({ limit: value as number }), ValidationError);
          await assert.rejects(s.setStreamMetadata('acct-1', { maxCount: value as number }), ValidationError);
          await assert.rejects(s.deleteStream('acct-1', { expectedVersion: value as never }), ValidationError);
        }
      });

      it(`data nested deeper than ${MAX_JSON_DEPTH} levels is a ValidationError, however deep; at the limit it round trips`, async () => {
        const s = await store();
        const nest = (levels: number, inner: unknown = 1): unknown => {
          let value = inner;
          for (let i = 0; i < levels; i++) value = i % 2 === 0 ? [value] : { k: value };
          return value;
        };
        for (const levels of [MAX_JSON_DEPTH + 1, 5000, 200_000]) {
          const error = await expectNothingStored(
            s,
            s.append('acct-1', [{ type: 'Opened', data: nest(levels) }]),
            ValidationError,
            /nested more than/,
          );
          assert.ok(error.message.length < 2000, 'the message stays short');
          await expectNothingStored(
            s,
            s.append('acct-1', [{ type: 'Opened', data: null, metadata: { deep: nest(levels) } as never }]),
            ValidationError,
            /nested more than/,
          );
        }
        await s.append('acct-1', [{ type: 'Opened', data: nest(MAX_JSON_DEPTH) }]);
        const [event] = await collect(s.readStream('acct-1'));
        assert.deepEqual(event!.data, nest(MAX_JSON_DEPTH));
      });

      it('event ids that are not UUIDs, and a batch that repeats an id', async () => {
        const s = await store();
        for (const id of ['42', 'not-a-uuid', '0193b7e2-aa7c-7c1e-9d3e-0e5a0c6d1f0', 42]) {
          await expectNothingStored(
            s,
            s.append('acct-1', [ev('Opened'), { id: id as string, type: 'Opened', data: null }]),
            ValidationError,
            /UUID/,
          );
        }
        const event = ev('Opened');
        await expectNothingStored(s, s.append('acct-1', [event, event]), ValidationError, /twice/);
      });

      it('invalid event types and event shapes', async () => {
        const s = await store();
        for (const batch of [
          [{ type: '', data: null }],
          [{ type: 'has space', data: null }],
          [{ data: 1 }],
          [null],
          ['Opened'],
          [{ type: 'Opened' }],
        ]) {
          await expectNothingStored(s, s.append('acct-1', batch as EventInput[]), ValidationError);
        }
      });

      it('data or metadata that is not JSON', async () => {
        const s = await store();
        const circular: Record<string, unknown> = {};
        circular.self = circular;
        const bad: unknown[] = [
          { n: NaN },
          { n: Infinity },
          { b: 10n },
          { f: () => 1 },
          { d: new Date() },
          { m: new Map() },
          circular,
          [undefined],
          { s: 'nul\u0000' },
          undefined,
        ];
        for (const data of bad) {
          await expectNothingStored(s, s.append('acct-1', [ev('Opened'), { type: 'Opened', data }]), ValidationError);
        }
        await expectNothingStored(
          s,
          s.append('acct-1', [{ type: 'Opened', data: null, metadata: { when: new Date() } as never }]),
          ValidationError,
        );
        await expectNothingStored(
          s,
          s.append('acct-1', [{ type: 'Opened', data: null, metadata: 'x' as never }]),
          ValidationError,
        );
      });

      it('a payload over the size limit (1 MiB by default, configurable)', async () => {
        const s = await store();
        const big = 'x'.repeat(1024 * 1024);
        const error = await expectNothingStored(
          s,
          s.append('acct-1', [ev('Opened'), ev('Uploaded', { big })]),
          PayloadTooLargeError,
        );
        assert.equal(error.code, 'PAYLOAD_TOO_LARGE');
        assert.equal(error.limit, 1024 * 1024);
        await s.append('acct-1', [ev('Uploaded', { almost: 'x'.repeat(1000 * 1000) })]);
        const small = await store({ maxEventBytes: 100 });
        await expectNothingStored(
          small,
          small.append('acct-1', [ev('Uploaded', { text: 'y'.repeat(100) })]),
          PayloadTooLargeError,
        );
        await small.append('acct-1', [ev('Uploaded', { text: 'y' })]);
      });

      it('invalid expected versions and read options', async () => {
        const s = await store();
        for (const expectedVersion of [-1, 1.5, 'latest', null]) {
          await expectNothingStored(
            s,
            s.append('acct-1', [ev('Opened')], { expectedVersion: expectedVersion as ExpectedVersion }),
            ValidationError,
          );
        }
        await assert.rejects(collect(s.readStream('acct-1', { from: -1 })), ValidationError);
        await assert.rejects(collect(s.readStream('acct-1', { direction: 'sideways' as 'forwards' })), ValidationError);
        await assert.rejects(collect(s.readAll({ after: '42' })), ValidationError);
        await assert.rejects(collect(s.readAll({ limit: 0 })), ValidationError);
      });

      it('schema validation failures and unknown types, with an event registry', async () => {
        const Opened = defineEvent('Opened', openedSchema, { schemaVersion: 2 });
        const s = await store({ events: eventRegistry([Opened]) });
        const error = await expectNothingStored(
          s,
          s.append('acct-1', [Opened.create({ owner: '' } as never)]),
          ValidationError,
        );
        assert.match(error.message, /owner/);
        assert.deepEqual(
          error.issues.map((issue) => issue.path),
          [['owner']],
        );
        const unknown = await expectNothingStored(s, s.append('acct-1', [ev('Closed')]), UnknownEventTypeError);
        assert.equal(unknown.code, 'UNKNOWN_EVENT_TYPE');
        assert.match(unknown.message, /Closed/);
        await s.append('acct-1', [Opened.create({ owner: 'Ada' })]);
        const [event] = await collect(s.readStream('acct-1'));
        assert.deepEqual(event!.data, { owner: 'Ada', limit: 0 }, 'the validated output is stored');
        assert.equal(event!.metadata.schemaVersion, 2);
        assert.ok(Opened.is(event!));
      });
    });

    describe('locking streams and the next position', () => {
      it('lockStreams in transactions that write the same streams in opposite orders: all commit, none deadlocks', async () => {
        const s = await store();
        await s.append('acct-a', [ev('Opened')]);
        await s.append('acct-b', [ev('Opened')]);
        const transfer = (from: string, to: string) =>
          s.transaction(async (t) => {
            await t.lockStreams([from, to]);
            await t.append(from, [ev('Withdrawn')]);
            await t.append(to, [ev('Deposited')]);
          });
        // Streams that do not exist yet are locked too (two transactions creating the same pair).
        const create = (first: string, second: string) =>
          s.transaction(async (t) => {
            await t.lockStreams([first, second, first]);
            await t.append(first, [ev('Opened')], { expectedVersion: 'any' });
            await t.append(second, [ev('Opened')], { expectedVersion: 'any' });
          });
        const runs = Array.from({ length: 20 }, (_, i) =>
          i % 2 === 0 ? transfer('acct-a', 'acct-b') : transfer('acct-b', 'acct-a'),
        );
        const creations = Array.from({ length: 8 }, (_, i) =>
          i % 2 === 0 ? create('acct-new1', 'acct-new2') : create('acct-new2', 'acct-new1'),
        );
        const results = await Promise.allSettled([...runs, ...creations]);
        assert.deepEqual(
          results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)),
          [],
        );
        assert.equal((await s.streamInfo('acct-a')).version, 21);
        assert.equal((await s.streamInfo('acct-b')).version, 21);
        assert.equal((await s.streamInfo('acct-new1')).version, 8);
      });

      it('lockStreams outside a transaction checks the ids and does nothing else', async () => {
        const s = await store();
        await s.lockStreams([]);
        await s.lockStreams(['acct-1', 'acct-2']);
        await assert.rejects(s.lockStreams('acct-1' as never), ValidationError);
        await assert.rejects(s.lockStreams(['nope']), InvalidStreamIdError);
        await assert.rejects(s.lockStreams(Array.from({ length: 1001 }, (_, i) => `acct-${i}`)), ValidationError);
        assert.deepEqual(await s.streamInfo('acct-1'), {
          streamId: 'acct-1',
          exists: false,
          version: 0,
          deleted: null,
        });
        assert.deepEqual(await collect(s.readAll()), []);
      });

      it('a transaction that only locks leaves no trace', async () => {
        const s = await store();
        await s.transaction((t) => t.lockStreams(['acct-ghost']));
        assert.deepEqual(await s.streamInfo('acct-ghost'), {
          streamId: 'acct-ghost',
          exists: false,
          version: 0,
          deleted: null,
        });
        await s.append('acct-ghost', [ev('Opened')], { expectedVersion: 'no_stream' });
      });

      it('nextPosition is after every position returned, and no later append gets a position before it', async () => {
        const s = await store();
        const empty = await s.nextPosition();
        assert.ok(isPosition(empty));
        const first = await s.append('acct-1', [ev('Opened')]);
        assert.ok(first.position >= empty);
        const next = await s.nextPosition();
        assert.ok(first.position < next, `${first.position} < ${next}`);
        const inTransaction = await s.transaction((t) => t.append('acct-2', [ev('Opened')]));
        assert.ok(inTransaction.position >= next);
        const later = await s.nextPosition();
        assert.ok(inTransaction.position < later);
        for (const event of await collect(s.readAll())) assert.ok(event.position < later);
      });
    });

    describe('schema versioning', () => {
      it('renames and upcasters (v1 → v3) apply on readStream, readAll, readAllPage and transaction reads', async () => {
        const AccountOpened = defineEvent('AccountOpened', passThrough, {
          schemaVersion: 3,
          renamedFrom: ['OpenedAccount'],
          upcasters: {
            1: (data: { name: string }) => ({ owner: data.name }),
            2: (data: { owner: string }) => ({ ...data, currency: 'EUR' }),
          },
        });
        const s = await store({ events: eventRegistry([AccountOpened], { strict: false }) });
        // Written by an older version of the application, under the old name and the first schema.
        await s.append('acct-1', [{ type: 'OpenedAccount', data: { name: 'Ada' }, metadata: { schemaVersion: 1 } }]);
        await s.append('acct-1', [AccountOpened.create({ owner: 'Bob', currency: 'USD' })]);
        const expected = [
          { type: 'AccountOpened', data: { owner: 'Ada', currency: 'EUR' }, schemaVersion: 3 },
          { type: 'AccountOpened', data: { owner: 'Bob', currency: 'USD' }, schemaVersion: 3 },
        ];
        const shape = (events: RecordedEvent[]) =>
          events.map((e) => ({ type: e.type, data: e.data, schemaVersion: e.metadata.schemaVersion }));
        assert.deepEqual(shape(await collect(s.readStream('acct-1'))), expected);
        assert.deepEqual(
          shape(await collect(s.readStream('acct-1', { direction: 'backwards' }))),
          [...expected].reverse(),
        );
        assert.deepEqual(shape(await collect(s.readAll())), expected);
        assert.deepEqual(shape((await s.readAllPage()).events), expected);
        assert.deepEqual(
          shape(await collect(s.readAll({ filter: { types: ['AccountOpened'] } }))),
          expected,
          'a type filter also finds events stored under earlier names',
        );
        await s.transaction(async (tx) => assert.deepEqual(shape(await collect(tx.readStream('acct-1'))), expected));
      });
    });

    describe('encoded pages (publishers)', () => {
      it("readAllPageEncoded gives readAllPage's events as the messages encodeEvent makes, with upcasting", async () => {
        const AccountOpened = defineEvent('AccountOpened', passThrough, {
          schemaVersion: 2,
          renamedFrom: ['OpenedAccount'],
          upcasters: { 1: (data: { name: string }) => ({ owner: data.name }) },
        });
        const s = await store({ events: eventRegistry([AccountOpened], { strict: false }) });
        const traced = {
          correlationId: newId(),
          causationId: newId(),
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        };
        await s.append('acct-1', [
          ev(
            'Deposited',
            { amount: 1.5, nested: { list: [1, 'two', null, { deep: true }] }, text: 'Zoë — 支付 ✓ "quoted" \\ back' },
            traced,
          ),
          ev('Noted', null),
          { type: 'OpenedAccount', data: { name: 'Ada' }, metadata: { schemaVersion: 1 } },
          AccountOpened.create({ owner: 'Bob' }),
        ]);
        await s.append('acct-we"ird\\id', [
          ev(
            'Deposited',
            { amount: -2, big: 12345678901234, tiny: 1e-7 },
            { correlationId: traced.correlationId, custom: { x: [] } },
          ),
        ]);
        assert.ok(s.readAllPageEncoded, 'eventline backends have readAllPageEncoded');
        for (const options of [
          {},
          { limit: 2 },
          { filter: { categories: ['acct'], types: ['Deposited', 'AccountOpened'] } },
        ]) {
          const page = await s.readAllPage(options);
          const encoded = await s.readAllPageEncoded(options);
          assert.equal(encoded.atEnd, page.atEnd);
          // A full page resumes after its last event; at the end, `next` is the boundary of what is committed, which
          // other transactions on the server may move on between the two reads.
          if (page.atEnd) assert.ok(encoded.next >= page.next, `${encoded.next} >= ${page.next}`);
          else assert.equal(encoded.next, page.next);
          assert.equal(encoded.events.length, page.events.length);
          page.events.forEach((event, i) => {
            const got = encoded.events[i]!;
            const expected = encodeEvent(event);
            assert.deepEqual(
              { id: got.id, streamId: got.streamId, position: got.position },
              { id: event.id, streamId: event.streamId, position: event.position },
            );
            assert.deepEqual(
              { ...got.message, body: undefined },
              { ...expected, body: undefined },
              'id, subject, stream and headers as encodeEvent makes them',
            );
            assert.deepEqual(decodeEvent(got.message), event, 'the body decodes to the event');
          });
        }
        const opened = (await s.readAllPageEncoded({ filter: { types: ['AccountOpened'] } })).events.map((e) =>
          decodeEvent(e.message),
        );
        assert.deepEqual(
          opened.map((e) => ({ type: e.type, data: e.data, schemaVersion: e.metadata.schemaVersion })),
          [
            { type: 'AccountOpened', data: { owner: 'Ada' }, schemaVersion: 2 },
            { type: 'AccountOpened', data: { owner: 'Bob' }, schemaVersion: 2 },
          ],
          'renamed and older events come out upcast',
        );
      });
    });

    describe('uniqueness claims', () => {
      const taxId = (data: { taxId?: unknown }) => data.taxId as string | undefined;
      const cpf = defineUniqueness({
        scope: 'cpf',
        claimedBy: { Opened: taxId, TaxIdChanged: taxId },
        releasedBy: ['Closed', 'TaxIdChanged'],
        normalise: (value) => value.replace(/[.-]/g, ''),
      });
      const email = defineUniqueness({
        scope: 'email',
        claimedBy: { Opened: (data: { email?: string }) => data.email },
      });
      const claiming = (options: EventStoreOptions = {}) =>
        store({ uniqueness: { rules: [cpf, email], key: 'a secret of sixteen bytes or more' }, ...options });
      const opened = (taxIdValue: unknown, extra: Record<string, unknown> = {}) =>
        ev('Opened', { taxId: taxIdValue, ...extra });

      it('an append claims its value for its stream; another stream is refused with the owner and nothing is stored', async () => {
        const s = await claiming();
        await s.append('acct-1', [opened('123.456.789-09')]);
        assert.equal(await s.claimOwner('cpf', '12345678909'), 'acct-1', 'looked up normalised');
        assert.equal(await s.claimOwner('cpf', '123.456.789-09'), 'acct-1');
        assert.equal(await s.claimOwner('cpf', '98765432100'), null);
        assert.equal(await s.claimOwner('email', '12345678909'), null, 'scopes are apart');
        const error = await expectNothingStored(
          s,
          s.append('acct-2', [ev('Noted'), opened('12345678909')]),
          UniquenessError,
        );
        assert.equal(error.code, 'UNIQUENESS_VIOLATION');
        assert.equal(error.scope, 'cpf');
        assert.equal(error.owner, 'acct-1');
        assert.equal(error.streamId, 'acct-2');
        assert.match(error.message, /acct-1/);
        assert.doesNotMatch(error.message, /12345678909/, 'the value is not in the message');
        assert.deepEqual(await s.streamInfo('acct-2'), {
          streamId: 'acct-2',
          exists: false,
          version: 0,
          deleted: null,
        });
        // The same stream claiming again is a no-op; other scopes and other values are free.
        await s.append('acct-1', [opened('12345678909', { email: 'ada@example.com' })]);
        await s.append('acct-2', [opened('98765432100')]);
        assert.equal(await s.claimOwner('email', 'ada@example.com'), 'acct-1');
        assert.equal(await s.claimOwner('cpf', '98765432100'), 'acct-2');
        // Events without a value (null/undefined) claim nothing; events of other types are not looked at.
        await s.append('acct-3', [opened(null), opened(undefined), ev('Deposited', { taxId: '12345678909' })]);
        assert.equal(await s.claimOwner('cpf', '12345678909'), 'acct-1');
      });

      it('releasedBy releases the stream’s claims in the scope; then another stream can claim the value', async () => {
        const s = await claiming();
        await s.append('acct-1', [opened('11111111111', { email: 'a@example.com' })]);
        await s.append('acct-1', [ev('Closed')]);
        assert.equal(await s.claimOwner('cpf', '11111111111'), null);
        assert.equal(await s.claimOwner('email', 'a@example.com'), 'acct-1', 'only the rule’s scope is released');
        await s.append('acct-2', [opened('11111111111')]);
        assert.equal(await s.claimOwner('cpf', '11111111111'), 'acct-2');
        // An event of both lists replaces: the old value is released, the new one claimed.
        await s.append('acct-2', [ev('TaxIdChanged', { taxId: '22222222222' })]);
        assert.equal(await s.claimOwner('cpf', '11111111111'), null);
        assert.equal(await s.claimOwner('cpf', '22222222222'), 'acct-2');
      });

      it('the append option releases frees a scope explicitly, recorded in the first event’s metadata', async () => {
        const s = await claiming();
        await s.append('acct-1', [opened('33333333333', { email: 'b@example.com' })]);
        await s.append('acct-1', [ev('Noted')], { releases: ['email'] });
        assert.equal(await s.claimOwner('email', 'b@example.com'), null);
        assert.equal(await s.claimOwner('cpf', '33333333333'), 'acct-1');
        const [, noted] = await collect(s.readStream('acct-1'));
        assert.deepEqual(noted!.metadata[RELEASES_CLAIMS], ['email']);
        assert.deepEqual(await s.rebuildClaims(), { claims: 1, conflicts: [] }, 'a rebuild releases it again');
        assert.equal(await s.claimOwner('email', 'b@example.com'), null);
        for (const releases of [['nope'], 'cpf', [1], [null]]) {
          const error = await expectNothingStored(
            s,
            s.append('acct-1', [ev('Noted')], { releases: releases as string[] }),
            ValidationError,
          );
          assert.match(error.message, /scope|releases/);
        }
      });

      it('a retried append returns its first result, even after its value moved to another stream', async () => {
        const s = await claiming();
        const batch = [opened('44444444444')];
        const first = await s.append('acct-1', batch, { expectedVersion: 'no_stream' });
        await s.append('acct-1', [ev('Closed')]);
        await s.append('acct-2', [opened('44444444444')]);
        const retry = await s.append('acct-1', batch, { expectedVersion: 'no_stream' });
        assert.deepEqual(retry, { ...first, duplicate: true });
        assert.equal(await s.claimOwner('cpf', '44444444444'), 'acct-2');
        await s.transaction(async (tx) => assert.equal((await tx.append('acct-1', batch)).duplicate, true));
      });

      it('inside a transaction claims commit with it, or not at all; a refused claim caught inside spoils nothing', async () => {
        const s = await claiming();
        await assert.rejects(
          s.transaction(async (tx) => {
            await tx.append('acct-1', [opened('55555555555')]);
            assert.equal(await tx.claimOwner('cpf', '55555555555'), 'acct-1', 'the transaction sees its own claim');
            throw new Error('changed my mind');
          }),
          /changed my mind/,
        );
        assert.equal(await s.claimOwner('cpf', '55555555555'), null, 'the rollback left no claim');
        await s.append('acct-9', [opened('66666666666')]);
        await s.transaction(async (tx) => {
          await tx.append('acct-1', [opened('55555555555')]);
          const error = await rejection(tx.append('acct-2', [opened('66666666666')]));
          assert.ok(error instanceof UniquenessError, String(error));
          assert.equal(error.owner, 'acct-9');
          await tx.append('acct-9', [ev('Closed')]);
          assert.equal(await tx.claimOwner('cpf', '66666666666'), null);
          await tx.append('acct-2', [opened('66666666666')]);
        });
        assert.equal(await s.claimOwner('cpf', '55555555555'), 'acct-1');
        assert.equal(await s.claimOwner('cpf', '66666666666'), 'acct-2');
        assert.equal((await s.streamInfo('acct-2')).version, 1, 'only the accepted append was stored');
      });

      it('a soft delete keeps the stream’s claims (it can come back); a hard delete releases them', async () => {
        const s = await claiming();
        await s.append('acct-1', [opened('77777777777')]);
        await s.append('acct-2', [opened('88888888888')]);
        await s.deleteStream('acct-1');
        assert.equal(await s.claimOwner('cpf', '77777777777'), 'acct-1');
        await s.deleteStream('acct-2', { hard: true });
        assert.equal(await s.claimOwner('cpf', '88888888888'), null);
        await s.append('acct-3', [opened('88888888888')]);
        assert.deepEqual(await s.rebuildClaims(), { claims: 2, conflicts: [] });
        assert.equal(await s.claimOwner('cpf', '77777777777'), 'acct-1');
        assert.equal(await s.claimOwner('cpf', '88888888888'), 'acct-3');
      });

      it('50 concurrent claims of one value by 50 streams: exactly one wins, 49 are refused naming it', async () => {
        const s = await claiming();
        const results = await Promise.allSettled(
          Array.from({ length: 50 }, (_, i) => s.append(`acct-c${i}`, [opened('123.456.789-09')])),
        );
        const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [`acct-c${i}`] : []));
        assert.equal(won.length, 1, 'exactly one append wins');
        for (const r of results) {
          if (r.status === 'fulfilled') continue;
          assert.ok(r.reason instanceof UniquenessError, String(r.reason));
          assert.equal(r.reason.scope, 'cpf');
          assert.equal(r.reason.owner, won[0]);
        }
        assert.equal(await s.claimOwner('cpf', '12345678909'), won[0]);
        assert.equal((await collect(s.readAll())).length, 1, 'only the winner’s event is stored');
      });

      it('rebuildClaims recomputes the claims from the log: the same claims, and conflicts for a rule added later', async () => {
        let enabled = false;
        const later = defineUniqueness({
          scope: 'nickname',
          claimedBy: { Opened: (data: { nickname?: string }) => (enabled ? data.nickname : undefined) },
        });
        const s = await store({ uniqueness: { rules: [cpf, later] } });
        await s.append('acct-1', [opened('10101010101', { nickname: 'ada' })]);
        await s.append('acct-2', [opened('20202020202', { nickname: 'ada' })]);
        await s.append('acct-3', [opened('30303030303', { nickname: 'bob' })]);
        await s.append('acct-3', [ev('Closed')]);
        const owners = async () => ({
          a: await s.claimOwner('cpf', '10101010101'),
          b: await s.claimOwner('cpf', '20202020202'),
          c: await s.claimOwner('cpf', '30303030303'),
          ada: await s.claimOwner('nickname', 'ada'),
          bob: await s.claimOwner('nickname', 'bob'),
        });
        const before = await owners();
        assert.deepEqual(await s.rebuildClaims(), { claims: 2, conflicts: [] });
        assert.deepEqual(await owners(), before, 'the same claims');
        enabled = true;
        const events = await collect(s.readStream('acct-2'));
        const rebuilt = await s.rebuildClaims();
        assert.deepEqual(rebuilt, {
          claims: 4,
          conflicts: [{ scope: 'nickname', owner: 'acct-1', streamId: 'acct-2', eventId: events[0]!.id }],
        });
        assert.deepEqual(await owners(), { ...before, ada: 'acct-1', bob: 'acct-3' });
      });

      it('bad values are typed errors and store nothing', async () => {
        const s = await claiming();
        for (const [label, value] of [
          ['a number', 12345678909],
          ['an object', { digits: '1' }],
          ['empty', ''],
          ['empty once normalised', '..-'],
          ['NUL', 'a\u0000b'],
          ['a lone surrogate', 'x\ud800'],
          ['huge', '1'.repeat(MAX_CLAIM_VALUE_LENGTH + 1)],
        ] as const) {
          const error = await expectNothingStored(s, s.append('acct-1', [opened(value)]), ValidationError);
          // NUL and lone surrogates are not JSON already; the claim refuses them too (see claimOwner below).
          assert.match(error.message, /'cpf'|not JSON/, label);
          if (typeof value === 'string' && value.length > 0)
            await assert.rejects(s.claimOwner('cpf', value), ValidationError, label);
        }
        await assert.rejects(s.claimOwner('nope', '1'), ValidationError);
        await assert.rejects(s.claimOwner('__proto__', '1'), ValidationError);
        await assert.rejects(s.claimOwner('cpf', 42 as unknown as string), ValidationError);
        const plain = await store();
        await assert.rejects(plain.claimOwner('cpf', '1'), ValidationError, 'a store without rules has no scope');
        await assert.rejects(plain.append('acct-1', [ev('Noted')], { releases: ['cpf'] }), ValidationError);
        assert.deepEqual(await plain.rebuildClaims(), { claims: 0, conflicts: [] });
      });

      it('rules that do not fit are a UniquenessConfigurationError', async () => {
        const refuse = async (make: () => unknown, what: RegExp) => {
          const error = await rejection((async () => make())());
          assert.ok(error instanceof UniquenessConfigurationError, String(error));
          assert.equal(error.code, 'UNIQUENESS_CONFIGURATION');
          assert.match(error.message, what);
        };
        const claimedBy = { Opened: taxId };
        for (const scope of ['', 'has space', '1cpf', 'a'.repeat(101), 'nul\u0000', 42])
          await refuse(() => defineUniqueness({ scope: scope as string, claimedBy }), /scope/);
        await refuse(() => defineUniqueness({ scope: 'x', claimedBy: {} }), /no event type/);
        await refuse(() => defineUniqueness({ scope: 'x', claimedBy: { 'not a type': taxId } }), /not an event type/);
        await refuse(() => defineUniqueness({ scope: 'x', claimedBy: { Opened: 'data.taxId' as never } }), /function/);
        await refuse(() => defineUniqueness({ scope: 'x', claimedBy, releasedBy: ['__proto__'] }), /not an event type/);
        await refuse(() => store({ uniqueness: { rules: [cpf, cpf] } }), /two rules/);
        await refuse(() => store({ uniqueness: { rules: [cpf], key: 'short' } }), /16 bytes/);
        const Opened = defineEvent('Opened', passThrough);
        await refuse(
          () => store({ events: eventRegistry([Opened], { strict: false }), uniqueness: { rules: [cpf] } }),
          /'TaxIdChanged' is not an event type of the store's registry/,
        );
      });
    });

    describe('lifecycle', () => {
      it('a closed store refuses further work', async () => {
        const s = await factory.create();
        await s.close();
        await assert.rejects(
          s.append('acct-1', [ev('Opened')]),
          (error: unknown) => (error as { code?: string }).code === 'STORE_CLOSED',
        );
      });
    });
  });
}

/** A hand-written Standard Schema validator (so the suite needs no validation library): owner required, limit defaults to 0. */
const openedSchema: StandardSchemaV1<{ owner: string; limit?: number }, { owner: string; limit: number }> = {
  '~standard': {
    version: 1,
    vendor: 'eventline-conformance',
    validate(value) {
      const input = value as { owner?: unknown; limit?: unknown } | null;
      if (typeof input?.owner !== 'string' || input.owner.length === 0)
        return { issues: [{ message: 'owner must be a non-empty string', path: ['owner'] }] };
      if (input.limit !== undefined && !Number.isInteger(input.limit))
        return { issues: [{ message: 'limit must be a whole number', path: ['limit'] }] };
      return { value: { owner: input.owner, limit: (input.limit as number | undefined) ?? 0 } };
    },
  },
};

const passThrough: StandardSchemaV1<unknown, unknown> = {
  '~standard': { version: 1, vendor: 'eventline-conformance', validate: (value) => ({ value }) },
};

function ev(
  type: string,
  data: unknown = { at: Math.random() },
  metadata?: EventInput['metadata'],
): EventInput & { id: string } {
  return { id: newId(), type, data, ...(metadata ? { metadata } : {}) };
}

async function appendMany(store: EventStore, streamId: string, count: number): Promise<void> {
  await store.append(
    streamId,
    Array.from({ length: count }, (_, i) => ev('Deposited', { i })),
  );
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected the operation to fail, but it succeeded');
}

async function expectNothingStored<E extends Error>(
  store: EventStore,
  promise: Promise<unknown>,
  type: new (...args: never[]) => E,
  message?: RegExp,
): Promise<E> {
  // The rejection is checked below, after counting; a store that does I/O rejects bad input before the count returns,
  // so mark it handled now (otherwise Node reports an unhandled rejection and fails the test).
  promise.catch(() => undefined);
  const before = (await collect(store.readAll())).length;
  const error = await rejection(promise);
  assert.ok(error instanceof type, `expected ${type.name}, got ${String(error)}`);
  if (message) assert.match(error.message, message);
  assert.equal((await collect(store.readAll())).length, before, 'nothing was stored');
  return error;
}

/** A string with its non-ASCII code units escaped, for test names and messages. */
function escape(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function assertIncreasing(events: RecordedEvent[]): void {
  for (let i = 1; i < events.length; i++)
    assert.ok(events[i - 1]!.position < events[i]!.position, `positions increase at ${i}`);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
