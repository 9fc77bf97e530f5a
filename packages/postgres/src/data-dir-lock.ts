/**
 * One opener per PGlite data directory.
 *
 * Two PGlite instances on one directory both believe they own it and overwrite each other's pages: acknowledged
 * writes are lost and indexes corrupted. PostgreSQL's own guard (`postmaster.pid`) does not help: PGlite writes the
 * same fake pid in it every time. So `createPGliteStore` takes this lock, synchronously, before `new PGlite(dataDir)`,
 * and a second opener gets a {@link DataDirectoryLockedError} naming the directory and the holder's pid.
 *
 * Decisions:
 * - **Where.** The lock is a file beside the directory, `<dataDir>.lock` (the directory's real path: `./x`, `/abs/x`
 *   and a symlink to it are one directory, one lock). Not inside it: PGlite 0.5 starts on a directory holding a
 *   foreign file, but PostgreSQL's initdb refuses a non-empty one and PGlite may follow; and a lock inside would travel
 *   with every copy of the directory (cp -r, tar, a restored backup), where it names a process of another machine.
 * - **What it holds.** JSON: the holder's pid, its start time (Linux: field 22 of /proc/<pid>/stat, clock ticks after
 *   boot, which tells the holder from a later process given the same pid), the boot id (a reboot ended every holder),
 *   the host name, the thread, the time, and a random token (release removes the file only while it is still ours).
 * - **Atomic.** A lock file is written whole to a temporary file, then linked (`link`, which fails when the lock
 *   exists) or renamed into place: a lock file is never seen half-written, and a live holder's lock always parses.
 *   Where the file system has no hard links (FAT), it is created with `O_EXCL` and written in place.
 * - **In this process.** A registry of the directories this process holds, keyed by real path, shared by every copy
 *   of this module loaded in the process (it lives on `globalThis`), refuses a second store at once, naming this pid.
 * - **Stale**, so a process killed with SIGKILL does not block its restart. A lock is stale when:
 *   its boot id is not this boot's; or its holder's pid is not alive (`kill(pid, 0)` fails with ESRCH); or that pid
 *   is alive with another start time (reused); or it is this process's pid with another start time (a restarted
 *   container gets the killed one's pid, often 1). It is held when its pid is this process's with this start time but
 *   the registry does not hold it: another worker thread (threads do not share `globalThis`) or another copy of this
 *   code holds it. Without a start time (not Linux) a live pid is a holder. A lock written on another host is never
 *   stale: that host's processes cannot be checked from here; the error says so, and to delete the lock file once that
 *   process is gone. (Containers sharing a volume must therefore differ in host name, and a container that is
 *   replaced by one with a new host name must have its lock removed; a stable host name avoids that.)
 *   A lock file that does not parse was not written by a live holder (see "Atomic"), except on the O_EXCL fallback in
 *   the moment between create and write: it is stale once its mtime is {@link UNREADABLE_LOCK_STALE_MS} old.
 * - **Takeover, race-safe.** Restarters that find a stale lock race for a takeover file, `<dataDir>.lock.takeover`,
 *   created exclusively; only its creator re-judges the lock and renames its own over it, then removes the takeover
 *   file. The others wait for the takeover file to go (up to 2 s; it is held for a few system calls), judge the lock
 *   again and are refused, naming the winner. A takeover file
 *   whose creator died (or older than {@link TAKEOVER_STALE_MS}: it is held for a few system calls) is moved aside and
 *   removed if it is still the file that was judged (same inode); otherwise it is put back.
 * - **Release** on `store.close()` once PGlite closed, and on the process's 'exit' event; also when PGlite fails to
 *   start. Only the lock file with our token is removed.
 *
 * Only a directory on disk is locked: not `memory://` (nor `idb://` and the other in-browser file systems), and not a
 * PGlite instance the caller passes as `db`: whoever opened that instance owns that responsibility.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  readSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';
import { DataDirectoryLockedError, type DataDirectoryHolder } from './errors.js';

/** Age after which a lock file that does not parse is stale (see the module comment). */
export const UNREADABLE_LOCK_STALE_MS = 10_000;
/** Age after which a takeover file is stale whoever wrote it: a takeover takes a few system calls. */
export const TAKEOVER_STALE_MS = 30_000;
/** How long an opener waits for another process's takeover to finish before it is refused, naming that process. */
const TAKEOVER_WAIT_MS = 2_000;

/** The content of a lock file (and of a takeover file). */
interface LockHolder {
  readonly pid: number;
  /** Clock ticks after boot when the process started (Linux), or null where unknown. */
  readonly startTime: string | null;
  readonly bootId: string | null;
  readonly hostname: string;
  readonly threadId: number;
  readonly createdAt: string;
  readonly token: string;
}

/** A lock this process holds on a PGlite data directory. */
export interface DataDirectoryLock {
  /** The directory's real path: what PGlite is to open. */
  readonly dataDir: string;
  readonly lockFile: string;
  /** Removes the lock file if it is still ours; idempotent. */
  release(): void;
}

/**
 * The directory PGlite will use on the local file system for `dataDir`, or null when it uses none. Follows PGlite's
 * own reading of `dataDir`: `file://<path>`, or a path without one of its in-memory / in-browser prefixes.
 */
export function fileDataDirectory(dataDir: string): string | null {
  if (dataDir.startsWith('file://')) return dataDir.length > 'file://'.length ? dataDir.slice('file://'.length) : null;
  if (dataDir === '' || /^(memory|idb|opfs-ahp|memfs2opfs):\/\//.test(dataDir)) return null;
  return dataDir;
}

/**
 * Locks the data directory at `path` (which need not exist yet; its parent must) for this process, or throws
 * {@link DataDirectoryLockedError}. Synchronous: call it before PGlite opens the directory.
 */
export function lockDataDirectory(path: string): DataDirectoryLock {
  const dataDir = realDirectory(path);
  const lockFile = `${dataDir}.lock`;
  const held = registry();
  if (held.has(dataDir)) throw new DataDirectoryLockedError(dataDir, process.pid, hostname(), lockFile, 'this-process');
  const me = identity();
  const content = JSON.stringify(me);
  // Each round ends in a lock of ours or a refusal, unless the lock changed under us (released, or taken over by
  // someone else, or a stale takeover file removed): then judge again; a few rounds settle any real contention. While
  // another process holds the takeover file, wait (it takes a few system calls) and judge again, so that the refusal
  // names who won: that process may find the lock taken by a third one and back off.
  const waitUntil = Date.now() + TAKEOVER_WAIT_MS;
  for (let round = 0; round < 8;) {
    if (createExclusive(lockFile, content) !== null) return hold(held, dataDir, lockFile, me.token);
    const current = readLockFile(lockFile);
    if (current === null) {
      round++;
      continue;
    }
    const verdict = judge(current, UNREADABLE_LOCK_STALE_MS);
    if (verdict.held) throw refusal(dataDir, lockFile, verdict);
    const outcome = takeOver(dataDir, lockFile, content);
    if (outcome === 'won') return hold(held, dataDir, lockFile, me.token);
    if (outcome === 'again') round++;
    else if (outcome.holder === 'this-process' || Date.now() > waitUntil) throw outcome;
    else sleepSync(2);
  }
  throw new DataDirectoryLockedError(dataDir, null, null, lockFile, 'unknown');
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Blocks this thread for `ms` (the lock is taken synchronously, and only while a takeover is in progress). */
function sleepSync(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

type Verdict = { held: false } | { held: true; holder: DataDirectoryHolder; pid: number | null; host: string | null };

const STALE: Verdict = { held: false };

interface FileId {
  readonly dev: number;
  readonly ino: number;
}

interface LockFileState {
  readonly id: FileId;
  readonly mtimeMs: number;
  /** Null when the content does not parse as a lock. */
  readonly holder: LockHolder | null;
}

/** Whether the lock (or takeover) file's holder still holds it; see the module comment for the rules. */
function judge(file: LockFileState, unreadableStaleMs: number): Verdict {
  const holder = file.holder;
  if (holder === null)
    return Date.now() - file.mtimeMs > unreadableStaleMs
      ? STALE
      : { held: true, holder: 'unknown', pid: null, host: null };
  const held = (who: DataDirectoryHolder): Verdict => ({
    held: true,
    holder: who,
    pid: holder.pid,
    host: holder.hostname,
  });
  if (holder.hostname !== hostname()) return held('other-host');
  const boot = bootId();
  if (holder.bootId !== null && boot !== null && holder.bootId !== boot) return STALE;
  if (holder.pid === process.pid) {
    const mine = startTimeOf(process.pid);
    return holder.startTime !== null && mine !== null && holder.startTime !== mine ? STALE : held('this-process');
  }
  if (!isAlive(holder.pid)) return STALE;
  const start = startTimeOf(holder.pid);
  if (holder.startTime !== null && start !== null && holder.startTime !== start) return STALE;
  return held('other-process');
}

function refusal(dataDir: string, lockFile: string, verdict: Verdict & { held: true }): DataDirectoryLockedError {
  return new DataDirectoryLockedError(dataDir, verdict.pid, verdict.host, lockFile, verdict.holder);
}

/**
 * Replaces a stale lock with ours, if this process wins the takeover file. 'again': the lock or the takeover file
 * changed meanwhile, judge again; an error: someone else holds the lock, or (the error names the takeover file's
 * holder) is taking it over now.
 */
function takeOver(dataDir: string, lockFile: string, content: string): 'won' | 'again' | DataDirectoryLockedError {
  const takeoverFile = `${lockFile}.takeover`;
  const ours = createExclusive(takeoverFile, content);
  if (ours === null) {
    const other = readLockFile(takeoverFile);
    if (other === null) return 'again';
    const verdict = judge(other, UNREADABLE_LOCK_STALE_MS);
    if (verdict.held && Date.now() - other.mtimeMs <= TAKEOVER_STALE_MS) return refusal(dataDir, lockFile, verdict);
    removeIfSame(takeoverFile, other.id);
    return 'again';
  }
  try {
    // Under the takeover file nobody else replaces the lock, and a stale lock's holder is gone: judged again here, the
    // lock cannot change before the rename below, except by a remover of a takeover file judged stale that moved ours
    // aside (see removeIfSame): then ours is no longer in place, and this one backs off.
    const current = readLockFile(lockFile);
    if (current === null) return 'again';
    const verdict = judge(current, UNREADABLE_LOCK_STALE_MS);
    if (verdict.held) return refusal(dataDir, lockFile, verdict);
    if (!sameFile(idOf(takeoverFile), ours)) return 'again';
    replaceWith(lockFile, content);
    return 'won';
  } finally {
    if (sameFile(idOf(takeoverFile), ours)) unlinkQuietly(takeoverFile);
  }
}

/**
 * Removes the stale file at `path` if it is still the one judged (`judged`): moved aside first (atomic), then compared;
 * a newer file moved aside by mistake (another remover was faster and a new takeover began) is linked back.
 */
function removeIfSame(path: string, judged: FileId): void {
  const aside = `${path}.${process.pid}-${threadId}-${randomBytes(6).toString('hex')}.stale`;
  try {
    renameSync(path, aside);
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return;
    throw error;
  }
  try {
    if (!sameFile(idOf(aside), judged)) {
      try {
        linkSync(aside, path);
      } catch (error) {
        if (codeOf(error) !== 'EEXIST') throw error;
      }
    }
  } finally {
    unlinkQuietly(aside);
  }
}

/** A held lock, as the registry keeps it: its shape is shared by every copy of this module in the process. */
type Registry = Map<string, { release(): void }>;

const REGISTRY = Symbol.for('@eventline/postgres.pglite-data-directory-locks');

/** The directories this process (this thread) holds; one registry for every copy of this module. */
function registry(): Registry {
  const scope = globalThis as { [REGISTRY]?: Registry };
  let held = scope[REGISTRY];
  if (!held) {
    const created: Registry = new Map();
    held = created;
    scope[REGISTRY] = created;
    // Best effort: a process that exits releases its locks (a killed one cannot; its lock is then stale).
    process.on('exit', () => {
      for (const lock of [...created.values()]) lock.release();
    });
  }
  return held;
}

function hold(held: Registry, dataDir: string, lockFile: string, token: string): DataDirectoryLock {
  let released = false;
  const lock: DataDirectoryLock = {
    dataDir,
    lockFile,
    release: () => {
      if (released) return;
      released = true;
      if (held.get(dataDir) === lock) held.delete(dataDir);
      try {
        if (readLockFile(lockFile)?.holder?.token === token) unlinkSync(lockFile);
      } catch {
        // Best effort: a lock file left behind names this process, and is stale once it ends.
      }
    },
  };
  held.set(dataDir, lock);
  return lock;
}

/** The directory's real path; for a directory not created yet, its parent's real path and its name. */
function realDirectory(path: string): string {
  const absolute = resolve(path);
  try {
    return realpathSync.native(absolute);
  } catch (error) {
    if (codeOf(error) !== 'ENOENT') throw error;
    return join(realpathSync.native(dirname(absolute)), basename(absolute));
  }
}

let ownIdentity: Omit<LockHolder, 'createdAt' | 'token'> | undefined;

function identity(): LockHolder {
  ownIdentity ??= {
    pid: process.pid,
    startTime: startTimeOf(process.pid),
    bootId: bootId(),
    hostname: hostname(),
    threadId,
  };
  return { ...ownIdentity, createdAt: new Date().toISOString(), token: randomUUID() };
}

let cachedBootId: string | null | undefined;

function bootId(): string | null {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
    } catch {
      cachedBootId = null;
    }
  }
  return cachedBootId;
}

/** Field 22 of /proc/<pid>/stat (after the command name, which may hold spaces and parentheses), or null. */
function startTimeOf(pid: number): string | null {
  if (process.platform !== 'linux') return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const field = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    return field !== undefined && /^\d+$/.test(field) ? field : null;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, owned by another user.
    return codeOf(error) !== 'ESRCH';
  }
}

/** The lock file's identity, age and holder, read through one descriptor; null when there is none. */
function readLockFile(path: string): LockFileState | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return null;
    throw error;
  }
  try {
    const stat = fstatSync(fd);
    const buffer = Buffer.alloc(Math.min(stat.size, 64 * 1024));
    let length = 0;
    while (length < buffer.length) {
      const n = readSync(fd, buffer, length, buffer.length - length, length);
      if (n === 0) break;
      length += n;
    }
    return {
      id: { dev: stat.dev, ino: stat.ino },
      mtimeMs: stat.mtimeMs,
      holder: parseHolder(buffer.subarray(0, length).toString('utf8')),
    };
  } finally {
    closeSync(fd);
  }
}

function parseHolder(text: string): LockHolder | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  const optionalString = (x: unknown) => x === undefined || x === null || typeof x === 'string';
  if (!Number.isSafeInteger(v.pid) || (v.pid as number) < 1) return null;
  if (
    typeof v.hostname !== 'string' ||
    typeof v.token !== 'string' ||
    !optionalString(v.startTime) ||
    !optionalString(v.bootId)
  )
    return null;
  return {
    pid: v.pid as number,
    startTime: (v.startTime as string | null | undefined) ?? null,
    bootId: (v.bootId as string | null | undefined) ?? null,
    hostname: v.hostname,
    threadId: typeof v.threadId === 'number' ? v.threadId : 0,
    createdAt: typeof v.createdAt === 'string' ? v.createdAt : '',
    token: v.token,
  };
}

/** `link` fails this way where the file system has no hard links. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** Creates `path` holding `content`, whole, unless it exists (then null); returns the new file's identity. */
function createExclusive(path: string, content: string): FileId | null {
  const temporary = writeTemporary(path, content);
  try {
    linkSync(temporary.path, path);
    return temporary.id;
  } catch (error) {
    if (codeOf(error) === 'EEXIST') return null;
    if (!NO_HARD_LINKS.has(codeOf(error) ?? '')) throw error;
  } finally {
    unlinkQuietly(temporary.path);
  }
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o644);
  } catch (error) {
    if (codeOf(error) === 'EEXIST') return null;
    throw error;
  }
  try {
    return writeAll(fd, content);
  } finally {
    closeSync(fd);
  }
}

/** Puts `content` at `path` in one step (rename), replacing what is there. */
function replaceWith(path: string, content: string): void {
  const temporary = writeTemporary(path, content);
  try {
    renameSync(temporary.path, path);
  } catch (error) {
    unlinkQuietly(temporary.path);
    throw error;
  }
}

/** A new file beside `path` holding `content`, written and flushed. */
function writeTemporary(path: string, content: string): { path: string; id: FileId } {
  const temporary = `${path}.${process.pid}-${threadId}-${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(temporary, 'wx', 0o644);
  let id: FileId;
  try {
    id = writeAll(fd, content);
  } catch (error) {
    closeSync(fd);
    unlinkQuietly(temporary);
    throw error;
  }
  closeSync(fd);
  return { path: temporary, id };
}

function writeAll(fd: number, content: string): FileId {
  const buffer = Buffer.from(content, 'utf8');
  for (let written = 0; written < buffer.length;) written += writeSync(fd, buffer, written, buffer.length - written);
  fsyncSync(fd);
  const stat = fstatSync(fd);
  return { dev: stat.dev, ino: stat.ino };
}

function idOf(path: string): FileId | null {
  try {
    const stat = statSync(path);
    return { dev: stat.dev, ino: stat.ino };
  } catch {
    return null;
  }
}

function sameFile(a: FileId | null, b: FileId | null): boolean {
  return a !== null && b !== null && a.dev === b.dev && a.ino === b.ino;
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Gone already, or not ours to remove.
  }
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
