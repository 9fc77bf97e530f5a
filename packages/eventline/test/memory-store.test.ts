import { createInMemoryStore } from 'eventline';
import { describeEventStoreConformance } from 'eventline/testing';

describeEventStoreConformance({ name: 'in-memory', create: async (options) => createInMemoryStore(options) });
