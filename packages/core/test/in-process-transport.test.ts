import { createInProcessBroker } from '@eventline/core';
import { describeTransportConformance } from '@eventline/core/testing';

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
