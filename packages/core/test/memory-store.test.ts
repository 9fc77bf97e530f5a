// tier: unit
import { createInMemoryStore } from '@eventline/core';
import { describeEventStoreConformance } from '@eventline/core/testing';

describeEventStoreConformance({ name: 'in-memory', create: async (options) => createInMemoryStore(options) });
