/**
 * One opener per PGlite data directory. Two PGlite instances on one directory (PGlite writes the same fake pid in
 * postmaster.pid each time, so PostgreSQL's own check does not see the other) overwrite each other's pages: acknowledged
 * batches are lost and indexes corrupted. These tests pin down the lock beside the directory (`<dataDir>.lock`):
 * - a second store in this process, by any path to the directory, is refused, naming this process;
 * - a directory another process holds is refused, naming that process; once it is SIGKILLed, the directory opens and
 *   holds every batch the killed process had acknowledged;
 * - restarters racing over a stale lock: exactly one opens, the others are told who did;
 * - close() releases the lock: the directory opens again, in this process or another;
 * - stale locks (dead holder, reused pid, this pid from an earlier process, a takeover left half-done, a damaged lock
 *   file once old) are taken over; a lock from another host, or a fresh damaged one, is not.
 * The children run test/fixtures/pglite-lock-holder.ts.
 */
// tier: faults
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { EventlineError, newId } from '@eventline/core';
import { createPGliteStore, DataDirectoryLockedError, type PGliteEventStore } from '@eventline/postgres';
import { collect } from '@eventline/core/testing';
import { FixtureProcess } from './child-process.js';

const HOLDER = fileURLToPath(new URL('./fixtures/pglite-lock-holder.ts', import.meta.url));
/** Bounded guards for a child's start (tsx + PGlite take seconds) and its writes; never timing assertions. */
const START_MS = 60_000;

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

/** A new temporary directory (removed at the end); the data directory inside it does not exist yet. */
function tempDataDir(): { root: string; dataDir: string; lockFile: () => string } {
  const root = mkdtempSync(join(tmpdir(), 'eventline-lock-'));
  roots.push(root);
  const dataDir = join(root, 'data');
  return { root, dataDir, lockFile: () => `${realpathSync(root)}/data.lock` };
}

function readLock(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
}

/** A process's start time in clock ticks after boot (field 22 of /proc/<pid>/stat), as the lock records it. */
function startTimeOf(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

function bootId(): string {
  return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}

/** A lock file as a holder writes it (see src/data-dir-lock.ts). */
function writeLock(path: string, holder: Partial<Record<string, unknown>>): void {
  const content = {
    pid: 1,
    startTime: null,
    bootId: bootId(),
    hostname: hostname(),
    threadId: 0,
    createdAt: new Date().toISOString(),
    token: newId(),
    ...holder,
  };
  writeFileSync(path, JSON.stringify(content));
}

function assertLocked(fn: () => unknown, expected: Partial<DataDirectoryLockedError>): DataDirectoryLockedError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(
    caught instanceof DataDirectoryLockedError,
    `expected DataDirectoryLockedError, got ${caught === undefined ? 'no error (it opened)' : String(caught)}`,
  );
  assert.ok(caught instanceof EventlineError);
  assert.equal(caught.code, 'DATA_DIR_LOCKED');
  for (const [field, value] of Object.entries(expected))
    assert.deepEqual(caught[field as keyof DataDirectoryLockedError], value, field);
  return caught;
}

/** A child holding (or trying to hold) a data directory: its stdout lines and its exit. */
class Holder extends FixtureProcess {
  constructor(dataDir: string, options: { append?: boolean; go?: boolean } = {}) {
    super(HOLDER, {
      EVENTLINE_LOCK_DIR: dataDir,
      EVENTLINE_LOCK_APPEND: options.append ? '1' : '0',
      EVENTLINE_LOCK_GO: options.go ? '1' : '0',
    });
  }

  /** The first line matching `test`, once printed; fails when the child exits first or `ms` pass (a guard). */
  async line(test: (line: string) => boolean, what: string, ms = START_MS): Promise<string> {
    const found = await this.waitForLine(test, ms);
    if (found !== undefined) return found;
    if (!this.alive) assert.fail(`child ${this.pid} exited before ${what}: ${this.describe()}`);
    return assert.fail(`child ${this.pid}: no ${what} within ${ms} ms: ${this.describe()}`);
  }

  ready(): Promise<string> {
    return this.line((line) => line.startsWith('ready '), '"ready"');
  }

  /** Its outcome as a racer: `opened` (then ready) or the lock error's JSON. */
  async outcome(): Promise<{ opened: true } | { opened: false; error: Record<string, unknown> }> {
    const line = await this.line((l) => l.startsWith('ready ') || l.startsWith('locked '), '"ready" or "locked"');
    if (line.startsWith('ready ')) return { opened: true };
    return { opened: false, error: JSON.parse(line.slice('locked '.length)) as Record<string, unknown> };
  }

  acked(): Array<{ streamId: string; ids: string[] }> {
    return this.lines
      .filter((l) => l.startsWith('acked '))
      .map((l) => JSON.parse(l.slice('acked '.length)) as { streamId: string; ids: string[] });
  }

  describe(): string {
    return `exit ${this.process.exitCode ?? this.process.signalCode ?? 'running'}; stdout ${JSON.stringify(this.lines.slice(-5))}; stderr ${this.stderr || '(none)'}`;
  }
}

/** Runs `fn` with the children it starts, and SIGKILLs those still running afterwards, whatever happened. */
async function withChildren(
  fn: (start: (dataDir: string, options?: { append?: boolean; go?: boolean }) => Holder) => Promise<void>,
): Promise<void> {
  const children: Holder[] = [];
  try {
    await fn((dataDir, options) => {
      const child = new Holder(dataDir, options);
      children.push(child);
      return child;
    });
  } finally {
    await Promise.all(children.map((child) => child.kill()));
  }
}

/** A child's pid after it exited: a pid that is not alive (the kernel does not hand it out again at once). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

async function closeAll(stores: PGliteEventStore[]): Promise<void> {
  await Promise.all(stores.map((store) => store.close()));
}

describe('PGlite data directory lock: in this process', () => {
  it('refuses a second store on the directory, by any path to it, naming this process', async () => {
    const { root, dataDir, lockFile } = tempDataDir();
    const stores: PGliteEventStore[] = [];
    try {
      const first = createPGliteStore({ dataDir });
      stores.push(first);
      await first.append('acct-1', [{ id: newId(), type: 'Opened', data: {} }]);
      const real = realpathSync(dataDir);

      symlinkSync(dataDir, join(root, 'alias'));
      const paths = [
        dataDir,
        `${dataDir}/`,
        relative(process.cwd(), dataDir),
        join(root, 'alias'),
        `file://${dataDir}`,
      ];
      for (const path of paths) {
        const error = assertLocked(() => stores.push(createPGliteStore({ dataDir: path })), {
          dataDir: real,
          holderPid: process.pid,
          holderHost: hostname(),
          holder: 'this-process',
        });
        assert.match(error.message, new RegExp(`'${real}' is already open in this process \\(pid ${process.pid}\\)`));
        assert.match(error.message, /close\(\) it before opening the directory again, or use another data directory/);
        assert.deepEqual(error.toJSON(), {
          name: 'DataDirectoryLockedError',
          code: 'DATA_DIR_LOCKED',
          message: error.message,
          dataDir: real,
          holderPid: process.pid,
          holderHost: hostname(),
          lockFile: lockFile(),
          holder: 'this-process',
        });
      }
      assert.equal(stores.length, 1, 'no second store was created');
      assert.equal(readLock(lockFile()).pid, process.pid, 'the lock beside the directory names this process');
      assert.equal((await collect(first.readAll())).length, 1, 'the first store is untouched');
    } finally {
      await closeAll(stores);
    }
  });

  it('close() releases the lock: the directory opens again, once', async () => {
    const { dataDir, lockFile } = tempDataDir();
    const stores: PGliteEventStore[] = [];
    try {
      const first = createPGliteStore({ dataDir });
      stores.push(first);
      const id = newId();
      await first.append('acct-1', [{ id, type: 'Opened', data: {} }]);
      await first.close();
      assert.equal(existsSync(lockFile()), false, 'close() removed the lock file');

      const second = createPGliteStore({ dataDir });
      stores.push(second);
      assert.deepEqual(
        (await collect(second.readAll())).map((e) => e.id),
        [id],
      );
      assert.equal(readLock(lockFile()).pid, process.pid);
      assertLocked(() => stores.push(createPGliteStore({ dataDir })), {
        holderPid: process.pid,
        holder: 'this-process',
      });
      await second.close();
      assert.equal(existsSync(lockFile()), false);
    } finally {
      await closeAll(stores);
    }
  });
});

describe('PGlite data directory lock: across processes', () => {
  it('refuses a directory another process holds; after that process is SIGKILLed, opens it with every acknowledged batch', async () => {
    const { dataDir, lockFile } = tempDataDir();
    await withChildren(async (start) => {
      const child = start(dataDir, { append: true });
      await child.ready();
      const error = assertLocked(() => createPGliteStore({ dataDir }), {
        dataDir: realpathSync(dataDir),
        holderPid: child.pid,
        holderHost: hostname(),
        lockFile: lockFile(),
        holder: 'other-process',
      });
      assert.match(error.message, new RegExp(`Stop the process with pid ${child.pid}, or use another data directory`));
      const lock = readLock(lockFile());
      assert.equal(lock.pid, child.pid);
      assert.equal(lock.hostname, hostname());
      assert.equal(lock.startTime, startTimeOf(child.pid));

      // Killed while it appends: 20 acknowledged batches at least, and more in flight.
      await child.line(() => child.acked().length >= 20, '20 acknowledged batches');
      await child.kill();
      const acked = child.acked();
      assert.equal(readLock(lockFile()).pid, child.pid, 'a SIGKILLed holder leaves its lock behind');

      const store = createPGliteStore({ dataDir });
      try {
        assert.equal(readLock(lockFile()).pid, process.pid, 'the stale lock was taken over');
        const stored = new Set((await collect(store.readAll())).map((e) => e.id));
        const lost = acked.flatMap((batch) => batch.ids).filter((id) => !stored.has(id));
        assert.deepEqual(lost, [], `${lost.length} acknowledged events of ${acked.length * 3} were lost`);
        // The store is healthy: it appends after the killed process's last stream.
        await store.append(`acct-${acked.length + 100}`, [{ id: newId(), type: 'Opened', data: {} }], {
          expectedVersion: 'no_stream',
        });
      } finally {
        await store.close();
      }
    });
  });

  it('a closed store lets another process open the directory', async () => {
    const { dataDir, lockFile } = tempDataDir();
    const store = createPGliteStore({ dataDir });
    await store.append('acct-1', [{ id: newId(), type: 'Opened', data: {} }]);
    await store.close();
    await withChildren(async (start) => {
      const child = start(dataDir);
      await child.ready();
      assertLocked(() => createPGliteStore({ dataDir }), { holderPid: child.pid, holder: 'other-process' });
      assert.equal(readLock(lockFile()).pid, child.pid);
      await child.stop();
      assert.equal(child.process.exitCode, 0, child.describe());
      assert.equal(existsSync(lockFile()), false, 'the child released the lock on close()');
    });
  });

  it('restarters racing over a stale lock: exactly one opens, the others name it', async () => {
    const { dataDir, lockFile } = tempDataDir();
    await withChildren(async (start) => {
      const first = start(dataDir);
      await first.ready();
      await first.kill();
      // Three rounds, each over the lock the last round's winner left when it was killed.
      for (let round = 1; round <= 3; round++) {
        const racers = [1, 2, 3, 4].map(() => start(dataDir, { go: true }));
        await Promise.all(racers.map((racer) => racer.line((l) => l === 'waiting', '"waiting"')));
        for (const racer of racers) racer.process.stdin!.write('go\n');
        const outcomes = await Promise.all(racers.map((racer) => racer.outcome()));
        const winners = racers.filter((_, i) => outcomes[i]!.opened);
        assert.equal(winners.length, 1, `round ${round}: ${winners.length} racers opened the directory`);
        const winner = winners[0]!;
        for (const outcome of outcomes) {
          if (!outcome.opened)
            assert.equal(outcome.error.holderPid, winner.pid, `round ${round}: a loser names the winner`);
        }
        assert.equal(readLock(lockFile()).pid, winner.pid);
        await winner.kill();
      }
      const store = createPGliteStore({ dataDir });
      try {
        assert.deepEqual(await store.migrate(), [], 'the directory is intact');
      } finally {
        await store.close();
      }
    });
  });
});

describe('PGlite data directory lock: stale and foreign locks', () => {
  /** Opens `dataDir` over the lock in place, checks that this process took it over, closes. */
  async function takesOver(dataDir: string, lockFile: string): Promise<void> {
    const store = createPGliteStore({ dataDir });
    try {
      assert.equal(readLock(lockFile).pid, process.pid, 'the lock now names this process');
      assert.equal(readLock(lockFile).startTime, startTimeOf(process.pid));
      assert.deepEqual(await store.migrate(), []);
    } finally {
      await store.close();
    }
  }

  /** A data directory that exists (created and closed once), with no lock. */
  async function existing(): Promise<ReturnType<typeof tempDataDir>> {
    const dir = tempDataDir();
    const store = createPGliteStore({ dataDir: dir.dataDir });
    await store.migrate();
    await store.close();
    assert.equal(existsSync(dir.lockFile()), false);
    return dir;
  }

  it('takes over a lock whose holder is not alive', async () => {
    const { dataDir, lockFile } = await existing();
    writeLock(lockFile(), { pid: await deadPid(), startTime: '12345' });
    await takesOver(dataDir, lockFile());
  });

  it('takes over a lock whose pid now belongs to another process (another start time)', async () => {
    const { dataDir, lockFile } = await existing();
    const other = spawn(process.execPath, ['-e', 'process.stdin.resume()'], { stdio: ['pipe', 'ignore', 'ignore'] });
    const exited = new Promise((resolve) => other.once('exit', resolve));
    try {
      const pid = other.pid!;
      writeLock(lockFile(), { pid, startTime: String(Number(startTimeOf(pid)) - 1) });
      await takesOver(dataDir, lockFile());
      // The same pid with its real start time is its holder: refused.
      writeLock(lockFile(), { pid, startTime: startTimeOf(pid) });
      assertLocked(() => createPGliteStore({ dataDir }), { holderPid: pid, holder: 'other-process' });
    } finally {
      other.kill('SIGKILL');
      await exited;
    }
  });

  it("takes over a lock with this process's pid from an earlier process (a restarted container)", async () => {
    const { dataDir, lockFile } = await existing();
    writeLock(lockFile(), { pid: process.pid, startTime: String(Number(startTimeOf(process.pid)) - 1) });
    await takesOver(dataDir, lockFile());
  });

  it('takes over a lock from before the machine restarted', async () => {
    const { dataDir, lockFile } = await existing();
    writeLock(lockFile(), {
      pid: process.ppid,
      startTime: startTimeOf(process.ppid),
      bootId: '00000000-0000-4000-8000-000000000000',
    });
    await takesOver(dataDir, lockFile());
  });

  it('finishes a takeover that a killed restarter left half-done', async () => {
    const { dataDir, lockFile } = await existing();
    const dead = await deadPid();
    writeLock(lockFile(), { pid: dead, startTime: '1' });
    writeLock(`${lockFile()}.takeover`, { pid: dead, startTime: '2' });
    await takesOver(dataDir, lockFile());
    assert.equal(existsSync(`${lockFile()}.takeover`), false, 'the stale takeover file is gone');
  });

  it('refuses a lock from another host, naming host and pid', async () => {
    const { dataDir, lockFile } = await existing();
    writeLock(lockFile(), { pid: await deadPid(), hostname: 'elsewhere.example', bootId: 'another-boot' });
    const error = assertLocked(() => createPGliteStore({ dataDir }), {
      holderHost: 'elsewhere.example',
      holder: 'other-host',
    });
    assert.match(error.message, /on host 'elsewhere.example'/);
    assert.match(error.message, /if that process is no longer running, delete the lock file/);
  });

  it('refuses a lock file it cannot read while it is fresh, and takes it over once it is old', async () => {
    const { dataDir, lockFile } = await existing();
    for (const damaged of ['', '{"pid":', '{"pid":"x"}', 'null']) {
      writeFileSync(lockFile(), damaged);
      assertLocked(() => createPGliteStore({ dataDir }), { holderPid: null, holderHost: null, holder: 'unknown' });
    }
    const minuteAgo = new Date(Date.now() - 60_000);
    utimesSync(lockFile(), minuteAgo, minuteAgo);
    await takesOver(dataDir, lockFile());
  });

  it('locks only a directory on disk: not memory://, nor a PGlite instance the caller passes', async () => {
    const { root, dataDir } = tempDataDir();
    mkdirSync(dataDir);
    const stores = [createPGliteStore({ dataDir: 'memory://' }), createPGliteStore({ dataDir: 'memory://' })];
    try {
      await Promise.all(stores.map((store) => store.migrate()));
      stores.push(createPGliteStore({ dataDir }));
      stores.push(createPGliteStore({ db: stores[2]!.db, schema: 'other' }));
      await stores[3]!.migrate();
      assert.deepEqual(
        [...new Set(readFileSync(join(root, 'data.lock'), 'utf8').match(/"pid":\d+/g))],
        [`"pid":${process.pid}`],
        'one lock, for the store that opened the directory',
      );
    } finally {
      await closeAll(stores.reverse());
    }
  });
});
