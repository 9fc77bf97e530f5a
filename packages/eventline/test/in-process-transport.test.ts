import { createInProcessBroker } from 'eventline';
import { describeTransportConformance } from 'eventline/testing';

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
