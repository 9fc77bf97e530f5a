import { execFile } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { promisify } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { until } from '@eventline/core/testing';
export { until };

export const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const url = new URL(NATS_URL);
const HOST = url.hostname;
const PORT = Number(url.port || 4222);

/** Whether something accepts TCP connections on the NATS port (within `timeoutMs`). */
export function portOpen(timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: HOST, port: PORT });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Waits (bounded) until NATS accepts connections; throws a clear error naming the service otherwise. */
export async function waitForNats(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await portOpen())) {
    if (Date.now() > deadline)
      throw new Error(`NATS did not accept connections on ${HOST}:${PORT} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * Whether the NATS tests can run. Under CI=true a missing server is an error (the tests fail, never skip); elsewhere
 * the caller skips the tests with the returned reason.
 */
export async function natsAvailability(): Promise<{ available: true } | { available: false; reason: string }> {
  if (await portOpen(2_000)) return { available: true };
  const reason = `NATS is not reachable at ${NATS_URL} (start nats-server with JetStream: nats-server -a 127.0.0.1 -p 4222 -js)`;
  if (process.env.CI === 'true') throw new Error(`${reason}; under CI=true the NATS tests fail instead of skipping`);
  return { available: false, reason };
}

/** Deletes a JetStream stream (if it exists), with its own short-lived connection. */
export async function deleteStream(stream: string): Promise<void> {
  const nc = await connect({ servers: NATS_URL, name: 'eventline-nats-test-cleanup' });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(stream).catch(() => undefined);
  } finally {
    await nc.close();
  }
}

/** Runs `fn` with a JetStream manager on its own connection. */
export async function withManager<T>(
  fn: (jsm: Awaited<ReturnType<typeof jetstreamManager>>) => Promise<T>,
): Promise<T> {
  const nc = await connect({ servers: NATS_URL, name: 'eventline-nats-test' });
  try {
    return await fn(await jetstreamManager(nc));
  } finally {
    await nc.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- restarting the machine's nats-server (fault test) -------------------------------------------------------------

const NATS_SERVER = '/usr/sbin/nats-server';
/** The machine's start command for NATS, as the CI script runs it. */
const START = [
  '--start',
  '--oknodo',
  '--background',
  '--exec',
  NATS_SERVER,
  '--',
  '-a',
  '127.0.0.1',
  '-p',
  '4222',
  '-js',
  '-sd',
  '/var/lib/nats-server',
  '-l',
  '/var/log/nats-server.log',
];

/** The pid of the machine's nats-server listening on port 4222 (found in /proc by executable and arguments). */
export async function findNatsServerPid(): Promise<number> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').filter(Boolean);
      const exe = await readlink(`/proc/${entry}/exe`).catch(() => args[0] ?? '');
      const isServer = exe === NATS_SERVER || args[0] === NATS_SERVER;
      const port = args[args.indexOf('-p') + 1] ?? args[args.indexOf('--port') + 1];
      if (isServer && args.includes('-p') && port === '4222') found.push(Number(entry));
    } catch {
      // the process ended meanwhile, or is not ours to read
    }
  }
  if (found.length !== 1)
    throw new Error(`expected one ${NATS_SERVER} on port 4222, found ${found.length} (${found.join(', ')})`);
  return found[0]!;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Stops the machine's nats-server (SIGTERM to its pid) and waits, bounded, until it is gone. */
export async function stopNatsServer(timeoutMs = 20_000): Promise<void> {
  const pid = await findNatsServerPid();
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (alive(pid) || (await portOpen(200))) {
    if (Date.now() > deadline) throw new Error(`nats-server (pid ${pid}) did not stop within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Starts the machine's nats-server with the machine's start command and waits until it accepts connections. */
export async function startNatsServer(timeoutMs = 30_000): Promise<void> {
  await promisify(execFile)('start-stop-daemon', START, { timeout: 10_000 });
  await waitForNats(timeoutMs);
}
