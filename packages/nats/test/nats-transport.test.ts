// tier: integration
// One file on purpose: node --test runs files in parallel, and the server-restart test at the end must not cut the
// connections of other NATS tests while they run.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { connect } from '@nats-io/transport-node';
import {
  newId,
  TransportClosedError,
  TransportConfigurationError,
  TransportError,
  TransportUnavailableError,
  type Consumer,
  type ReceivedMessage,
  type TransportMessage,
} from '@eventline/core';
import { createTestClock, describeTransportConformance } from '@eventline/core/testing';
import { createNatsTransport, safeName, type NatsTransport, type NatsTransportOptions } from '../src/index.js';
import {
  deleteStream,
  natsAvailability,
  NATS_URL,
  sleep,
  startNatsServer,
  stopNatsServer,
  until,
  waitForNats,
  withManager,
} from './helpers.js';

const availability = await natsAvailability();
const ACK_WAIT_MS = 2_000;

if (!availability.available) {
  describe('NATS JetStream transport', { skip: availability.reason }, () => undefined);
} else {
  const backgroundErrors: TransportError[] = [];
  const onError = (error: TransportError) => void backgroundErrors.push(error);

  describeTransportConformance({
    name: 'NATS JetStream',
    connect: (namespace) =>
      createNatsTransport({ servers: NATS_URL, prefix: namespace, ackWaitMs: ACK_WAIT_MS, onError }),
    // A crash: the socket goes away without acknowledging the message in hand.
    crash: (transport) => (transport as NatsTransport).connection.close(),
    cleanup: (namespace) => deleteStream(safeName(namespace)),
    redeliveryTimeoutMs: ACK_WAIT_MS * 2,
  });

  describe('NATS JetStream transport', { timeout: 120_000 }, () => {
    const transports: NatsTransport[] = [];
    const streams = new Set<string>();
    const open = async (prefix: string, options: NatsTransportOptions = {}) => {
      const transport = await createNatsTransport({
        servers: NATS_URL,
        prefix,
        ackWaitMs: ACK_WAIT_MS,
        onError,
        ...options,
      });
      transports.push(transport);
      streams.add(transport.stream);
      return transport;
    };
    const namespace = () => `n${newId().replace(/-/g, '').slice(-12)}`;
    after(async () => {
      for (const transport of transports) await transport.close().catch(() => undefined);
      for (const stream of streams) await deleteStream(stream);
      // Background errors are retried by the transport; listed for whoever reads the test output.
      for (const error of backgroundErrors) console.log(`# background (retried): ${error.message}`);
    });

    it('the server itself de-duplicates a re-published id: one message in the stream', async () => {
      const transport = await open(namespace());
      const message = messageOf('account-1', 1);
      await transport.publish([message]);
      await transport.publish([message]); // a retry after a lost confirm
      await transport.publish([message, messageOf('account-2', 1), message]); // and twice in one batch
      await withManager(async (jsm) => {
        const info = await jsm.streams.info(transport.stream);
        assert.equal(info.state.messages, 2, 'the re-published id is stored once');
        assert.deepEqual(info.config.subjects, [`${transport.prefix}.>`]);
        assert.equal(info.config.storage, 'file');
        const stored = await jsm.streams.getMessage(transport.stream, { seq: 1 });
        assert.ok(stored);
        assert.equal(stored.subject, `${transport.prefix}.account.Happened`);
        assert.equal(stored.header.get('Nats-Msg-Id'), message.id);
        assert.equal(stored.header.get('eventline-stream'), 'account-1');
        assert.equal(stored.header.get('eventline-version'), '1');
        assert.equal(stored.string(), message.body);
      });
    });

    it('publishes a batch concurrently and keeps the order of each stream in the JetStream stream', async () => {
      const transport = await open(namespace());
      const messages = Array.from({ length: 50 }, (_, i) => messageOf(`account-${i % 5}`, Math.floor(i / 5) + 1));
      await transport.publish(messages);
      await withManager(async (jsm) => {
        const info = await jsm.streams.info(transport.stream);
        assert.equal(info.state.messages, 50);
        const last = new Map<string, number>();
        for (let seq = 1; seq <= 50; seq++) {
          const stored = (await jsm.streams.getMessage(transport.stream, { seq }))!;
          const streamId = stored.header.get('eventline-stream');
          const version = Number(stored.header.get('eventline-version'));
          assert.ok(version > (last.get(streamId) ?? 0), `${streamId} v${version} stored after v${last.get(streamId)}`);
          last.set(streamId, version);
        }
      });
    });

    it('errors are typed and name the operation: invalid subjects, bad filters and options, a closed transport, an unreachable server', async () => {
      const transport = await open(namespace());
      /** Asserts the error's class, code, transport, operation and message. */
      const typed =
        (kind: typeof TransportError, code: string, operation: string, message: RegExp) =>
        (error: unknown): boolean => {
          assert.ok(error instanceof kind, `${String(error)} is a ${kind.name}`);
          assert.equal(error.code, code);
          assert.equal(error.transport, 'nats');
          assert.equal(error.operation, operation);
          assert.match(error.message, message);
          return true;
        };
      await assert.rejects(
        transport.publish([{ ...messageOf('account-1', 1), subject: 'account' }]),
        typed(TransportError, 'TRANSPORT_FAILED', 'publish', /NATS transport: publish: .*not <category>\.<type>/),
      );
      await assert.rejects(
        transport.publish([{ ...messageOf('account-1', 1), subject: 'account.Has Space' }]),
        /NATS transport: publish: /,
      );
      await assert.rejects(
        transport.consume({ group: 'g', subjects: ['account.>'], handler: async () => undefined }),
        typed(
          TransportConfigurationError,
          'TRANSPORT_CONFIGURATION',
          'consume (group "g")',
          /NATS transport: consume .*invalid subject filter/,
        ),
      );
      await assert.rejects(
        transport.consume({ group: 'g', retryDelayMs: -1, handler: async () => undefined }),
        typed(TransportConfigurationError, 'TRANSPORT_CONFIGURATION', 'consume', /retryDelayMs/),
      );
      await assert.rejects(
        createNatsTransport({ servers: NATS_URL, prefix: 'has space' }),
        typed(TransportConfigurationError, 'TRANSPORT_CONFIGURATION', 'configure', /invalid subject prefix/),
      );
      await assert.rejects(
        createNatsTransport({ servers: NATS_URL, ackWaitMs: 10 }),
        typed(TransportConfigurationError, 'TRANSPORT_CONFIGURATION', 'configure', /ackWaitMs/),
      );
      const other = await createNatsTransport({ servers: NATS_URL, prefix: namespace() });
      await other.close();
      await assert.rejects(
        other.publish([messageOf('account-1', 1)]),
        typed(TransportClosedError, 'TRANSPORT_CLOSED', 'publish', /NATS transport: publish: the transport is closed/),
      );
      await assert.rejects(
        other.consume({ group: 'g', handler: async () => undefined }),
        typed(TransportClosedError, 'TRANSPORT_CLOSED', 'consume', /NATS transport: consume: the transport is closed/),
      );
      await assert.rejects(
        createNatsTransport({ servers: 'nats://127.0.0.1:1' }),
        typed(
          TransportUnavailableError,
          'TRANSPORT_UNAVAILABLE',
          'connect',
          /NATS transport: connect: cannot connect to nats:\/\/127\.0\.0\.1:1/,
        ),
      );
      const unavailable = new TransportUnavailableError('nats', 'publish', 'down');
      assert.equal(unavailable.retryable, true);
      assert.deepEqual(unavailable.toJSON(), {
        name: 'TransportUnavailableError',
        code: 'TRANSPORT_UNAVAILABLE',
        message: 'NATS transport: publish: down',
        transport: 'nats',
        operation: 'publish',
        retryable: true,
      });
    });

    it('filters on several subjects (category and exact type) and starts a new group at new messages when asked', async () => {
      const prefix = namespace();
      const transport = await open(prefix);
      const old = [messageOf('account-1', 1), messageOf('payment-1', 1, 'Done')];
      await transport.publish(old);
      const filtered: string[] = [];
      const fresh: string[] = [];
      const consumers = [
        await transport.consume({
          group: 'filtered',
          subjects: ['account.*', 'payment.Done'],
          handler: async (m) => void filtered.push(m.id),
        }),
        await transport.consume({ group: 'fresh', from: 'new', handler: async (m) => void fresh.push(m.id) }),
      ];
      const later = [
        messageOf('payment-1', 2, 'Refused'),
        messageOf('account-1', 2),
        messageOf('payment-1', 3, 'Done'),
        messageOf('order-1', 1),
      ];
      await transport.publish(later);
      await until(() => filtered.length >= 4 && fresh.length >= 4, 'both groups', 10_000);
      await sleep(200);
      for (const consumer of consumers) await consumer.stop();
      // (order across streams is not kept: a batch is published concurrently across streams)
      assert.deepEqual([...filtered].sort(), [old[0]!.id, old[1]!.id, later[1]!.id, later[2]!.id].sort());
      assert.deepEqual([...fresh].sort(), later.map((m) => m.id).sort());
    });

    it('stop() lets the message in progress finish and acknowledges it', async () => {
      const transport = await open(namespace());
      const [first, second] = [messageOf('account-1', 1), messageOf('account-1', 2)];
      await transport.publish([first]);
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      let finished = false;
      const consumer = await transport.consume({
        group: 'g',
        handler: async () => {
          entered();
          await sleep(300);
          finished = true;
        },
      });
      await inHandler;
      await consumer.stop();
      assert.ok(finished, 'stop() waited for the handler');
      await transport.publish([second]);
      const next: ReceivedMessage[] = [];
      const again = await transport.consume({ group: 'g', handler: async (m) => void next.push(m) });
      await until(() => next.length >= 1, 'the next message', 10_000);
      await sleep(ACK_WAIT_MS + 500); // the first message would be back by now had it not been acknowledged
      await again.stop();
      assert.deepEqual(
        next.map((m) => [m.id, m.deliveryCount]),
        [[second.id, 1]],
      );
    });

    it('a handler slower than the ack wait keeps its message: no other member gets it meanwhile', async () => {
      const prefix = namespace();
      const [a, b] = [await open(prefix, { ackWaitMs: 600 }), await open(prefix, { ackWaitMs: 600 })];
      const messages = [messageOf('account-1', 1), messageOf('account-1', 2), messageOf('account-1', 3)];
      const log: string[] = [];
      let running = 0;
      const handler = (by: string) => async (m: ReceivedMessage) => {
        running++;
        assert.equal(running, 1, 'one message of the group at a time');
        log.push(`${by}:${m.headers['eventline-version']}:${m.deliveryCount}`);
        if (m.id === messages[0]!.id) await sleep(1_800); // three ack waits
        running--;
      };
      const consumers = [
        await a.consume({ group: 'g', handler: handler('a') }),
        await b.consume({ group: 'g', handler: handler('b') }),
      ];
      await a.publish(messages);
      await until(() => log.length >= 3, 'three messages', 15_000);
      await sleep(1_000);
      await Promise.all(consumers.map((c) => c.stop()));
      assert.deepEqual(
        log.map((entry) => entry.slice(2)),
        ['1:1', '2:1', '3:1'],
        log.join(' '),
      );
    });

    it('group names are sanitised into distinct durable consumers', async () => {
      const transport = await open(namespace());
      await transport.publish([messageOf('account-1', 1)]);
      const seen = { dotted: 0, plain: 0 };
      const consumers: Consumer[] = [
        await transport.consume({ group: 'billing.projector v2', handler: async () => void seen.dotted++ }),
        await transport.consume({ group: 'billing_projector_v2', handler: async () => void seen.plain++ }),
      ];
      await until(() => seen.dotted === 1 && seen.plain === 1, 'both groups', 10_000);
      for (const consumer of consumers) await consumer.stop();
      await withManager(async (jsm) => {
        const names: string[] = [];
        for await (const info of jsm.consumers.list(transport.stream)) names.push(info.name);
        assert.equal(names.length, 2);
        assert.ok(names.includes('billing_projector_v2'));
        assert.ok(
          names.some((name) => name.startsWith('billing_projector_v2_')),
          names.join(', '),
        );
      });
    });

    it('a consumer carries on when its durable consumer or the whole stream is deleted under it', async () => {
      const transport = await open(namespace());
      const received: string[] = [];
      const consumer = await transport.consume({ group: 'g', handler: async (m) => void received.push(m.id) });
      const [one, two, three] = [messageOf('account-1', 1), messageOf('account-1', 2), messageOf('account-1', 3)];
      await transport.publish([one]);
      await until(() => received.length === 1, 'the first message', 10_000);
      await withManager((jsm) => jsm.consumers.delete(transport.stream, 'g'));
      await sleep(300);
      await transport.publish([two]);
      await until(() => received.includes(two.id), 'a message after the consumer was deleted', 15_000);
      await withManager((jsm) => jsm.streams.delete(transport.stream));
      await sleep(300);
      await until(
        async () => {
          try {
            await transport.publish([three]); // the first attempt may find the stream gone; the next creates it again
            return true;
          } catch {
            return false;
          }
        },
        'a publish after the stream was deleted',
        15_000,
      );
      await until(() => received.includes(three.id), 'a message after the stream was deleted', 15_000);
      await consumer.stop();
      assert.deepEqual(
        received.filter((id) => id !== one.id),
        [two.id, three.id],
      );
      assert.ok(backgroundErrors.length > 0, 'the trouble was reported to onError');
    });

    it('a group whose durable consumer was deleted sets up again after a pause of its clock', async () => {
      const clock = createTestClock();
      const transport = await open(namespace(), { clock });
      const received: string[] = [];
      const consumer = await transport.consume({ group: 'g', handler: async (m) => void received.push(m.id) });
      const [one, two] = [messageOf('account-1', 1), messageOf('account-1', 2)];
      await transport.publish([one]);
      await until(() => received.length === 1, 'the first message', 10_000);
      await withManager((jsm) => jsm.consumers.delete(transport.stream, 'g'));
      await until(() => clock.sleepers === 1, 'the pause before setting up again', 10_000);
      await transport.publish([two]);
      await sleep(300);
      assert.deepEqual(received, [one.id], 'nothing is set up again before the pause is over');
      await clock.advance(5_000); // the longest pause
      await until(() => received.includes(two.id), 'the message after the consumer was set up again', 10_000);
      await consumer.stop();
    });

    it('a dotted prefix gets a safe stream name and its own subjects', async () => {
      const prefix = `acme.${namespace()}`;
      const transport = await open(prefix);
      assert.match(transport.stream, /^acme_n[0-9a-f]{12}_[0-9a-f]{10}$/);
      const received: ReceivedMessage[] = [];
      const consumer = await transport.consume({
        group: 'g',
        subjects: ['account.*'],
        handler: async (m) => void received.push(m),
      });
      const message = messageOf('account-1', 1);
      await transport.publish([message]);
      await until(() => received.length === 1, 'the message', 10_000);
      await consumer.stop();
      assert.equal(received[0]!.subject, 'account.Happened');
      assert.equal(received[0]!.id, message.id);
      assert.deepEqual(received[0]!.headers, message.headers);
    });

    it('uses a connection it is given and leaves it open on close()', async () => {
      const nc = await connect({ servers: NATS_URL });
      try {
        const transport = await open(namespace(), { connection: nc });
        const received: string[] = [];
        await transport.consume({ group: 'g', handler: async (m) => void received.push(m.id) });
        const message = messageOf('account-1', 1);
        await transport.publish([message]);
        await until(() => received.length === 1, 'the message', 10_000);
        await transport.close();
        assert.equal(nc.isClosed(), false);
        await nc.flush();
      } finally {
        await nc.close();
      }
    });

    // Last: it restarts the machine's NATS server (a fault test may, if it starts it again) and always starts it again.
    it('a consumer keeps receiving after the NATS server restarts', { timeout: 90_000 }, async () => {
      const prefix = namespace();
      const [publisher, consumer] = [await open(prefix), await open(prefix)];
      const received: ReceivedMessage[] = [];
      const c = await consumer.consume({
        group: 'g',
        subjects: ['account.*'],
        handler: async (m) => void received.push(m),
      });
      const before = [messageOf('account-1', 1), messageOf('account-1', 2)];
      await publisher.publish(before);
      await until(() => received.length >= 2, 'the messages before the restart', 10_000);

      try {
        await stopNatsServer();
        // (another stream: a timed-out publish may still reach the server from the reconnect buffer, which is fine)
        await assert.rejects(
          publisher.publish([messageOf('other-1', 1)]),
          (error: unknown) => {
            assert.ok(error instanceof TransportUnavailableError, `${String(error)} says the server is unavailable`);
            assert.match(error.message, /NATS transport: publish: /);
            return true;
          },
          'publishing fails while the server is down',
        );
      } finally {
        await startNatsServer(30_000);
      }
      await waitForNats(30_000);

      const afterRestart = [messageOf('account-1', 3), messageOf('account-1', 4)];
      // The client reconnects by itself; publish (at least once) until the restarted server confirms.
      await until(
        async () => {
          try {
            await publisher.publish(afterRestart);
            return true;
          } catch {
            await sleep(250);
            return false;
          }
        },
        'a publish confirmed by the restarted server',
        30_000,
      );
      await until(() => received.some((m) => m.id === afterRestart[1]!.id), 'the messages after the restart', 40_000);
      await c.stop();
      const ids = received.map((m) => m.id);
      for (const m of [...before, ...afterRestart])
        assert.ok(ids.includes(m.id), `received ${m.headers['eventline-version']}`);
      // At least once: JetStream 2.9 may deliver acknowledged messages again after a restart (a CI run got 1, 2, 1, 2,
      // 3, 4: the ack floor it had confirmed was not on disk), and the consumer's inbox absorbs those. What must hold
      // is the order: no message is delivered before every earlier message of its stream was, and the first
      // deliveries are exactly 1, 2, 3, 4.
      const versions = received.map((m) => Number(m.headers['eventline-version']));
      let highest = 0;
      for (const [i, v] of versions.entries()) {
        assert.ok(
          v <= highest + 1,
          `delivery ${i} is version ${v} before version ${highest + 1} was delivered (${versions.join(', ')})`,
        );
        highest = Math.max(highest, v);
      }
      assert.deepEqual([...new Set(versions)], [1, 2, 3, 4], `first deliveries in order (${versions.join(', ')})`);
    });
  });
}

function messageOf(streamId: string, version: number, type = 'Happened'): TransportMessage {
  const id = newId();
  const category = streamId.slice(0, streamId.indexOf('-'));
  const event = {
    id,
    type,
    streamId,
    version,
    position: String(version),
    recordedAt: new Date().toISOString(),
    data: { version },
    metadata: {},
  };
  return {
    id,
    subject: `${category}.${type}`,
    streamId,
    body: JSON.stringify(event),
    headers: { 'eventline-type': type, 'eventline-stream': streamId, 'eventline-version': String(version) },
  };
}
