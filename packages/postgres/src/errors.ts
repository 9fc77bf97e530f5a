import { EventlineError, StoreUnavailableError } from '@eventline/core';

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
  '57P01',
  '57P02',
  '57P03',
  '53300',
]);

const CONNECTION_MESSAGES =
  /Connection terminated|terminating connection|Client has encountered a connection error|Client was closed and is not queryable|Connection is closed|timeout exceeded when trying to connect|connect ECONNREFUSED|read ECONNRESET|write EPIPE|the database system is (starting up|shutting down|in recovery)/i;

/**
 * Whether an error means that the connection is gone or the server cannot be reached (as opposed to an error in a
 * statement on a healthy connection): socket errors, SQLSTATE class 08 (connection exception), 57P01-57P03 (the server
 * terminated the session or is starting/stopping) and 53300 (too many connections), and node-postgres' messages for a
 * connection that ended.
 */
export function isConnectionError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return true;
  const message = (error as { message?: unknown }).message;
  if (typeof message === 'string' && CONNECTION_MESSAGES.test(message)) return true;
  // Node's AggregateError from trying several addresses (e.g. ::1 and 127.0.0.1).
  const errors = (error as { errors?: unknown }).errors;
  return Array.isArray(errors) && errors.length > 0 && errors.every(isConnectionError);
}

/** An unexpected database error, with the operation that failed. The driver's error is `cause`; `code` is its SQLSTATE (or Node error code). */
export class DatabaseOperationError extends Error {
  readonly code: string | undefined;
  constructor(
    readonly operation: string,
    override readonly cause: unknown,
  ) {
    const sqlState = (cause as { code?: unknown } | null)?.code;
    const message = cause instanceof Error ? cause.message : String(cause);
    const isSqlState = typeof sqlState === 'string' && /^[0-9A-Z]{5}$/.test(sqlState);
    super(`eventline: ${operation} failed: ${message}${isSqlState ? ` (SQLSTATE ${sqlState})` : ''}`);
    this.code = typeof sqlState === 'string' ? sqlState : undefined;
  }
  override get name(): string {
    return 'DatabaseOperationError';
  }
}

/**
 * Turns a driver error into what callers get: eventline's own errors pass through, a lost or unreachable server becomes
 * {@link StoreUnavailableError} naming the operation, anything else a {@link DatabaseOperationError} with context.
 */
export function toStoreError(error: unknown, operation: string): Error {
  if (error instanceof EventlineError || error instanceof DatabaseOperationError) return error;
  if (isConnectionError(error)) return new StoreUnavailableError(operation, error);
  return new DatabaseOperationError(operation, error);
}

/** Who holds a PGlite data directory, as far as its lock tells: see {@link DataDirectoryLockedError}. */
export type DataDirectoryHolder = 'this-process' | 'other-process' | 'other-host' | 'unknown';

/**
 * A PGlite data directory is already open: in this process (another store), in another process, or on another host
 * sharing the file system. Two PGlite instances on one directory both believe they own it and overwrite each other's
 * pages: acknowledged writes are lost and indexes corrupted, so the second opener is refused before it touches a file.
 * `holderPid` is the holder's process id (`null` when its lock file cannot be read), `holderHost` its host name,
 * `lockFile` the lock beside the directory. See the package README, "One store per PGlite data directory".
 */
export class DataDirectoryLockedError extends EventlineError {
  readonly code = 'DATA_DIR_LOCKED' as const;
  constructor(
    readonly dataDir: string,
    readonly holderPid: number | null,
    readonly holderHost: string | null,
    readonly lockFile: string,
    readonly holder: DataDirectoryHolder,
  ) {
    super(describeLockedDirectory(dataDir, holderPid, holderHost, lockFile, holder));
  }
  override toJSON(): Record<string, unknown> {
    return {
      ...super.toJSON(),
      dataDir: this.dataDir,
      holderPid: this.holderPid,
      holderHost: this.holderHost,
      lockFile: this.lockFile,
      holder: this.holder,
    };
  }
}

function describeLockedDirectory(
  dataDir: string,
  pid: number | null,
  host: string | null,
  lockFile: string,
  holder: DataDirectoryHolder,
): string {
  const what = `The PGlite data directory '${dataDir}'`;
  const why = 'two PGlite instances on one directory lose each other’s writes';
  switch (holder) {
    case 'this-process':
      return (
        `${what} is already open in this process (pid ${pid}) by another store: ${why}. Use the store that is open, ` +
        `or close() it before opening the directory again, or use another data directory.`
      );
    case 'other-process':
      return `${what} is in use by the process with pid ${pid} (lock file '${lockFile}'): ${why}. Stop the process with pid ${pid}, or use another data directory.`;
    case 'other-host':
      return (
        `${what} is in use by the process with pid ${pid} on host '${host}' (lock file '${lockFile}'): ${why}. ` +
        `Processes on another host cannot be checked from here: stop the process with pid ${pid} on '${host}', or use ` +
        `another data directory; if that process is no longer running, delete the lock file.`
      );
    case 'unknown':
      return (
        `${what} is locked, but its lock file '${lockFile}' cannot be read (it is being written, or it is damaged): ${why}. ` +
        `Try again in a few seconds; if no process uses the directory, delete the lock file, or use another data directory.`
      );
  }
}
