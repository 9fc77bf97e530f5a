// tier: integration
// Runs against the machine's RabbitMQ (AMQP_URL, default amqp://guest:guest@127.0.0.1:5672). Each test uses its own
// namespace (exchange, stream, queues), deleted at the end. The last test restarts RabbitMQ (rabbitmqctl stop_app /
// start_app) and always brings it back; the tests of this package live in this one file so that nothing else of the
// package runs against the broker while it restarts. Without RabbitMQ the tests are skipped, except under CI=true,
// where they fail.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import amqp, { type ChannelModel, type GetMessage } from 'amqplib';
import {
  newId,
  TransportClosedError,
  TransportConfigurationError,
  TransportUnavailableError,
  type ReceivedMessage,
} from '@eventline/core';
import { createTestClock, describeTransportConformance, transportMessages, until } from '@eventline/core/testing';
import { createRabbitMqTransport, type RabbitMqTransport, type RabbitMqTransportOptions } from '@eventline/rabbitmq';
import { delay, deleteTopology, host, port, portOpen, rabbitmqctl, startRabbitMq, url } from './helpers.js';

const reachable = await portOpen();
const skip =
  !reachable && process.env.CI !== 'true'
    ? `RabbitMQ is not reachable at ${host}:${port} (under CI=true this fails instead)`
    : false;

/** Every client a test made, by namespace, so that the namespace's exchanges and queues can be deleted. */
const clients = new Map<string, RabbitMqTransport[]>();
const errors: Error[] = [];

function client(namespace: string, options: RabbitMqTransportOptions = {}): RabbitMqTransport {
  const transport = createRabbitMqTransport({
    url,
    prefix: namespace,
    onError: (error) => void errors.push(error),
    ...options,
  });
  clients.set(namespace, [...(clients.get(namespace) ?? []), transport]);
  return transport;
}

async function deleteNamespace(namespace: string): Promise<void> {
  const transports = clients.get(namespace) ?? [];
  clients.delete(namespace);
  await deleteTopology(transports);
}

function namespace(): string {
  return `rmqtest${newId().replace(/-/g, '').slice(-12)}`;
}

/** Versions of each stream never go back (a redelivered message may repeat in place, nothing overtakes). */
function assertNonDecreasingPerStream(messages: readonly ReceivedMessage[]): void {
  const last = new Map<string, number>();
  for (const message of messages) {
    const version = Number(message.headers['eventline-version']);
    assert.ok(
      version >= (last.get(message.streamId) ?? 0),
      `stream ${message.streamId}: version ${version} after ${last.get(message.streamId)}`,
    );
    last.set(message.streamId, version);
  }
}

describe('RabbitMQ transport', { skip }, () => {
  after(async () => {
    for (const name of [...clients.keys()]) await deleteNamespace(name);
  });

  describeTransportConformance({
    name: 'RabbitMQ',
    connect: async (name) => client(name),
    crash: async (transport) => (transport as RabbitMqTransport).destroy(),
    cleanup: deleteNamespace,
    redeliveryTimeoutMs: 5_000,
  });

  describe('RabbitMQ specifics', () => {
    it(
      'publishes to a durable topic exchange: routing key <category>.<type>, persistent, message id and headers',
      { timeout: 30_000 },
      async () => {
        const name = namespace();
        const transport = client(name);
        const [message] = transportMessages(['account-7'], 1);
        await transport.publish([]); // declares the exchange and the stream
        const connection = await amqp.connect(url);
        try {
          const channel = await connection.createChannel();
          await channel.checkExchange(transport.exchange);
          const { queue } = await channel.assertQueue('', { exclusive: true });
          await channel.bindQueue(queue, transport.exchange, 'account.*');
          await transport.publish([message!]);
          let got: GetMessage | false = false;
          for (let i = 0; i < 100 && got === false; i++) {
            got = await channel.get(queue, { noAck: true });
            if (got === false) await delay(50);
          }
          assert.ok(got, 'the message reached a queue bound with account.*');
          assert.equal(got.fields.exchange, transport.exchange);
          assert.equal(got.fields.routingKey, 'account.Happened');
          assert.equal(got.properties.deliveryMode, 2, 'persistent');
          assert.equal(got.properties.messageId, message!.id);
          assert.equal(got.properties.headers?.['eventline-stream'], 'account-7');
          assert.equal(got.properties.headers?.['eventline-version'], '1');
          assert.equal(got.content.toString(), message!.body);
          await channel.close();
        } finally {
          await connection.close();
        }
      },
    );

    it(
      "from: 'new' starts after what was published before the group existed; 'oldest' gets everything retained",
      { timeout: 30_000 },
      async () => {
        const name = namespace();
        const [publisher, consumer] = [client(name), client(name)];
        const early = transportMessages(['account-1', 'payment-1'], 3);
        await publisher.publish(early);
        const fresh: ReceivedMessage[] = [];
        const all: ReceivedMessage[] = [];
        const consumers = [
          await consumer.consume({ group: 'fresh', from: 'new', handler: async (m) => void fresh.push(m) }),
          await consumer.consume({ group: 'all', handler: async (m) => void all.push(m) }),
        ];
        const late = transportMessages(['account-1', 'payment-1'], 2, 4);
        await publisher.publish(late);
        await until(
          () => fresh.length >= late.length && all.length >= early.length + late.length,
          'both groups',
          15_000,
        );
        await delay(200);
        for (const c of consumers) await c.stop();
        assert.deepEqual(fresh.map((m) => m.id).sort(), late.map((m) => m.id).sort());
        assert.deepEqual(all.map((m) => m.id).sort(), [...early, ...late].map((m) => m.id).sort());
      },
    );

    it(
      'stop() finishes the message in progress and stores the cursor: the next member continues after it',
      { timeout: 30_000 },
      async () => {
        const name = namespace();
        const [publisher, first, second] = [client(name), client(name), client(name)];
        const messages = transportMessages(['account-1'], 5);
        let release!: () => void;
        const released = new Promise<void>((resolve) => (release = resolve));
        let started!: () => void;
        const inProgress = new Promise<void>((resolve) => (started = resolve));
        const handledByFirst: string[] = [];
        const c1 = await first.consume({
          group: 'g',
          handler: async (m) => {
            started();
            await released;
            handledByFirst.push(m.id);
          },
        });
        await publisher.publish(messages);
        await inProgress;
        let stopped = false;
        const stopping = c1.stop().then(() => (stopped = true));
        await delay(300);
        assert.equal(stopped, false, 'stop() waits for the message in progress');
        release();
        await stopping;
        assert.deepEqual(handledByFirst, [messages[0]!.id]);
        const received: ReceivedMessage[] = [];
        const c2 = await second.consume({ group: 'g', handler: async (m) => void received.push(m) });
        await until(() => received.length >= 4, 'the rest of the stream', 15_000);
        await delay(200);
        await c2.stop();
        assert.deepEqual(
          received.map((m) => m.id),
          messages.slice(1).map((m) => m.id),
          'no redelivery of the acknowledged message',
        );
        assert.ok(received.every((m) => m.deliveryCount === 1));
      },
    );

    it(
      'members joining, crashing and leaving mid-stream: nothing lost, each stream in order, the work shared',
      { timeout: 90_000 },
      async () => {
        const name = namespace();
        const publisher = client(name);
        const handled: Array<ReceivedMessage & { by: string }> = [];
        const dead = new Set<string>();
        const member = async (by: string) => {
          const transport = client(name);
          const consumer = await transport.consume({
            group: 'g',
            handler: async (m) => {
              await delay(Math.random() * 2);
              if (!dead.has(by)) handled.push({ ...m, by }); // a crashed process has no effects after it died
            },
          });
          return { transport, consumer };
        };
        const messages = transportMessages(
          Array.from({ length: 12 }, (_, i) => `account-${i}`),
          60,
        );
        const a = await member('a');
        const b = await member('b');
        await publisher.publish(messages.slice(0, 200));
        await until(() => handled.length >= 60, 'a first part', 30_000);
        const c = await member('c'); // joins: takes partitions over
        await publisher.publish(messages.slice(200, 400));
        await until(() => handled.length >= 200, 'a second part', 30_000);
        dead.add('a');
        a.transport.destroy(); // crashes: its partitions fail over to the next member in line
        await until(() => handled.length >= 300, 'a third part', 30_000);
        await b.consumer.stop(); // leaves gracefully
        const d = await member('d'); // joins: takes partitions over
        await publisher.publish(messages.slice(400));
        const ids = () => new Set(handled.map((m) => m.id));
        await until(() => messages.every((m) => ids().has(m.id)), 'every message', 60_000);
        await delay(300);
        await Promise.all([c.consumer.stop(), d.consumer.stop()]);
        assertNonDecreasingPerStream(handled);
        const repeats = handled.length - ids().size;
        assert.ok(repeats <= 4, `only messages in progress at the crash are handled again (${repeats})`);
        const by = new Set(handled.map((m) => m.by));
        for (const name of ['a', 'b', 'c', 'd']) assert.ok(by.has(name), `member ${name} took part`);
      },
    );

    it('a member with another partition count is refused with a clear error', { timeout: 30_000 }, async () => {
      const name = namespace();
      const seen: Error[] = [];
      const four = client(name);
      const two = client(name, { partitions: 2, onError: (error) => void seen.push(error) });
      const c4 = await four.consume({ group: 'g', handler: async () => undefined });
      const c2 = await two.consume({ group: 'g', handler: async () => undefined });
      await c4.stop(); // the cursor tokens go to the next member in line: the one with 2 partitions
      await until(() => seen.some((error) => /same number/.test(error.message)), 'the error', 10_000);
      const refusal = seen.find((error) => /same number/.test(error.message));
      assert.ok(refusal instanceof TransportConfigurationError, 'a configuration error');
      assert.equal(refusal.transport, 'rabbitmq');
      await c2.stop();
    });

    it(
      'a stream with other retention arguments is a clear error, not a silent mismatch',
      { timeout: 30_000 },
      async () => {
        const name = namespace();
        await client(name, { retention: { maxAge: '1D' } }).publish([]);
        await assert.rejects(client(name, { retention: { maxAge: '2D' } }).publish([]), (error: unknown) => {
          assert.ok(error instanceof TransportConfigurationError, String(error));
          assert.match(error.message, /other retention arguments/);
          return true;
        });
      },
    );

    it('publish fails clearly when RabbitMQ is not reachable, and after close()', { timeout: 30_000 }, async () => {
      const nowhere = createRabbitMqTransport({ url: 'amqp://guest:guest@127.0.0.1:1', prefix: namespace() });
      await assert.rejects(nowhere.publish(transportMessages(['account-1'], 1)), (error: unknown) => {
        assert.ok(error instanceof TransportUnavailableError, String(error));
        assert.equal(error.code, 'TRANSPORT_UNAVAILABLE');
        assert.equal(error.operation, 'connect');
        assert.equal(error.retryable, true);
        assert.match(error.message, /not reachable/);
        return true;
      });
      await nowhere.close();
      const name = namespace();
      const transport = client(name);
      await transport.publish(transportMessages(['account-1'], 1));
      await transport.close();
      for (const attempt of [
        transport.publish(transportMessages(['account-1'], 1)),
        transport.consume({ group: 'g', handler: async () => undefined }),
      ])
        await assert.rejects(attempt, (error: unknown) => {
          assert.ok(error instanceof TransportClosedError, String(error));
          assert.equal(error.code, 'TRANSPORT_CLOSED');
          assert.match(error.message, /closed/);
          return true;
        });
    });

    it('bad options are refused at once with a configuration error', async () => {
      const configuration = (error: unknown) => {
        assert.ok(error instanceof TransportConfigurationError, String(error));
        assert.equal(error.transport, 'rabbitmq');
        return true;
      };
      assert.throws(() => createRabbitMqTransport({ url, partitions: 0 }), configuration);
      assert.throws(() => createRabbitMqTransport({ url, heartbeatMs: 1.5 }), configuration);
      const transport = client(namespace());
      await assert.rejects(transport.consume({ group: '', handler: async () => undefined }), configuration);
      await assert.rejects(
        transport.consume({ group: 'g', retryDelayMs: -1, handler: async () => undefined }),
        configuration,
      );
    });

    it('a failing handler is retried in place after retryDelayMs of the clock', { timeout: 30_000 }, async () => {
      const clock = createTestClock();
      const transport = client(namespace(), { clock });
      const deliveries: number[] = [];
      const consumer = await transport.consume({
        group: 'g',
        retryDelayMs: 60_000,
        handler: async (m) => {
          deliveries.push(m.deliveryCount);
          if (deliveries.length === 1) throw new Error('fails once');
        },
      });
      await transport.publish(transportMessages(['account-1'], 1));
      await until(() => deliveries.length === 1, 'the first delivery', 15_000);
      await clock.untilSleeping(2); // the heartbeat and the retry delay
      await clock.advance(59_999);
      assert.deepEqual(deliveries, [1], 'not retried before the delay');
      await clock.advance(1);
      await until(() => deliveries.length === 2, 'the retry', 15_000);
      await consumer.stop();
      assert.deepEqual(deliveries, [1, 2]);
    });

    it(
      'reconnects after delays of the clock that double from initialDelayMs up to maxDelayMs',
      { timeout: 30_000 },
      async () => {
        const clock = createTestClock();
        const models: ChannelModel[] = [];
        let calls = 0;
        let refusals = 0;
        const transport = client(namespace(), {
          clock,
          reconnect: { initialDelayMs: 1_000, maxDelayMs: 4_000 },
          connection: async () => {
            calls++;
            if (refusals > 0) {
              refusals--;
              throw new Error('refused by the test');
            }
            const model = await amqp.connect(url);
            models.push(model);
            return model;
          },
        });
        await transport.publish(transportMessages(['account-1'], 1));
        assert.equal(calls, 1);
        refusals = 3;
        await models[0]!.close(); // the connection is lost: the transport reconnects on its own
        await until(() => !transport.connected, 'the transport to notice', 10_000);
        for (const [delay, attempt] of [
          [1_000, 2],
          [2_000, 3],
          [4_000, 4],
          [4_000, 5], // at most maxDelayMs
        ] as const) {
          await until(() => clock.sleepers > 0 && calls === attempt - 1, `waiting before attempt ${attempt}`, 10_000);
          await clock.advance(delay - 1);
          assert.equal(calls, attempt - 1, `attempt ${attempt} not before ${delay} ms`);
          await clock.advance(1);
          await until(() => calls === attempt, `attempt ${attempt}`, 10_000);
        }
        await until(() => transport.connected, 'the new connection', 10_000);
        await transport.publish(transportMessages(['account-1'], 1));
        assert.ok(
          errors.some((error) => error instanceof TransportUnavailableError && /connection lost/.test(error.message)),
          'the lost connection was reported as a TransportUnavailableError',
        );
      },
    );

    // Last: it restarts the machine's RabbitMQ.
    it(
      'a consumer keeps receiving after RabbitMQ is restarted; publishing while it is down fails clearly',
      { timeout: 240_000 },
      async () => {
        const name = namespace();
        const reconnect = { maxAttempts: 200, maxDelayMs: 1000 };
        const reports: Error[] = [];
        const publisher = client(name, { reconnect });
        const consumer = client(name, { reconnect, onError: (error) => void reports.push(error) });
        const received: ReceivedMessage[] = [];
        const c = await consumer.consume({
          group: 'survivor',
          retryDelayMs: 100,
          handler: async (m) => void received.push(m),
        });
        const before = transportMessages(['account-1', 'account-2', 'payment-1'], 4);
        await publisher.publish(before);
        const seen = () => new Set(received.map((m) => m.id));
        await until(() => before.every((m) => seen().has(m.id)), 'the messages before the restart', 15_000);
        try {
          await rabbitmqctl('stop_app');
          await until(() => !publisher.connected && !consumer.connected, 'both clients to notice', 30_000);
          await assert.rejects(
            publisher.publish(transportMessages(['account-1'], 1)),
            /disconnected|not reachable|connection lost/,
          );
        } finally {
          await startRabbitMq();
        }
        const afterRestart = transportMessages(['account-1', 'account-2', 'payment-1'], 4, 5);
        const deadline = Date.now() + 90_000;
        for (;;) {
          try {
            await publisher.publish(afterRestart);
            break;
          } catch (error) {
            if (Date.now() > deadline) throw error;
            await delay(500);
          }
        }
        await until(() => afterRestart.every((m) => seen().has(m.id)), 'the messages after the restart', 90_000);
        await delay(300);
        await c.stop();
        assert.ok(
          reports.some((error) => /connection lost/.test(error.message)),
          'the consumer reported the lost connection',
        );
        assertNonDecreasingPerStream(received);
        assert.deepEqual([...seen()].sort(), [...before, ...afterRestart].map((m) => m.id).sort());
      },
    );
  });
});
