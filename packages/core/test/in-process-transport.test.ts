// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createInProcessBroker } from '@eventline/core';
import { createTestClock, describeTransportConformance, until } from '@eventline/core/testing';

const brokers = new Map<string, ReturnType<typeof createInProcessBroker>>();
describeTransportConformance({
  name: 'in-process',
  connect: async (namespace) => {
    let broker = brokers.get(namespace);
    if (!broker) brokers.set(namespace, (broker = createInProcessBroker()));
    return broker.connect();
  },
  redeliveryTimeoutMs: 100,
});

describe('in-process broker on a clock', () => {
  it('delivers a failed message again after retryDelayMs, not before, and the stream waits for it', async () => {
    const clock = createTestClock();
    const transport = createInProcessBroker({ clock }).connect();
    const message = (id: string) => ({
      id,
      subject: 'account.Deposited',
      streamId: 'account-1',
      body: '{}',
      headers: {},
    });
    const deliveries: string[] = [];
    let failing = true;
    const consumer = await transport.consume({
      group: 'g',
      retryDelayMs: 1_000,
      handler: async (received) => {
        deliveries.push(`${received.id}#${received.deliveryCount}`);
        if (received.id === 'm1' && failing) {
          failing = false;
          throw new Error('not yet');
        }
      },
    });
    try {
      await transport.publish([message('m1'), message('m2')]);
      await until(() => deliveries.length === 1, 'the first delivery');
      await clock.untilSleeping(1);
      await clock.advance(999);
      assert.deepEqual(deliveries, ['m1#1'], 'no redelivery before retryDelayMs, and m2 waits behind m1');
      await clock.advance(1);
      await until(() => deliveries.length === 3, 'the redelivery, then the next message of the stream');
      assert.deepEqual(deliveries, ['m1#1', 'm1#2', 'm2#1']);
    } finally {
      await consumer.stop();
      await transport.close();
    }
  });
});
