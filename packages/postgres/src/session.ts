/**
 * A session of the SQL event store: the operations on streams (append, read, metadata, delete, lock), on one
 * {@link SqlConnection} of a driver (driver.ts). The store's own operations use a session on the driver itself (each
 * statement its own transaction, with the driver's fast paths); `store.transaction()` gives its function a session on
 * one transaction. Everything here runs the statements of sql/statements.ts, the same for every driver.
 */
import {
  ConcurrencyError,
  EventIdConflictError,
  StreamDeletedError,
  UniquenessError,
  ValidationError,
  formatPosition,
  type AppendOptions,
  type AppendResult,
  type EventInput,
  type EventMetadata,
  type EventRegistry,
  type EventStoreSession,
  type ExpectedVersion,
  type ReadStreamOptions,
  type RecordedEvent,
  type StreamInfo,
  type StreamMetadata,
} from '@eventline/core';
import {
  assertExpectedVersion,
  assertNoReleases,
  assertStreamId,
  assertStreamIds,
  assertStreamMetadata,
  firstVisibleVersion,
  safeQuote,
  normaliseReadStreamOptions,
  prepareAppend,
  type ClaimOperation,
  type PreparedEvent,
  type Uniqueness,
} from '@eventline/core/backend';
import { DatabaseOperationError } from './errors.js';
import type { SqlConnection, SqlDriver } from './driver.js';
import type { FirstPageRead } from './read-groups.js';
import { streamLockKey, type Statements } from './sql/statements.js';

/** A raw SQL client on the same connection and transaction as a session, for code that writes beside the events. */
export interface SqlClient {
  /** The schema of the store (unquoted). */
  readonly schema: string;
  /** Runs one statement with parameters ($1, $2...) and returns its rows. */
  query<R = Record<string, unknown>>(text: string, values?: unknown[], options?: SqlQueryOptions): Promise<R[]>;
}

export interface SqlQueryOptions {
  /**
   * Prepare the statement once per connection and reuse it (PostgreSQL parses and plans it once; PGlite ignores this).
   * Only for statement texts that do not vary: each distinct text stays prepared on every connection that ran it.
   */
  prepare?: boolean;
}

const preparedNames = new Map<string, string>();

/** The prepared-statement name of a text: `eventline.p.` and a 64-bit FNV-1a hash of it (names are per connection). */
function preparedName(text: string): string {
  let name = preparedNames.get(text);
  if (name === undefined) {
    let hash = 0xcbf29ce484222325n;
    for (const byte of Buffer.from(text, 'utf8')) hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
    name = `eventline.p.${hash.toString(16)}`;
    if (preparedNames.size >= 10_000) preparedNames.clear();
    preparedNames.set(text, name);
  }
  return name;
}

export interface StoreConfig {
  readonly statements: Statements;
  readonly events: EventRegistry | undefined;
  readonly maxEventBytes: number | undefined;
  /** The uniqueness rules compiled (compileUniqueness), or null. */
  readonly uniqueness: Uniqueness | null;
}

/** The row of `streams`, as the drivers return it. */
export interface StreamRowData {
  version: string | number;
  hidden_before: string | number;
  deleted: 'soft' | 'hard' | null;
  metadata: StreamMetadata;
}

/** An event row of the read statements (rows as arrays): see EVENT_COLUMNS in sql/statements.ts. */
export type EventRow = [
  id: string,
  streamId: string,
  type: string,
  version: string | number,
  position: string,
  recordedMs: string | number,
  data: unknown,
  metadata: EventMetadata,
];

interface WriteRow {
  status: 'ok' | 'duplicate' | 'deleted' | 'wrong_version' | 'id_conflict' | 'claimed';
  stream_version: string | number | null;
  stream_exists: boolean | null;
}

/** The append statement's single column: see `appendEvents` in sql/statements.ts. */
interface AppendRow {
  r: string;
}

function expectedText(expected: ExpectedVersion): string {
  return typeof expected === 'number' ? String(expected) : expected;
}

function refusal(row: WriteRow, streamId: string, expected: ExpectedVersion): Error {
  if (row.status === 'deleted') return new StreamDeletedError(streamId);
  if (row.status === 'wrong_version') {
    const version = Number(row.stream_version ?? 0);
    return new ConcurrencyError(streamId, expected, row.stream_exists ? version : 'no_stream', version);
  }
  return new Error(`eventline: unexpected status '${String(row.status)}' from the database for stream '${streamId}'`);
}

/** A unique violation on events.event_id: the same id was inserted concurrently by an append to another stream. */
function duplicateIdsOf(error: unknown, ids: readonly string[]): string[] | null {
  const cause = error instanceof DatabaseOperationError ? error.cause : error;
  const { code, constraint, detail } = (cause ?? {}) as { code?: string; constraint?: string; detail?: string };
  if (code !== '23505') return null;
  if (constraint !== undefined ? !constraint.endsWith('event_id_key') : !/\(event_id\)/.test(detail ?? '')) return null;
  const found = /\(event_id\)=\(([0-9a-f-]{36})\)/i.exec(detail ?? '')?.[1]?.toLowerCase();
  return found && ids.includes(found) ? [found] : [...ids];
}

/** An append checked by prepareAppend and encoded for the append statement (see appendEvents in sql/statements.ts). */
export interface EncodedAppend {
  readonly streamId: string;
  readonly expectedVersion: ExpectedVersion;
  readonly eventIds: readonly string[];
  /** '[["Type",data,metadata],...]': JSON made of the JSON prepareAppend produced, with no second serialisation. */
  readonly batch: string;
  /** For error messages: "append to 'stream'". */
  readonly operation: string;
}

function encodeAppend(
  streamId: string,
  expectedVersion: ExpectedVersion,
  events: readonly PreparedEvent[],
): EncodedAppend {
  // Types are letters, digits and '_' (checked by prepareAppend): no escaping needed.
  const eventIds: string[] = [];
  let batch = '[';
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!;
    eventIds.push(event.id);
    batch += `${i === 0 ? '' : ','}["${event.type}",${event.dataJson},${event.metadataJson}]`;
  }
  return { streamId, expectedVersion, eventIds, batch: `${batch}]`, operation: `append to '${streamId}'` };
}

/** The append's result, or its refusal as a typed error, from the append function's result line. */
function appendResult(append: EncodedAppend, line: string): AppendResult {
  const fields = line.split(' ');
  const status = fields[0] as WriteRow['status'];
  const id = append.streamId;
  if (status === 'ok' || status === 'duplicate') {
    return {
      streamId: id,
      version: Number(fields[1]),
      firstVersion: Number(fields[2]),
      position: formatPosition(BigInt(fields[4]!), BigInt(fields[3]!)),
      duplicate: status === 'duplicate',
    };
  }
  if (status === 'claimed') throw new UniquenessError(fields[1]!, fields[2]!, id);
  if (status === 'id_conflict')
    throw new EventIdConflictError(id, fields[1] ? fields[1].split(',') : [...append.eventIds]);
  throw refusal(
    { status, stream_version: fields[1] ?? null, stream_exists: fields[2] === 'true' },
    id,
    append.expectedVersion,
  );
}

function toStreamInfo(streamId: string, row: StreamRowData | undefined): StreamInfo {
  if (!row) return { streamId, exists: false, version: 0, deleted: null };
  const version = Number(row.version);
  return { streamId, exists: version > 0 && row.deleted === null, version, deleted: row.deleted };
}

/** What a session runs on: the driver itself (with its fast paths), or a transaction's connection. */
export type SessionConnection = SqlConnection &
  Partial<Pick<SqlDriver, 'append' | 'readFirstPage' | 'readsStreamAtOnce'>>;

/**
 * Runs the append statement on `connection` and resolves with its result line (see appendEvents in sql/statements.ts).
 * With `check` false (appends outside a transaction) the function skips the look-up of the batch's ids (see `p_check`
 * in migration 3), and the store asks again with it only when the unique index refused an id; a transaction's session
 * always looks, so that a retry or a conflict is an answer and not an aborted transaction.
 */
export async function sendAppend(
  connection: SqlConnection,
  statements: Statements,
  append: EncodedAppend,
  check: boolean,
): Promise<string> {
  try {
    const rows = await connection.query<AppendRow>(
      statements.appendEvents,
      // The ids as an array literal: UUIDs need no quoting.
      [append.streamId, expectedText(append.expectedVersion), `{${append.eventIds.join(',')}}`, append.batch, check],
      append.operation,
    );
    return rows[0]!.r;
  } catch (error) {
    const conflicting = duplicateIdsOf(error, append.eventIds);
    if (!conflicting) throw error;
    if (!check) return sendAppend(connection, statements, append, true);
    throw new EventIdConflictError(append.streamId, conflicting);
  }
}

/**
 * An append that claims or releases (see append_claiming, migration 6): one statement, sent alone (never grouped),
 * its own transaction outside `transaction()`. Its result line as {@link sendAppend}'s, or `claimed <scope> <owner>`.
 */
async function sendClaimingAppend(
  connection: SqlConnection,
  statements: Statements,
  append: EncodedAppend,
  claims: readonly ClaimOperation[],
): Promise<string> {
  const operations = JSON.stringify(
    claims.map((claim) => (claim.op === 'release' ? ['r', claim.scope] : ['c', claim.scope, claim.hash])),
  );
  try {
    const rows = await connection.query<AppendRow>(
      statements.appendClaiming,
      [
        append.streamId,
        expectedText(append.expectedVersion),
        `{${append.eventIds.join(',')}}`,
        append.batch,
        operations,
      ],
      append.operation,
    );
    return rows[0]!.r;
  } catch (error) {
    const conflicting = duplicateIdsOf(error, append.eventIds);
    if (!conflicting) throw error;
    throw new EventIdConflictError(append.streamId, conflicting);
  }
}

/**
 * The stream's row and the first page of a forwards read, as the rows of {@link Statements.readStreamFirstForwards}
 * (see readStreamFirstPage in sql/statements.ts).
 */
export function readFirstPage(
  connection: SqlConnection,
  statements: Statements,
  read: FirstPageRead,
): Promise<EventRow[]> {
  return connection.query<EventRow>(
    statements.readStreamFirstForwards,
    [read.streamId, read.from, null, read.size],
    read.operation,
  );
}

/**
 * A session: the stream operations on one {@link SessionConnection}. The store's own methods use a session on its
 * driver (each statement in its own transaction); `transaction()` gives `fn` a session on one transaction.
 */
export class SqlSession implements EventStoreSession {
  /**
   * Raw SQL on this session's connection: inside `transaction()`, statements run in the same transaction as the
   * session's appends (read-model writers use it to commit with the events).
   */
  readonly sql: SqlClient;

  constructor(
    private readonly config: StoreConfig,
    private readonly connection: SessionConnection,
    /**
     * Called before each operation (and before each page of a read), and may throw: the store's session checks that
     * the store is open and waits for its migrations; a transaction's session, that the transaction still runs.
     */
    private readonly enter: (operation: string) => void | Promise<void>,
    /** Whether `connection` is a transaction's: appends look their ids up first, and lockStreams locks. */
    private readonly inTransaction: boolean,
  ) {
    this.sql = {
      schema: config.statements.schema,
      query: async <R>(text: string, values: unknown[] = [], options?: SqlQueryOptions) => {
        await this.enter('run a query');
        return connection.query<R>(
          { name: options?.prepare ? preparedName(text) : '', text, readOnly: false, raw: true },
          values,
          'run a query',
        );
      },
    };
  }

  async append(streamId: string, events: readonly EventInput[], options?: AppendOptions): Promise<AppendResult> {
    await this.enter('append');
    const uniqueness = this.config.uniqueness;
    if (options?.releases !== undefined) {
      if (!uniqueness) assertNoReleases(String(streamId), options.releases);
      else events = uniqueness.withReleases(String(streamId), events, options.releases);
    }
    const prepared = await prepareAppend(streamId, events, options, {
      registry: this.config.events,
      maxEventBytes: this.config.maxEventBytes,
    });
    const append = encodeAppend(prepared.streamId, prepared.expectedVersion, prepared.events);
    await this.enter(append.operation);
    const connection = this.connection;
    const claims = uniqueness?.operationsOfAppend(prepared.streamId, prepared.events);
    if (claims)
      return appendResult(append, await sendClaimingAppend(connection, this.config.statements, append, claims));
    return appendResult(
      append,
      await (connection.append
        ? connection.append(append)
        : sendAppend(connection, this.config.statements, append, this.inTransaction)),
    );
  }

  readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<RecordedEvent> {
    return this.readStreamPages(streamId, options);
  }

  private async *readStreamPages(streamId: string, options?: ReadStreamOptions): AsyncGenerator<RecordedEvent> {
    await this.enter('read a stream');
    const id = assertStreamId(streamId);
    const { direction, from, limit, pageSize } = normaliseReadStreamOptions(options);
    const operation = `read stream '${id}'`;
    const forwards = direction === 'forwards';
    const statements = this.config.statements;
    let size = Math.min(pageSize, limit);
    let rows: EventRow[];
    let row: StreamRowData | undefined;
    const connection = this.connection;
    if (connection.readsStreamAtOnce?.() ?? true) {
      // The stream's row and the first page in one round trip (see readStreamFirstPage in sql/statements.ts).
      rows = forwards
        ? await (connection.readFirstPage
            ? connection.readFirstPage({ streamId: id, from: from ?? 1, size, operation })
            : readFirstPage(connection, statements, { streamId: id, from: from ?? 1, size, operation }))
        : await connection.query<EventRow>(statements.readStreamFirstBackwards, [id, 1, from ?? null, size], operation);
      const index = rows.findIndex((r) => r[0] === null);
      if (index >= 0) {
        const [state] = rows.splice(index, 1) as unknown as Array<
          [...EventRow, string | number, string | number, StreamRowData['deleted'], StreamMetadata]
        >;
        row = { version: state![8], hidden_before: state![9], deleted: state![10], metadata: state![11] };
      }
      if (row?.deleted === 'hard') throw new StreamDeletedError(id);
      if (!row || Number(row.version) === 0) return;
    } else {
      row = await this.streamRow(id, operation);
      if (row?.deleted === 'hard') throw new StreamDeletedError(id);
      if (!row || Number(row.version) === 0) return;
      rows = [];
      size = 0;
    }
    const version = Number(row.version);
    const metadata = row.metadata ?? {};
    const firstVisible = firstVisibleVersion({ version, hiddenBefore: Number(row.hidden_before) }, metadata);
    const maxAge = metadata.maxAge ?? null;
    const statement = forwards ? statements.readStreamForwards : statements.readStreamBackwards;
    // Bounded by the version read at the start, so a read shows one consistent state of the stream.
    let low = forwards ? Math.max(from ?? 1, firstVisible) : firstVisible;
    let high = forwards ? version : Math.min(from ?? version, version);
    let remaining = limit;
    for (;;) {
      // `rows` is a page of `size` asked for (the first one may come with the stream's row, or be empty and of size 0).
      remaining -= rows.length;
      const last = Number(rows[rows.length - 1]?.[3]);
      const full = rows.length === size;
      yield* this.eventsOf(rows);
      if (!full) return;
      if (size > 0) {
        if (forwards) low = last + 1;
        else high = last - 1;
      }
      if (remaining <= 0 || low > high) return;
      size = Math.min(pageSize, remaining);
      await this.enter(operation);
      rows = await this.connection.query<EventRow>(statement, [id, low, high, maxAge, size], operation);
    }
  }

  async streamInfo(streamId: string): Promise<StreamInfo> {
    await this.enter('read stream info');
    const id = assertStreamId(streamId);
    return toStreamInfo(id, await this.streamRow(id, `read the info of stream '${id}'`));
  }

  async setStreamMetadata(
    streamId: string,
    metadata: StreamMetadata,
    options?: { expectedVersion?: ExpectedVersion },
  ): Promise<void> {
    await this.enter('set stream metadata');
    const id = assertStreamId(streamId);
    const checked = assertStreamMetadata(metadata);
    const expected = assertExpectedVersion(options?.expectedVersion);
    const operation = `set the metadata of stream '${id}'`;
    const [row] = (await this.connection.query<WriteRow>(
      this.config.statements.setStreamMetadata,
      [id, expectedText(expected), JSON.stringify(checked)],
      operation,
    )) as [WriteRow];
    if (row.status !== 'ok') throw refusal(row, id, expected);
  }

  async getStreamMetadata(streamId: string): Promise<StreamMetadata> {
    await this.enter('get stream metadata');
    const id = assertStreamId(streamId);
    return (await this.streamRow(id, `read the metadata of stream '${id}'`))?.metadata ?? {};
  }

  async deleteStream(streamId: string, options?: { expectedVersion?: ExpectedVersion; hard?: boolean }): Promise<void> {
    await this.enter('delete a stream');
    const id = assertStreamId(streamId);
    const expected = assertExpectedVersion(options?.expectedVersion);
    const hard = options?.hard === true;
    const operation = `${hard ? 'hard-' : ''}delete stream '${id}'`;
    // The last parameter (keep the events until commit) is the driver's to set: see PGlite's transactions.
    const [row] = (await this.connection.query<WriteRow>(
      this.config.statements.deleteStream,
      [id, expectedText(expected), hard, false],
      operation,
    )) as [WriteRow];
    if (row.status !== 'ok') throw refusal(row, id, expected);
  }

  async lockStreams(streamIds: readonly string[]): Promise<void> {
    await this.enter('lock streams');
    const ids = assertStreamIds(streamIds);
    // Outside a transaction each statement commits on its own: there is nothing to hold the locks for.
    if (!this.inTransaction || ids.length === 0) return;
    const statements = this.config.statements;
    // Sorted by key (not by id): two ids may share a key, and the order must be one over the keys themselves.
    const keys = [...new Set(ids.map(streamLockKey))].sort((a, b) => a - b);
    await this.connection.query(
      statements.lockStreams,
      [statements.streamLockKey, keys],
      `lock streams ${ids.map((id) => `'${id}'`).join(', ')}`,
    );
  }

  async claimOwner(scope: string, value: string): Promise<string | null> {
    await this.enter('look up a claim');
    const uniqueness = this.config.uniqueness;
    if (!uniqueness)
      throw new ValidationError(
        `claimOwner: ${safeQuote(scope)} is not a uniqueness scope: this store has no uniqueness rules`,
      );
    const hash = uniqueness.hashOf(uniqueness.assertScope(scope, 'claimOwner'), value, 'claimOwner');
    const rows = await this.connection.query<{ owner: string }>(
      this.config.statements.claimOwner,
      [scope, hash],
      `look up a claim of '${scope}'`,
    );
    return rows[0]?.owner ?? null;
  }

  private async streamRow(id: string, operation: string): Promise<StreamRowData | undefined> {
    const rows = await this.connection.query<StreamRowData>(this.config.statements.streamState, [id], operation);
    return rows[0];
  }

  private eventsOf(rows: EventRow[]): Generator<RecordedEvent> {
    return eventsOf(this.config.events, rows);
  }
}

/**
 * A page's rows as events, letting go of each row as it is yielded (the page array is the caller's and is emptied):
 * a garbage collection while a consumer works through the page then keeps only the rest of it, so long reads stay
 * in the young generation and peak memory does not grow with the number of events read.
 */
export function* eventsOf(registry: EventRegistry | undefined, rows: EventRow[]): Generator<RecordedEvent> {
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!;
    (rows as Array<EventRow | undefined>)[i] = undefined;
    yield toRecorded(registry, row);
  }
}

/** An event row as a recorded event, upcast by the registry when there is one. */
export function toRecorded(registry: EventRegistry | undefined, row: EventRow): RecordedEvent {
  const event: RecordedEvent = {
    id: row[0],
    type: row[2],
    streamId: row[1],
    version: Number(row[3]),
    position: row[4],
    recordedAt: new Date(Number(row[5])),
    data: row[6],
    metadata: row[7],
  };
  return registry ? registry.upcast(event) : event;
}
