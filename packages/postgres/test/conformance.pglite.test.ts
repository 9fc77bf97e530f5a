// tier: integration
import { after } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { describeEventStoreConformance } from '@eventline/core/testing';
import { createPGliteStore } from '@eventline/postgres';
import { uniqueSchema } from './helpers.js';

// Starting PGlite takes seconds: one in-memory instance for the file, a new schema per store.
const db = new PGlite('memory://');

describeEventStoreConformance({
  name: 'PGlite',
  async create(options) {
    const store = createPGliteStore({ ...options, db, schema: uniqueSchema('conf') });
    await store.migrate();
    return store;
  },
});

after(async () => {
  await db.close();
});
