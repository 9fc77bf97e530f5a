// Type-checked by test/packaging.test.ts with `tsc --module nodenext --moduleResolution nodenext --strict --noEmit`
// in a project outside the workspace that installed the packed tarballs: the published .d.ts files as a user sees them.
import { createInMemoryStore, defineEvent, eventRegistry, type EventStore, type Transport } from '@eventline/core';
import { createTestClock, type TestClock } from '@eventline/core/testing';
import { createNatsTransport } from '@eventline/nats';
import { createPGliteStore, createPostgresStore, type PGliteEventStore } from '@eventline/postgres';
import { createRabbitMqTransport } from '@eventline/rabbitmq';
import { createRedisTransport } from '@eventline/redis';
import { createHttpApi, type HttpApiOptions } from '@eventline/server';
import { z } from 'zod';

const Deposited = defineEvent('MoneyDeposited', z.object({ amount: z.number().int().positive() }));
const events = eventRegistry([Deposited]);

export async function balanceOf(store: EventStore, streamId: string): Promise<number> {
  let balance = 0;
  for await (const event of store.readStream(streamId)) if (Deposited.is(event)) balance += event.data.amount;
  return balance;
}

export function stores(clock: TestClock = createTestClock()): [EventStore, PGliteEventStore, EventStore] {
  return [
    createInMemoryStore({ events, clock }),
    createPGliteStore({ dataDir: 'memory://', events }),
    createPostgresStore({ connectionString: 'postgres://postgres@127.0.0.1:5432/test', events }),
  ];
}

export const transports: ReadonlyArray<() => Transport | Promise<Transport>> = [
  () => createNatsTransport(),
  () => createRabbitMqTransport(),
  () => createRedisTransport(),
];

export async function serve(options: HttpApiOptions): Promise<string> {
  return createHttpApi(options).listen({ host: '127.0.0.1', port: 0 });
}
