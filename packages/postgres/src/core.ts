/**
 * The event store logic shared by the PostgreSQL and PGlite backends. Everything here runs the statements of sql/statements.ts
 * through an {@link Executor}; the backends only differ in how they reach the database (a pool or one embedded
 * instance) and how they run transactions.
 */
import {
  ConcurrencyError,
  EventIdConflictError,
  StoreClosedError,
  StoreUnavailableError,
  StreamDeletedError,
  formatPosition,
  parsePosition,
  type AppendOptions,
  type AppendResult,
  type EventInput,
  type EventMetadata,
  type EventRegistry,
  type EventStore,
  type EventStoreSession,
  type ExpectedVersion,
  type Position,
  type ReadAllHoldback,
  type ReadAllOptions,
  type ReadAllPage,
  type ReadStreamOptions,
  type RecordedEvent,
  type StreamInfo,
  type StreamMetadata,
} from '@eventline/core';
import {
  assertExpectedVersion,
  assertStreamId,
  assertStreamIds,
  assertStreamMetadata,
  firstVisibleVersion,
  encodedEvent,
  encodeStoredEvent,
  normaliseReadAllOptions,
  normaliseReadStreamOptions,
  positionBeforeTransaction,
  prepareAppend,
  type EncodedEvent,
  type EncodedReadAllPage,
  type PreparedEvent,
} from '@eventline/core/backend';
import { DatabaseOperationError } from './errors.js';
import { streamLockKey, type Statement, type Statements } from './sql/statements.js';

/** How the store code reaches the database: one statement at a time, errors already mapped (see errors.ts). */
export interface Executor {
  query<R>(statement: Statement, values: unknown[], operation: string): Promise<R[]>;
  /** PGlite transactions: called before the first change to a stream, to remember its committed state. */
  beforeStreamWrite?(streamId: string): Promise<void>;
  /** PGlite transactions: a hard delete keeps the events until commit (see pglite.ts); `hardDeleted` is told which. */
  readonly keepHardDeletedEvents?: boolean;
  hardDeleted?(streamId: string): void;
  /**
   * Whether a stream read may take the stream's row and its first page in one statement (default yes). PGlite says no
   * while a transaction is open and store reads get the committed view (the row is then the one remembered before the
   * transaction changed it). Asked right before the query, with no await in between.
   */
  readsStreamAtOnce?(): boolean;
}

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

/** A row of the encoded readAll statement (readAllPageEncoded in sql/statements.ts): data and metadata as text, then header fields. */
type EncodedRow = [
  id: string,
  streamId: string,
  type: string,
  version: string | number,
  position: Position,
  recordedMs: string | number,
  data: string,
  metadata: string,
  snapshotXmin: null,
  correlationId: string | null,
  causationId: string | null,
  traceparent: string | null,
  schemaVersion: string | null,
];

interface WriteRow {
  status: 'ok' | 'duplicate' | 'deleted' | 'wrong_version' | 'id_conflict';
  stream_version: string | number | null;
  stream_exists: boolean | null;
}

/** The append statement's single column: see `appendEvents` in sql/statements.ts. */
interface AppendRow {
  r: string;
}

const INT8_MAX = 0x7fffffffffffffffn;

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

/**
 * A session: the store's operations on one executor. The store's own methods use a session on the pool (each statement
 * in its own transaction); `transaction()` gives `fn` a session on one transaction.
 */
export class SqlSession implements EventStoreSession {
  /**
   * Raw SQL on this session's connection: inside `transaction()`, statements run in the same transaction as the
   * session's appends (read-model writers use it to commit with the events).
   */
  readonly sql: SqlClient;

  constructor(
    protected readonly config: StoreConfig,
    protected readonly executor: Executor,
    /** Checked before each operation (transaction sessions: the transaction is still running). */
    private readonly guard?: (operation: string) => void,
  ) {
    this.sql = {
      schema: config.statements.schema,
      query: async <R>(text: string, values: unknown[] = [], options?: SqlQueryOptions) => {
        await this.enter('run a query');
        return executor.query<R>(
          { name: options?.prepare ? preparedName(text) : '', text, readOnly: false, raw: true },
          values,
          'run a query',
        );
      },
    };
  }

  /** Checked before each operation: the store is open and migrated, the transaction still running. */
  protected enter(operation: string): void | Promise<void> {
    this.guard?.(operation);
  }

  async append(streamId: string, events: readonly EventInput[], options?: AppendOptions): Promise<AppendResult> {
    await this.enter('append');
    const prepared = await prepareAppend(streamId, events, options, {
      registry: this.config.events,
      maxEventBytes: this.config.maxEventBytes,
    });
    const append = encodeAppend(prepared.streamId, prepared.expectedVersion, prepared.events);
    await this.enter(append.operation);
    await this.executor.beforeStreamWrite?.(append.streamId);
    return appendResult(append, await this.sendAppend(append));
  }

  /** Sends an append; resolves with the append function's result line. The PostgreSQL store groups them (append-groups.ts). */
  protected sendAppend(append: EncodedAppend): Promise<string> {
    return this.appendLine(append);
  }

  /**
   * Runs the append statement and resolves with its result line (see appendEvents in sql/statements.ts). The store's own session
   * (no `guard`: each statement its own transaction) skips the look-up of the batch's ids (see `p_check` in
   * migration 3) and asks again with it only when the unique index refused an id; a transaction's session always looks, so
   * that a retry or a conflict is an answer and not an aborted transaction.
   */
  protected async appendLine(append: EncodedAppend, check = this.guard !== undefined): Promise<string> {
    try {
      const rows = await this.executor.query<AppendRow>(
        this.config.statements.appendEvents,
        // The ids as an array literal: UUIDs need no quoting.
        [append.streamId, expectedText(append.expectedVersion), `{${append.eventIds.join(',')}}`, append.batch, check],
        append.operation,
      );
      return rows[0]!.r;
    } catch (error) {
      const conflicting = duplicateIdsOf(error, append.eventIds);
      if (!conflicting) throw error;
      if (!check) return this.appendLine(append, true);
      throw new EventIdConflictError(append.streamId, conflicting);
    }
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
    if (this.executor.readsStreamAtOnce?.() ?? true) {
      // The stream's row and the first page in one round trip (see readStreamFirstPage in sql/statements.ts).
      rows = forwards
        ? await this.readFirstPage(id, from ?? 1, size, operation)
        : await this.executor.query<EventRow>(
            statements.readStreamFirstBackwards,
            [id, 1, from ?? null, size],
            operation,
          );
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
      rows = await this.executor.query<EventRow>(statement, [id, low, high, maxAge, size], operation);
    }
  }

  /**
   * The stream's row and the first page of a forwards read, as the rows of {@link Statements.readStreamFirstForwards}
   * (see readStreamFirstPage in sql/statements.ts). The PostgreSQL store reads several streams in one statement (read-groups.ts).
   */
  protected readFirstPage(streamId: string, from: number, size: number, operation: string): Promise<EventRow[]> {
    return this.executor.query<EventRow>(
      this.config.statements.readStreamFirstForwards,
      [streamId, from, null, size],
      operation,
    );
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
    await this.executor.beforeStreamWrite?.(id);
    const [row] = (await this.executor.query<WriteRow>(
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
    const keep = hard && this.executor.keepHardDeletedEvents === true;
    const operation = `${hard ? 'hard-' : ''}delete stream '${id}'`;
    await this.executor.beforeStreamWrite?.(id);
    const [row] = (await this.executor.query<WriteRow>(
      this.config.statements.deleteStream,
      [id, expectedText(expected), hard, keep],
      operation,
    )) as [WriteRow];
    if (row.status !== 'ok') throw refusal(row, id, expected);
    if (keep) this.executor.hardDeleted?.(id);
  }

  async lockStreams(streamIds: readonly string[]): Promise<void> {
    await this.enter('lock streams');
    const ids = assertStreamIds(streamIds);
    // Outside a transaction each statement commits on its own: there is nothing to hold the locks for.
    if (this.guard === undefined || ids.length === 0) return;
    const statements = this.config.statements;
    // Sorted by key (not by id): two ids may share a key, and the order must be one over the keys themselves.
    const keys = [...new Set(ids.map(streamLockKey))].sort((a, b) => a - b);
    await this.executor.query(
      statements.lockStreams,
      [statements.streamLockKey, keys],
      `lock streams ${ids.map((id) => `'${id}'`).join(', ')}`,
    );
  }

  protected async streamRow(id: string, operation: string): Promise<StreamRowData | undefined> {
    const rows = await this.executor.query<StreamRowData>(this.config.statements.streamState, [id], operation);
    return rows[0];
  }

  /**
   * A page's rows as events, letting go of each row as it is yielded (the page array is the caller's and is emptied):
   * a garbage collection while a consumer works through the page then keeps only the rest of it, so long reads stay
   * in the young generation and peak memory does not grow with the number of events read.
   */
  protected *eventsOf(rows: EventRow[]): Generator<RecordedEvent> {
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      (rows as Array<EventRow | undefined>)[i] = undefined;
      yield this.toRecorded(row);
    }
  }

  protected toRecorded(row: EventRow): RecordedEvent {
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
    return this.config.events ? this.config.events.upcast(event) : event;
  }
}

/** The store's own operations (outside `transaction()`), on top of {@link SqlSession}: the global log and lifecycle. */
export abstract class SqlStoreBase extends SqlSession implements EventStore {
  private closed = false;
  private migrated = false;
  private migrating: Promise<number[]> | null = null;

  constructor(config: StoreConfig, executor: Executor) {
    super(config, executor);
  }

  protected override enter(operation: string): void | Promise<void> {
    return this.ready(operation);
  }

  /** The schema the store uses. */
  get schema(): string {
    return this.config.statements.schema;
  }

  /**
   * Applies the schema migrations now (otherwise the first operation does) and resolves with the versions it applied:
   * empty when the schema was up to date, or when this store already migrated it. Safe from several processes at once.
   */
  migrate(): Promise<number[]> {
    if (this.closed) return Promise.reject(new StoreClosedError('migrate'));
    if (this.migrated) return Promise.resolve([]);
    this.migrating ??= this.runMigrations().then(
      (applied) => {
        this.migrated = true;
        return applied;
      },
      (error: unknown) => {
        this.migrating = null;
        throw error;
      },
    );
    return this.migrating;
  }

  readAll(options?: ReadAllOptions): AsyncIterable<RecordedEvent> {
    return this.readAllPages(options);
  }

  /** Pages with {@link fetchAllPage}; rows become events only as they are yielded, so a page is held once, not twice. */
  private async *readAllPages(options?: ReadAllOptions): AsyncGenerator<RecordedEvent> {
    const normalised = normaliseReadAllOptions(options);
    let after = normalised.after;
    let remaining = normalised.limit;
    while (remaining > 0) {
      const page = await this.fetchAllPage(normalised, after, Math.min(remaining, normalised.pageSize));
      remaining -= page.rows.length;
      yield* this.eventsOf(page.rows);
      if (page.atEnd) return;
      after = page.next;
    }
  }

  async readAllPage(options?: ReadAllOptions): Promise<ReadAllPage> {
    const normalised = normaliseReadAllOptions(options, 1000);
    const page = await this.fetchAllPage(normalised, normalised.after, normalised.limit);
    return { events: page.rows.map((row) => this.toRecorded(row)), next: page.next, atEnd: page.atEnd };
  }

  async readAllPageEncoded(options?: ReadAllOptions): Promise<EncodedReadAllPage> {
    const normalised = normaliseReadAllOptions(options, 1000);
    const page = await this.fetchAllPage<EncodedRow>(
      normalised,
      normalised.after,
      normalised.limit,
      this.config.statements.readAllPageEncoded,
    );
    const registry = this.config.events;
    const events: EncodedEvent[] = new Array(page.rows.length);
    for (let i = 0; i < page.rows.length; i++) {
      const row = page.rows[i]!;
      const schemaVersion = row[12] === null ? 1 : Number(row[12]);
      if (registry && !registry.isCurrent(row[2], schemaVersion)) {
        // Renamed or older schema: upcast like every read path, then encode.
        events[i] = encodedEvent(
          this.toRecorded([
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            JSON.parse(row[6]),
            JSON.parse(row[7]) as EventMetadata,
          ]),
        );
        continue;
      }
      const message = encodeStoredEvent({
        id: row[0],
        streamId: row[1],
        type: row[2],
        version: String(row[3]),
        position: row[4],
        recordedAt: new Date(Number(row[5])),
        dataJson: row[6],
        metadataJson: row[7],
        correlationId: row[9],
        causationId: row[10],
        traceparent: row[11],
      });
      events[i] = { id: row[0], streamId: row[1], position: row[4], message };
    }
    return { events, next: page.next, atEnd: page.atEnd };
  }

  /** One gap-safe page of event rows after `after`, and where to resume (see `readAllPage` in sql/statements.ts and the contract). */
  private async fetchAllPage<R extends unknown[] = EventRow>(
    filter: { types: string[] | null; categories: string[] | null },
    after: Position,
    limit: number,
    statement = this.config.statements.readAllPage,
  ): Promise<{ rows: R[]; next: Position; atEnd: boolean }> {
    await this.ready('read all');
    const storedTypes =
      filter.types && this.config.events ? this.config.events.storedNames(filter.types) : filter.types;
    const { transaction, sequence } = parsePosition(after);
    // Rows: the event columns (position at 4), null in column 8; and one row of nulls with the snapshot's xmin in 8.
    const result = await this.executor.query<unknown[]>(
      statement,
      [
        transaction.toString(),
        (sequence > INT8_MAX ? INT8_MAX : sequence).toString(),
        storedTypes,
        filter.categories,
        limit,
      ],
      'read all',
    );
    // The xmin row usually comes last: drop it without copying the page.
    let xmin: string | null = null;
    const last = result[result.length - 1];
    if (last && last[0] === null) {
      xmin = last[8] as string;
      result.pop();
    }
    let rows = result as R[];
    if (xmin === null) {
      xmin = result.find((row) => row[0] === null)![8] as string;
      rows = result.filter((row) => row[0] !== null) as R[];
    }
    if (rows.length === limit) return { rows, next: rows[rows.length - 1]![4] as Position, atEnd: false };
    const boundary = positionBeforeTransaction(BigInt(xmin!));
    return { rows, next: boundary > after ? boundary : after, atEnd: true };
  }

  async headPosition(): Promise<Position> {
    await this.ready('read the head position');
    const [row] = await this.executor.query<{ xmin: string }>(
      this.config.statements.snapshotXmin,
      [],
      'read the head position',
    );
    return positionBeforeTransaction(BigInt(row!.xmin));
  }

  async nextPosition(): Promise<Position> {
    await this.ready('read the next position');
    const [row] = await this.executor.query<{ xmax: string }>(
      this.config.statements.snapshotXmax,
      [],
      'read the next position',
    );
    return formatPosition(BigInt(row!.xmax), 0n);
  }

  async readAllHoldback(): Promise<ReadAllHoldback> {
    await this.ready('read the holdback');
    const [row] = await this.executor.query<{ held_back: string | number; oldest_ms: number | null }>(
      this.config.statements.readAllHoldback,
      [],
      'read the holdback',
    );
    return {
      heldBackEvents: Number(row!.held_back),
      oldestOpenTransactionMs:
        row!.oldest_ms === null ? this.openTransactionAgeMs() : Math.max(0, Math.round(row!.oldest_ms)),
    };
  }

  async transaction<T>(fn: (session: EventStoreSession) => Promise<T>): Promise<T> {
    await this.ready('start a transaction');
    let appended = false;
    const result = await this.runTransaction((session) =>
      fn(
        // The session as given, but noting whether it appended anything, so that only such commits wake readers.
        Object.create(session, {
          append: {
            value: async (...args: Parameters<EventStoreSession['append']>) => {
              const appendResult = await session.append(...args);
              if (!appendResult.duplicate) appended = true;
              return appendResult;
            },
          },
        }) as EventStoreSession,
      ),
    );
    if (appended) this.appended();
    return result;
  }

  override async append(
    streamId: string,
    events: readonly EventInput[],
    options?: AppendOptions,
  ): Promise<AppendResult> {
    const result = await super.append(streamId, events, options);
    if (!result.duplicate) this.appended();
    return result;
  }

  private readonly appendListeners = new Set<() => void>();

  /**
   * Calls `listener` soon after events are committed: by this store at once, and (on a PostgreSQL server) by other
   * processes through LISTEN/NOTIFY. A wake-up only, which may be coalesced or spurious; readers also poll.
   */
  onAppended(listener: () => void): () => void {
    this.appendListeners.add(listener);
    if (this.appendListeners.size === 1) void this.listenForAppends(() => this.wakeListeners()).catch(() => undefined);
    return () => {
      this.appendListeners.delete(listener);
      if (this.appendListeners.size === 0) void this.unlistenForAppends().catch(() => undefined);
    };
  }

  /** After a commit: wake this process's listeners, and tell other processes (see {@link notifyAppended}). */
  protected appended(): void {
    this.wakeListeners();
    this.notifyAppended();
  }

  private wakeListeners(): void {
    for (const listener of this.appendListeners) queueMicrotask(listener);
  }

  /** Server backends: start listening for other processes' appends. */
  protected async listenForAppends(_wake: () => void): Promise<void> {}
  protected async unlistenForAppends(): Promise<void> {}
  /** Server backends: a coalesced NOTIFY, off the append's path (not a trigger: NOTIFY at commit serialises writers). */
  protected notifyAppended(): void {}

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.appendListeners.clear();
    await this.unlistenForAppends().catch(() => undefined);
    await this.releaseConnections();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  protected ready(operation: string): void | Promise<void> {
    if (this.closed) throw new StoreClosedError(operation);
    if (!this.migrated) {
      return this.migrate().then(
        () => undefined,
        (error: unknown) => {
          // Name the caller's operation: "append to 'x' (migrating schema 'y' first)".
          if (error instanceof StoreUnavailableError)
            throw new StoreUnavailableError(`${operation} (migrating schema '${this.schema}' first)`, error.cause);
          throw error;
        },
      );
    }
  }

  /** Applies the migrations in one transaction holding the schema's advisory lock. */
  protected abstract runMigrations(): Promise<number[]>;
  /** Runs `fn` with a session on one transaction: commit when it resolves, roll back and rethrow when it throws. */
  protected abstract runTransaction<T>(fn: (session: EventStoreSession) => Promise<T>): Promise<T>;
  /** Ends what the store created. */
  protected abstract releaseConnections(): Promise<void>;
  /** Age of an open transaction the backend knows of itself, when the database does not say (PGlite). */
  protected openTransactionAgeMs(): number | null {
    return null;
  }
}
