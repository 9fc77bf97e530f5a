// tier: integration
import { after, before } from 'node:test';
import pg from 'pg';
import { describeEventStoreConformance } from '@eventline/core/testing';
import { createPostgresStore } from '@eventline/postgres';
import { DATABASE_URL, cleanUp, connectForTests, uniqueSchema } from './helpers.js';

// One pool for every store of the suite (each store gets its own schema); stores do not end a pool they were given.
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 20, application_name: 'eventline-conformance' });
pool.on('error', () => {});
const schemas: string[] = [];
let admin: pg.Client | undefined;

before(async () => {
  admin = await connectForTests();
});

describeEventStoreConformance({
  name: 'PostgreSQL',
  async create(options) {
    const schema = uniqueSchema('conf');
    schemas.push(schema);
    const store = createPostgresStore({ ...options, pool, schema });
    await store.migrate();
    return store;
  },
  async teardown() {
    await pool.end();
  },
});

after(async () => {
  await cleanUp(admin, schemas);
});
