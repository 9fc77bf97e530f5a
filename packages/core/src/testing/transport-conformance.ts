import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { newId } from '../ids.js';
import type { Consumer, ReceivedMessage, Transport, TransportMessage } from '../transport/contract.js';
import { consumeEvents, createInMemoryInbox } from '../transport/inbox.js';
import { until } from './helpers.js';

/** How the suite gets transport clients. Each test uses its own namespace (prefix, stream, exchange...). */
export interface TransportFactory {
  readonly name: string;
  /** A new client ("node") of the broker, scoped to `namespace`. Two clients of one namespace see the same messages. */
  connect(namespace: string): Promise<Transport>;
  /** Kills a client abruptly, as a crash would (no acknowledgement of messages in progress). Default: `close()`. */
  crash?(transport: Transport): Promise<void>;
  /** Deletes what the namespace created on the broker. */
  cleanup?(namespace: string): Promise<void>;
  /** How long the broker may take to redeliver a crashed consumer's message (ack wait, idle time). Default 10 s. */
  readonly redeliveryTimeoutMs?: number;
}

/**
 * The behaviours every transport must have, run with two connected clients ("nodes") per test:
 * ordering per stream, competing consumers, independent groups, redelivery after a handler failure and after a
 * consumer is killed, and de-duplication of a re-published id (through an inbox).
 */
export function describeTransportConformance(factory: TransportFactory): void {
  describe(`transport conformance: ${factory.name}`, () => {
    const opened: Array<{ transport: Transport; consumers: Consumer[] }> = [];
    const namespaces: string[] = [];
    const redelivery = factory.redeliveryTimeoutMs ?? 10_000;

    const nodes = async (count: number) => {
      const namespace = `t${newId().replace(/-/g, '').slice(-12)}`;
      namespaces.push(namespace);
      const list: Transport[] = [];
      for (let i = 0; i < count; i++) {
        const transport = await factory.connect(namespace);
        opened.push({ transport, consumers: [] });
        list.push(transport);
      }
      return list;
    };
    after(async () => {
      for (const { transport } of opened) await transport.close().catch(() => undefined);
      for (const namespace of namespaces) await factory.cleanup?.(namespace);
    });

    it('delivers every message of a stream in publish order', async () => {
      const [publisher, consumer] = await nodes(2);
      const messages = transportMessages(['account-1', 'account-2', 'payment-1'], 30);
      await publisher!.publish(messages.slice(0, 40));
      await publisher!.publish(messages.slice(40));
      const received: ReceivedMessage[] = [];
      const c = await consumer!.consume({ group: 'g', handler: async (m) => void received.push(m) });
      await until(() => received.length >= messages.length, `all ${messages.length} messages`, 20_000);
      await c.stop();
      assert.equal(received.length, messages.length, 'no duplicates');
      assertPerStreamOrder(received);
      const first = received.find((m) => m.id === messages[0]!.id)!;
      assert.equal(first.subject, 'account.Happened');
      assert.equal(first.body, messages[0]!.body);
      assert.equal(first.headers['eventline-stream'], 'account-1');
      assert.equal(first.deliveryCount, 1);
    });

    it('competing consumers: each message is handled by exactly one member of a group, streams stay in order', async () => {
      const [publisher, a, b] = await nodes(3);
      const messages = transportMessages(
        Array.from({ length: 8 }, (_, i) => `account-${i}`),
        25,
      );
      const handled: Array<ReceivedMessage & { by: string }> = [];
      const slow = async () => new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
      const ca = await a!.consume({
        group: 'g',
        handler: async (m) => void (await slow(), handled.push({ ...m, by: 'a' })),
      });
      const cb = await b!.consume({
        group: 'g',
        handler: async (m) => void (await slow(), handled.push({ ...m, by: 'b' })),
      });
      await publisher!.publish(messages);
      await until(() => handled.length >= messages.length, 'every message handled', 30_000);
      await settle();
      await Promise.all([ca.stop(), cb.stop()]);
      assert.deepEqual(
        handled.map((m) => m.id).sort(),
        messages.map((m) => m.id).sort(),
        'each message exactly once in the group',
      );
      assertPerStreamOrder(handled);
      assert.ok(new Set(handled.map((m) => m.by)).size === 2, 'both members took part');
    });

    it('independent groups each get every message, and subject filters select by category and type', async () => {
      const [publisher, a, b] = await nodes(3);
      const messages = transportMessages(['account-1', 'payment-1'], 10);
      const one: string[] = [];
      const two: string[] = [];
      const payments: string[] = [];
      const consumers = [
        await a!.consume({ group: 'one', handler: async (m) => void one.push(m.id) }),
        await b!.consume({ group: 'two', handler: async (m) => void two.push(m.id) }),
        await b!.consume({
          group: 'payments',
          subjects: ['payment.*'],
          handler: async (m) => void payments.push(m.streamId),
        }),
      ];
      await publisher!.publish(messages);
      await until(() => one.length >= 20 && two.length >= 20 && payments.length >= 10, 'both groups', 20_000);
      await settle();
      for (const consumer of consumers) await consumer.stop();
      assert.deepEqual([...one].sort(), messages.map((m) => m.id).sort());
      assert.deepEqual([...two].sort(), messages.map((m) => m.id).sort());
      assert.deepEqual(payments, Array(10).fill('payment-1'));
    });

    it('redelivers a message whose handler failed, before the next message of its stream', async () => {
      const [publisher, consumer] = await nodes(2);
      const messages = transportMessages(['account-1'], 5);
      const seen: Array<{ id: string; delivery: number }> = [];
      let failed = false;
      const c = await consumer!.consume({
        group: 'g',
        retryDelayMs: 100,
        handler: async (m) => {
          seen.push({ id: m.id, delivery: m.deliveryCount });
          if (m.id === messages[2]!.id && !failed) {
            failed = true;
            throw new Error('transient failure');
          }
        },
      });
      await publisher!.publish(messages);
      await until(() => seen.filter((s) => s.id === messages[4]!.id).length > 0, 'the last message', 20_000);
      await c.stop();
      const third = seen.filter((s) => s.id === messages[2]!.id);
      assert.deepEqual(
        third.map((s) => s.delivery),
        [1, 2],
        'delivered again, with its delivery count',
      );
      const succeeded = seen.filter((s) => !(s.id === messages[2]!.id && s.delivery === 1)).map((s) => s.id);
      assert.deepEqual(
        succeeded,
        messages.map((m) => m.id),
        'the stream stayed in order: message 4 only after 3 succeeded',
      );
    });

    it('redelivers a message whose consumer was killed before acknowledging it', async () => {
      const [publisher, doomed, survivor] = await nodes(3);
      const messages = transportMessages(['account-1'], 3);
      let hung = false;
      const started = new Promise<void>((resolve) => {
        void doomed!.consume({
          group: 'g',
          handler: async (m) => {
            if (m.id === messages[0]!.id) {
              hung = true;
              resolve();
              await new Promise(() => undefined); // never acknowledges: the node dies with it in hand
            }
          },
        });
      });
      await publisher!.publish(messages);
      await started;
      assert.ok(hung);
      await (factory.crash ? factory.crash(doomed!) : doomed!.close());
      const received: ReceivedMessage[] = [];
      const c = await survivor!.consume({ group: 'g', handler: async (m) => void received.push(m) });
      await until(() => received.length >= 3, 'redelivery to the surviving member', redelivery + 20_000);
      await c.stop();
      assert.deepEqual(
        received.map((m) => m.id),
        messages.map((m) => m.id),
      );
      assert.ok(received[0]!.deliveryCount >= 2, 'the first message was delivered before');
    });

    it('carries text exactly: accents, CJK and emoji in bodies, stream ids and header values', async () => {
      const [publisher, consumer] = await nodes(2);
      const messages = transportMessages(['account-josé-ação', 'account-日本-🙂'], 2).map((message, i) => {
        const body = JSON.parse(message.body) as { data: Record<string, unknown> };
        body.data = { ...body.data, note: `pão de açúcar ${i} — 東京 🚀 ${'é'.repeat(i * 300)}`, surrogates: '𝄞🏳️‍🌈' };
        return { ...message, body: JSON.stringify(body), headers: { ...message.headers, 'x-note': `café ${i} 🙂` } };
      });
      await publisher!.publish(messages);
      const received: ReceivedMessage[] = [];
      const c = await consumer!.consume({ group: 'g', handler: async (m) => void received.push(m) });
      await until(() => received.length >= messages.length, `all ${messages.length} messages`, 20_000);
      await c.stop();
      const byId = new Map(received.map((m) => [m.id, m]));
      for (const message of messages) {
        const got = byId.get(message.id);
        assert.ok(got, `message ${message.id} arrived`);
        assert.equal(got.body, message.body);
        assert.equal(got.streamId, message.streamId);
        assert.equal(got.subject, message.subject);
        assert.equal(got.headers['x-note'], message.headers['x-note']);
        assert.equal(got.headers['eventline-stream'], message.streamId);
      }
    });

    it('a re-published id has its effect once (broker de-duplication and the consumer inbox)', async () => {
      const [publisher, consumer] = await nodes(2);
      const messages = transportMessages(['account-1'], 3);
      await publisher!.publish(messages);
      await publisher!.publish([messages[1]!]); // a retry after a lost confirm
      const effects: string[] = [];
      const c = await consumeEvents(consumer!, {
        group: 'g',
        inbox: createInMemoryInbox(),
        handle: async (event) => void effects.push(event.id),
      });
      await until(() => effects.length >= 3, 'three effects', 20_000);
      await settle(300);
      await c.stop();
      assert.deepEqual(
        effects,
        messages.map((m) => m.id),
      );
    });
  });
}

/**
 * `perStream` messages for each of `streams`, interleaved (version 1 of every stream, then version 2, ...), with versions
 * from `firstVersion`: each an event of type `Happened` encoded as the publisher encodes one, with the type, stream and
 * version headers. What a transport's own tests publish.
 */
export function transportMessages(streams: readonly string[], perStream: number, firstVersion = 1): TransportMessage[] {
  const messages: TransportMessage[] = [];
  for (let version = firstVersion; version < firstVersion + perStream; version++) {
    for (const streamId of streams) {
      const id = newId();
      const category = streamId.slice(0, streamId.indexOf('-'));
      const event = {
        id,
        type: 'Happened',
        streamId,
        version,
        position: '',
        recordedAt: new Date().toISOString(),
        data: { version },
        metadata: {},
      };
      messages.push({
        id,
        subject: `${category}.Happened`,
        streamId,
        body: JSON.stringify(event),
        headers: { 'eventline-type': 'Happened', 'eventline-stream': streamId, 'eventline-version': String(version) },
      });
    }
  }
  return messages;
}

function assertPerStreamOrder(messages: readonly TransportMessage[]): void {
  const last = new Map<string, number>();
  for (const message of messages) {
    const version = Number(message.headers['eventline-version']);
    assert.ok(
      version > (last.get(message.streamId) ?? 0),
      `stream ${message.streamId}: version ${version} after ${last.get(message.streamId)}`,
    );
    last.set(message.streamId, version);
  }
}

/** Lets late duplicates arrive, so that "exactly once" is checked after a quiet moment. */
function settle(ms = 200): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
