import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  ReplayPolicy,
  StorageType,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StreamInfo,
} from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import {
  type ConsumeOptions,
  type Consumer,
  type ReceivedMessage,
  type Transport,
  type TransportMessage,
} from '@eventline/core';
import { HEADERS, subjectMatches } from '@eventline/core/backend';
import { AckCollector, type OutgoingMessage } from './acks.js';
import { assertPrefix, filterSubjects, safeName, subjectProblem, versionAtLeast } from './names.js';

export interface NatsTransportOptions {
  /** NATS server URL(s). Default: `NATS_URL`, else `nats://127.0.0.1:4222`. Ignored when `connection` is given. */
  readonly servers?: string | readonly string[];
  /** An existing connection. The transport uses it and never closes it: `close()` only stops this transport's consumers. */
  readonly connection?: NatsConnection;
  /** Subject prefix: messages go to `<prefix>.<category>.<type>`. Default `eventline`. */
  readonly prefix?: string;
  /** The JetStream stream capturing `<prefix>.>`. Default: derived from the prefix (`eventline`; `acme.events` → `acme_events_<hash>`). */
  readonly stream?: string;
  /**
   * The stream's de-duplication window: a message id published again within it is stored once. Applied when the
   * stream is created (default 2 minutes, as NATS); when given explicitly, an existing stream is updated to it.
   */
  readonly duplicateWindowMs?: number;
  /** How long a delivered message may stay unacknowledged before JetStream redelivers it (default 30 s). */
  readonly ackWaitMs?: number;
  /** How long `publish` waits for each PubAck (default 5 s). */
  readonly publishTimeoutMs?: number;
  /** Connection name shown by the server (default `eventline-nats`). */
  readonly name?: string;
  /** Errors of the background consume loops (which retry by themselves). Default: `console.warn`. */
  readonly onError?: (error: NatsTransportError) => void;
}

/** A transport on NATS JetStream; `connection` is the underlying connection (for health checks, or to kill it in tests). */
export interface NatsTransport extends Transport {
  readonly connection: NatsConnection;
  readonly prefix: string;
  readonly stream: string;
}

/** An error of the NATS transport; `operation` names what failed (`connect`, `publish`, `consume`, `ack`, ...). */
export class NatsTransportError extends Error {
  constructor(
    readonly operation: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`NATS transport: ${operation}: ${message}`, options);
    this.name = 'NatsTransportError';
  }
}

const DEFAULT_SERVERS = 'nats://127.0.0.1:4222';
const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;
const DEFAULT_ACK_WAIT_MS = 30_000;
const DEFAULT_PUBLISH_TIMEOUT_MS = 5_000;
/** Pull requests expire (and are renewed) this often; heartbeats every half of it detect a silent server. */
const PULL_EXPIRES_MS = 5_000;
const MSG_ID_HEADER = 'Nats-Msg-Id';
const EXPECTED_STREAM_HEADER = 'Nats-Expected-Stream';
const HEADER_KEY = /^[!-9;-~]+$/;
const LINE_BREAK = /[\r\n]/;

/** Why a message's headers cannot go on the wire (keys: visible ASCII but ':'; values: no CR or LF), or undefined. */
function headerProblem(message: TransportMessage): string | undefined {
  for (const key in message.headers) {
    if (!HEADER_KEY.test(key)) return `header name ${JSON.stringify(key)} is not visible ASCII without ':'`;
    if (LINE_BREAK.test(message.headers[key]!)) return `header ${key} contains a line break`;
  }
  return LINE_BREAK.test(message.id) ? 'the id contains a line break' : undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isApiError(error: unknown, code: number): boolean {
  return error instanceof JetStreamApiError && error.code === code;
}

/**
 * Connects to NATS and returns a {@link NatsTransport}: messages are published to JetStream with their id as
 * `Nats-Msg-Id` (server-side de-duplication) and consumed through one durable pull consumer per group with
 * `max_ack_pending = 1`, which keeps every stream in publish order across competing members. See the README.
 */
export async function createNatsTransport(options: NatsTransportOptions = {}): Promise<NatsTransport> {
  const prefix = options.prefix ?? 'eventline';
  assertPrefix(prefix);
  const stream = options.stream ?? safeName(prefix);
  if (safeName(stream) !== stream)
    throw new NatsTransportError('configure', `invalid stream name ${JSON.stringify(stream)}`);
  const ackWaitMs = options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
  if (!(ackWaitMs >= 100)) throw new NatsTransportError('configure', 'ackWaitMs must be at least 100');
  const publishTimeoutMs = options.publishTimeoutMs ?? DEFAULT_PUBLISH_TIMEOUT_MS;
  const duplicateWindowMs = options.duplicateWindowMs ?? DEFAULT_DUPLICATE_WINDOW_MS;
  if (!(duplicateWindowMs >= 100)) throw new NatsTransportError('configure', 'duplicateWindowMs must be at least 100');
  const report = options.onError ?? ((error: NatsTransportError) => console.warn(error.message));
  const onError = (error: NatsTransportError) => {
    try {
      report(error);
    } catch {
      /* a failing error callback must not end a consume loop */
    }
  };

  const owned = !options.connection;
  let nc: NatsConnection;
  if (options.connection) {
    nc = options.connection;
  } else {
    const servers = options.servers ?? process.env.NATS_URL ?? DEFAULT_SERVERS;
    try {
      nc = await connect({
        servers: typeof servers === 'string' ? servers : [...servers],
        name: options.name ?? 'eventline-nats',
        maxReconnectAttempts: -1, // keep trying for ever: a restarted server must not end the transport
        reconnectTimeWait: 500,
        // nats.js otherwise creates an Error per request (every publish and ack) to keep the caller's stack for a
        // timeout that almost never comes: a third of the CPU of publishing. Our errors name the operation instead.
        noAsyncTraces: true,
      });
    } catch (error) {
      throw new NatsTransportError('connect', `cannot connect to ${String(servers)}: ${describe(error)}`, {
        cause: error,
      });
    }
  }
  const js: JetStreamClient = jetstream(nc, { timeout: publishTimeoutMs });
  let manager: Promise<JetStreamManager> | undefined;
  const jsm = () => {
    manager ??= jetstreamManager(nc, { timeout: publishTimeoutMs }).catch((error: unknown) => {
      manager = undefined;
      throw error;
    });
    return manager;
  };

  // ---- stream -------------------------------------------------------------------------------------------------
  let streamReady: Promise<void> | undefined;
  const ensureStream = (operation: string): Promise<void> => {
    streamReady ??= createOrUpdateStream().catch((error: unknown) => {
      streamReady = undefined;
      throw new NatsTransportError(
        operation,
        `cannot create or update JetStream stream ${JSON.stringify(stream)}: ${describe(error)}`,
        { cause: error },
      );
    });
    return streamReady;
  };
  const createOrUpdateStream = async (): Promise<void> => {
    const manager = await jsm();
    const subject = `${prefix}.>`;
    const info = async (): Promise<StreamInfo | undefined> => {
      try {
        return await manager.streams.info(stream);
      } catch (error) {
        if (isApiError(error, JetStreamApiCodes.StreamNotFound)) return undefined;
        throw error;
      }
    };
    let current = await info();
    if (!current) {
      try {
        await manager.streams.add({
          name: stream,
          subjects: [subject],
          storage: StorageType.File,
          duplicate_window: nanos(duplicateWindowMs),
        });
        return;
      } catch (error) {
        current = await info(); // another client may have created it meanwhile
        if (!current) throw error;
      }
    }
    const config = current.config;
    const changes: { subjects?: string[]; duplicate_window?: number } = {};
    if (!(config.subjects ?? []).includes(subject)) changes.subjects = [...(config.subjects ?? []), subject];
    if (options.duplicateWindowMs !== undefined && config.duplicate_window !== nanos(duplicateWindowMs))
      changes.duplicate_window = nanos(duplicateWindowMs);
    if (Object.keys(changes).length > 0) await manager.streams.update(stream, changes);
  };

  // ---- publish ------------------------------------------------------------------------------------------------
  const acks = new AckCollector(nc, stream, publishTimeoutMs);
  const outgoing = (message: TransportMessage): OutgoingMessage => {
    const headers: Array<readonly [string, string]> = [
      [MSG_ID_HEADER, message.id],
      [EXPECTED_STREAM_HEADER, stream],
    ];
    for (const key in message.headers) headers.push([key, message.headers[key]!]);
    if (!(HEADERS.streamId in message.headers)) headers.push([HEADERS.streamId, message.streamId]);
    return { subject: `${prefix}.${message.subject}`, body: message.body, headers };
  };

  // ---- consume ------------------------------------------------------------------------------------------------
  const runners = new Set<GroupRunner>();
  let closed = false;
  const assertOpen = (operation: string) => {
    if (closed) throw new NatsTransportError(operation, 'the transport is closed');
  };

  const ensureConsumer = async (
    durable: string,
    group: string,
    config: Partial<ConsumerConfig>,
    from: ConsumeOptions['from'],
  ) => {
    const manager = await jsm();
    let info;
    try {
      info = await manager.consumers.info(stream, durable);
    } catch (error) {
      if (!isApiError(error, JetStreamApiCodes.ConsumerNotFound)) throw error;
    }
    if (!info) {
      try {
        await manager.consumers.add(stream, {
          ...config,
          durable_name: durable,
          deliver_policy: from === 'new' ? DeliverPolicy.New : DeliverPolicy.All,
          replay_policy: ReplayPolicy.Instant,
          max_deliver: -1,
        });
        return;
      } catch (error) {
        try {
          info = await manager.consumers.info(stream, durable); // another member created it meanwhile
        } catch {
          throw error;
        }
      }
    }
    const existing = info.config;
    const sameFilters =
      JSON.stringify(existing.filter_subjects ?? (existing.filter_subject ? [existing.filter_subject] : [])) ===
      JSON.stringify(config.filter_subjects ?? (config.filter_subject ? [config.filter_subject] : []));
    if (
      existing.ack_wait === config.ack_wait &&
      existing.max_ack_pending === config.max_ack_pending &&
      existing.ack_policy === AckPolicy.Explicit &&
      sameFilters
    )
      return;
    try {
      await manager.consumers.update(stream, durable, {
        ack_wait: config.ack_wait!,
        max_ack_pending: config.max_ack_pending!,
        filter_subject: config.filter_subject,
        filter_subjects: config.filter_subjects,
      } as Parameters<JetStreamManager['consumers']['update']>[2]);
    } catch (error) {
      throw new Error(
        `the durable consumer ${JSON.stringify(durable)} of group ${JSON.stringify(group)} exists with another configuration and cannot be updated ` +
          `(${describe(error)}); delete it or use another group name`,
        { cause: error },
      );
    }
  };

  class GroupRunner {
    stopped = false;
    messages: ConsumerMessages | undefined;
    readonly done: Promise<void>;
    private wake: (() => void) | undefined;

    constructor(
      readonly options: ConsumeOptions,
      readonly durable: string,
      readonly config: Partial<ConsumerConfig>,
      /** Set when the server cannot filter on several subjects: the consumer takes the whole prefix and filters here. */
      readonly clientFilter: readonly string[] | undefined,
    ) {
      this.done = this.loop();
    }

    private async loop(): Promise<void> {
      let failures = 0;
      let setUp = true; // consume() just created the consumer
      while (!this.stopped && !nc.isClosed()) {
        try {
          if (!setUp) {
            streamReady = undefined; // check again: the stream may be what went missing
            await ensureStream('consume');
            await ensureConsumer(this.durable, this.options.group, this.config, this.options.from);
          }
          setUp = false;
          const consumer = await js.consumers.get(stream, this.durable);
          const messages = await consumer.consume({
            max_messages: 1,
            expires: PULL_EXPIRES_MS,
            abort_on_missing_resource: true,
          });
          this.messages = messages;
          if (this.stopped) messages.stop();
          for await (const message of messages) {
            failures = 0;
            if (this.stopped || nc.isClosed()) {
              // Taken after stop(): hand it straight back so another member gets it without waiting for the ack wait.
              try {
                message.nak();
              } catch {
                /* the connection is gone: the ack wait will release it */
              }
              continue;
            }
            await this.handle(message);
          }
        } catch (error) {
          if (this.stopped || nc.isClosed()) break;
          failures++;
          onError(
            new NatsTransportError(
              `consume (group ${JSON.stringify(this.options.group)})`,
              `${describe(error)}; retrying`,
              { cause: error },
            ),
          );
        }
        if (this.stopped || nc.isClosed()) break;
        // The iterator ended or failed (consumer or stream deleted, connection trouble): set up again, after a pause.
        await this.pause(Math.min(5_000, 100 * 2 ** Math.min(failures, 6)));
      }
    }

    private pause(ms: number): Promise<void> {
      return new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }

    private async handle(message: JsMsg): Promise<void> {
      const received = toReceived(message);
      if (this.clientFilter && !subjectMatches(received.subject, this.clientFilter)) {
        await this.ack(message);
        return;
      }
      // A handler slower than the ack wait keeps its message: "in progress" resets the server's ack timer, so the
      // message is not redelivered to another member while this one still works on it.
      const progress = setInterval(
        () => {
          if (nc.isClosed()) return clearInterval(progress);
          try {
            message.working();
          } catch {
            /* disconnected: the ack wait decides */
          }
        },
        Math.max(50, Math.floor(ackWaitMs / 3)),
      );
      progress.unref();
      let ok: boolean;
      try {
        await this.options.handler(received);
        ok = true;
      } catch {
        ok = false;
      } finally {
        clearInterval(progress);
      }
      if (nc.isClosed()) return;
      if (ok) {
        await this.ack(message);
      } else {
        try {
          message.nak(this.options.retryDelayMs ?? 1000);
        } catch (error) {
          onError(
            new NatsTransportError(
              'nak',
              `message ${received.id}: ${describe(error)} (redelivered after the ack wait)`,
              { cause: error },
            ),
          );
        }
      }
    }

    private async ack(message: JsMsg): Promise<void> {
      try {
        await message.ackAck({ timeout: publishTimeoutMs });
      } catch (error) {
        if (!nc.isClosed())
          onError(
            new NatsTransportError(
              'ack',
              `message ${message.headers?.get(MSG_ID_HEADER) ?? message.seq}: ${describe(error)} (it may be delivered again)`,
              { cause: error },
            ),
          );
      }
    }

    /** Stops taking messages and waits for the one in progress (and its ack); `timeoutMs` bounds the wait. */
    async stop(timeoutMs?: number): Promise<void> {
      this.stopped = true;
      this.messages?.stop();
      this.wake?.();
      const waits: Array<Promise<unknown>> = [this.done, nc.closed()];
      let timer: NodeJS.Timeout | undefined;
      if (timeoutMs !== undefined) waits.push(new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))));
      await Promise.race(waits);
      if (timer) clearTimeout(timer);
      runners.delete(this);
    }
  }

  const toReceived = (message: JsMsg): ReceivedMessage => {
    const headers: Record<string, string> = {};
    let id: string | undefined;
    if (message.headers) {
      for (const key of message.headers.keys()) {
        const value = message.headers.get(key);
        if (key.toLowerCase() === MSG_ID_HEADER.toLowerCase()) id = value;
        else if (!key.toLowerCase().startsWith('nats-')) headers[key] = value;
      }
    }
    return {
      id: id ?? `${stream}:${message.seq}`,
      subject: message.subject.slice(prefix.length + 1),
      streamId: headers[HEADERS.streamId] ?? '',
      body: message.string(),
      headers,
      deliveryCount: message.info.deliveryCount,
    };
  };

  return {
    name: 'nats',
    connection: nc,
    prefix,
    stream,

    async publish(messages) {
      assertOpen('publish');
      if (messages.length === 0) return;
      const batch: OutgoingMessage[] = [];
      for (const message of messages) {
        const problem = subjectProblem(message.subject) ?? headerProblem(message);
        if (problem) throw new NatsTransportError('publish', `message ${message.id}: ${problem}`);
        if (!message.id) throw new NatsTransportError('publish', 'a message has no id');
        batch.push(outgoing(message));
      }
      await ensureStream('publish');
      // The whole batch is sent in one synchronous loop (AckCollector), the PubAcks awaited only after it. That keeps
      // every stream in order whatever fails: nats.js puts a publish into the connection's outbound buffer at once
      // (no await before the write), a connection drop can only be seen between turns of the event loop (never inside
      // this loop), and the buffer is discarded when it reconnects. So the batch goes out whole on one connection, in
      // order, and the server, which stores a connection's messages in the order it reads them, stores a prefix of it
      // when the connection drops; the retry of the batch sends it again in order and the server drops what it has
      // (Nats-Msg-Id). A per-message refusal with later ones stored would need stream limits that refuse new messages
      // (discard: new), which this transport does not configure.
      const outcomes = await acks.publish(batch);
      const failures: Array<{ id: string; error: unknown }> = [];
      outcomes.forEach((error, i) => {
        if (error) failures.push({ id: messages[i]!.id, error });
      });
      // No responders: the stream (or JetStream) is gone; make sure it exists again on the next publish.
      if (failures.some(({ error }) => /no responders/i.test(describe(error)))) streamReady = undefined;
      if (failures.length > 0) {
        const first = failures[0]!;
        throw new NatsTransportError(
          'publish',
          `${failures.length} message(s) of ${messages.length} not acknowledged by stream ${stream} (first: ${first.id}: ${describe(first.error)})`,
          { cause: first.error },
        );
      }
    },

    async consume(consumeOptions) {
      assertOpen('consume');
      if (!consumeOptions.group) throw new NatsTransportError('consume', 'a group is required');
      if (consumeOptions.retryDelayMs !== undefined && !(consumeOptions.retryDelayMs >= 0))
        throw new NatsTransportError('consume', 'retryDelayMs must be 0 or more');
      const operation = `consume (group ${JSON.stringify(consumeOptions.group)})`;
      let filters: string[];
      try {
        filters = filterSubjects(prefix, consumeOptions.subjects);
      } catch (error) {
        throw new NatsTransportError(operation, describe(error));
      }
      let clientFilter: readonly string[] | undefined;
      const config: Partial<ConsumerConfig> = {
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(ackWaitMs),
        max_ack_pending: 1,
      };
      if (filters.length === 1) config.filter_subject = filters[0];
      else if (versionAtLeast(nc.info?.version, 2, 10)) config.filter_subjects = filters;
      else {
        // nats-server before 2.10 filters on one subject only: take the prefix and skip the others here (acknowledged).
        config.filter_subject = `${prefix}.>`;
        clientFilter = consumeOptions.subjects;
      }
      const durable = safeName(consumeOptions.group);
      await ensureStream(operation);
      try {
        await ensureConsumer(durable, consumeOptions.group, config, consumeOptions.from);
      } catch (error) {
        throw new NatsTransportError(
          operation,
          `cannot create durable consumer ${JSON.stringify(durable)} on stream ${stream}: ${describe(error)}`,
          { cause: error },
        );
      }
      assertOpen('consume');
      const runner = new GroupRunner(consumeOptions, durable, config, clientFilter);
      runners.add(runner);
      return { stop: () => runner.stop() } satisfies Consumer;
    },

    async close() {
      if (closed) return;
      closed = true;
      // A message in progress gets up to the ack wait to finish; after that the server would redeliver it anyway.
      await Promise.all([...runners].map((runner) => runner.stop(ackWaitMs)));
      acks.close();
      if (owned && !nc.isClosed()) {
        try {
          await nc.drain();
        } catch {
          await nc.close().catch(() => undefined);
        }
      }
    },
  };
}
