// Reaching and restarting the machine's RabbitMQ (AMQP_URL, default amqp://guest:guest@127.0.0.1:5672), shared by
// rabbitmq.test.ts and publisher-faults.test.ts.
import { execFile } from 'node:child_process';
import { createConnection } from 'node:net';
import { promisify } from 'node:util';
import { DEFAULT_AMQP_URL, deleteRabbitMqTopology, type RabbitMqTransport } from '@eventline/rabbitmq';

export const url = process.env.AMQP_URL ?? DEFAULT_AMQP_URL;
const target = new URL(url.replace(/^amqps?:/, 'http:'));
export const host = target.hostname || '127.0.0.1';
export const port = Number(target.port || 5672);
export const run = promisify(execFile);

export function portOpen(timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (open: boolean) => {
      socket.destroy();
      resolve(open);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function rabbitmqctl(...args: string[]): Promise<void> {
  await run('rabbitmqctl', args, { timeout: 120_000 });
}

/** Waits (bounded) until RabbitMQ accepts connections on its port and answers `rabbitmq-diagnostics ping`. */
export async function waitForRabbitMq(ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await portOpen(1000)) {
      const pinged = await run('rabbitmq-diagnostics', ['-q', 'ping'], { timeout: 30_000 }).then(
        () => true,
        () => false,
      );
      if (pinged) return;
    }
    if (Date.now() > deadline) throw new Error(`RabbitMQ did not come back within ${ms} ms`);
    await delay(500);
  }
}

/** Starts RabbitMQ's application again (or the server, with `rabbitmq-server -detached`) and waits until it answers. */
export async function startRabbitMq(): Promise<void> {
  await rabbitmqctl('start_app').catch(async () => {
    await run('rabbitmq-server', ['-detached'], { timeout: 60_000 }).catch(() => undefined);
  });
  await waitForRabbitMq(120_000);
}

/** Restarts RabbitMQ (`rabbitmqctl stop_app`, then `start_app`); it is started again whatever happens. */
export async function restartRabbitMq(during: () => Promise<void> = async () => undefined): Promise<void> {
  try {
    await rabbitmqctl('stop_app');
    await during();
  } finally {
    await startRabbitMq();
  }
}

/** Closes the transports and deletes every queue and exchange they declared (a test namespace's clean-up). */
export function deleteTopology(transports: readonly RabbitMqTransport[]): Promise<void> {
  return deleteRabbitMqTopology(transports, url);
}
