/**
 * A child process of the bench that only reads the log, so its peak resident memory is the read's and nothing else's
 * (`store.readAll.catchup.rss*`). Both modes load the same modules; only the read differs.
 * Usage: node --conditions=source --import tsx bench/src/rss-child.ts '<RssRequest as JSON>'; prints an RssResponse.
 */
import { createPostgresStore } from '@eventline/postgres';
import pg from 'pg';
import { DATABASE_URL } from './harness.js';
import { preparedQueries, rawReadAll } from './raw.js';

export type RssRequest =
  | { mode: 'store'; schema: string; count: number; pageSize: number }
  | { mode: 'raw'; table: string; count: number; pageSize: number };

export interface RssResponse {
  events: number;
  peakRssMiB: number;
}

async function read(request: RssRequest): Promise<number> {
  if (request.mode === 'store') {
    const store = createPostgresStore({ connectionString: DATABASE_URL, schema: request.schema, poolSize: 1 });
    try {
      let count = 0;
      for await (const _event of store.readAll({ pageSize: request.pageSize })) if (++count >= request.count) break;
      return count;
    } finally {
      await store.close();
    }
  }
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  try {
    return await rawReadAll(preparedQueries(pool), request.table, request.pageSize, request.count);
  } finally {
    await pool.end();
  }
}

const events = await read(JSON.parse(process.argv[2]!) as RssRequest);
// maxRSS is the process's high-water mark, in KiB.
const response: RssResponse = { events, peakRssMiB: process.resourceUsage().maxRSS / 1024 };
process.stdout.write(`${JSON.stringify(response)}\n`);
