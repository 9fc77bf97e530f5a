import { AckPolicy, jetstream, type ConsumerConfig, type JetStreamClient } from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import {
  systemClock,
  TransportClosedError,
  TransportConfigurationError,
  TransportError,
  TransportUnavailableError,
  type Clock,
  type ConsumeOptions,
  type Consumer,
  type Transport,
  type TransportMessage,
} from '@eventline/core';
import { AckCollector, type OutgoingMessage, type PublishFailure } from './acks.js';
import { GroupRunner, type GroupContext } from './group-runner.js';
import { describe, headerProblem, outgoingMessage } from './messages.js';
import { assertPrefix, filterSubjects, safeName, subjectProblem, versionAtLeast } from './names.js';
import { JetStreamProvisioner } from './provisioning.js';

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
  readonly onError?: (error: TransportError) => void;
  /** Time for the transport's own waits: set-up retries, "in progress" renewals, PubAck timeouts. Default: the system's. */
  readonly clock?: Clock;
}

/** A transport on NATS JetStream; `connection` is the underlying connection (for health checks, or to kill it in tests). */
export interface NatsTransport extends Transport {
  readonly connection: NatsConnection;
  readonly prefix: string;
  readonly stream: string;
}

const DEFAULT_SERVERS = 'nats://127.0.0.1:4222';
const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;
const DEFAULT_ACK_WAIT_MS = 30_000;
const DEFAULT_PUBLISH_TIMEOUT_MS = 5_000;

/** The error class of each kind of publish failure. */
const FAILURE_ERRORS: Record<PublishFailure['kind'], typeof TransportError> = {
  unavailable: TransportUnavailableError,
  closed: TransportClosedError,
  refused: TransportError,
  configuration: TransportConfigurationError,
};

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
    throw new TransportConfigurationError(
      'nats',
      'configure',
      `invalid stream name ${JSON.stringify(stream)}: use letters, digits, '_' and '-', at most 64 characters`,
    );
  const ackWaitMs = options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
  if (!(ackWaitMs >= 100)) throw new TransportConfigurationError('nats', 'configure', 'ackWaitMs must be at least 100');
  const publishTimeoutMs = options.publishTimeoutMs ?? DEFAULT_PUBLISH_TIMEOUT_MS;
  const duplicateWindowMs = options.duplicateWindowMs ?? DEFAULT_DUPLICATE_WINDOW_MS;
  if (!(duplicateWindowMs >= 100))
    throw new TransportConfigurationError('nats', 'configure', 'duplicateWindowMs must be at least 100');
  const report = options.onError ?? ((error: TransportError) => console.warn(error.message));
  const connection = options.connection ?? (await connectTo(options));
  return new JetStreamTransport(
    connection,
    !options.connection,
    { prefix, stream, ackWaitMs, publishTimeoutMs, duplicateWindowMs, clock: options.clock ?? systemClock },
    options.duplicateWindowMs !== undefined,
    (error) => {
      try {
        report(error);
      } catch {
        /* a failing error callback must not end a consume loop */
      }
    },
  );
}

async function connectTo(options: NatsTransportOptions): Promise<NatsConnection> {
  const servers = options.servers ?? process.env.NATS_URL ?? DEFAULT_SERVERS;
  try {
    return await connect({
      servers: typeof servers === 'string' ? servers : [...servers],
      name: options.name ?? 'eventline-nats',
      maxReconnectAttempts: -1, // keep trying for ever: a restarted server must not end the transport
      reconnectTimeWait: 500,
      // nats.js otherwise creates an Error per request (every publish and ack) to keep the caller's stack for a
      // timeout that almost never comes: a third of the CPU of publishing. Our errors name the operation instead.
      noAsyncTraces: true,
    });
  } catch (error) {
    throw new TransportUnavailableError(
      'nats',
      'connect',
      `cannot connect to ${String(servers)}: ${describe(error)} (is nats-server running there, with JetStream?)`,
      error,
    );
  }
}

interface TransportSettings {
  readonly prefix: string;
  readonly stream: string;
  readonly ackWaitMs: number;
  readonly publishTimeoutMs: number;
  readonly duplicateWindowMs: number;
  readonly clock: Clock;
}

/** The transport on one connection: publishes batches through its {@link AckCollector}, runs one {@link GroupRunner} per consume(). */
class JetStreamTransport implements NatsTransport {
  readonly name = 'nats';
  readonly prefix: string;
  readonly stream: string;
  private readonly provisioner: JetStreamProvisioner;
  private readonly acks: AckCollector;
  private readonly groups: GroupContext;
  private readonly runners = new Set<GroupRunner>();
  private closed = false;

  constructor(
    readonly connection: NatsConnection,
    /** Whether the transport opened the connection (and so closes it). */
    private readonly owned: boolean,
    private readonly settings: TransportSettings,
    duplicateWindowGiven: boolean,
    report: (error: TransportError) => void,
  ) {
    const { prefix, stream, publishTimeoutMs, duplicateWindowMs, ackWaitMs, clock } = settings;
    this.prefix = prefix;
    this.stream = stream;
    this.provisioner = new JetStreamProvisioner(connection, {
      stream,
      prefix,
      duplicateWindowMs,
      duplicateWindowGiven,
      timeoutMs: publishTimeoutMs,
    });
    this.acks = new AckCollector(connection, stream, publishTimeoutMs, clock);
    const js: JetStreamClient = jetstream(connection, { timeout: publishTimeoutMs });
    this.groups = {
      nc: connection,
      js,
      provisioner: this.provisioner,
      stream,
      prefix,
      ackWaitMs,
      ackTimeoutMs: publishTimeoutMs,
      clock,
      report,
    };
  }

  async publish(messages: readonly TransportMessage[]): Promise<void> {
    this.assertOpen('publish');
    if (messages.length === 0) return;
    const batch: OutgoingMessage[] = [];
    for (const message of messages) {
      const problem = subjectProblem(message.subject) ?? headerProblem(message);
      if (problem) throw new TransportError('nats', 'publish', `message ${message.id}: ${problem}; nothing was sent`);
      if (!message.id) throw new TransportError('nats', 'publish', 'a message has no id; nothing was sent');
      batch.push(outgoingMessage(message, this.prefix, this.stream));
    }
    await this.provisioner.ensureStream('publish');
    // The whole batch is sent in one synchronous loop (AckCollector), the PubAcks awaited only after it. That keeps
    // every stream in order whatever fails: nats.js puts a publish into the connection's outbound buffer at once
    // (no await before the write), a connection drop can only be seen between turns of the event loop (never inside
    // this loop), and the buffer is discarded when it reconnects. So the batch goes out whole on one connection, in
    // order, and the server, which stores a connection's messages in the order it reads them, stores a prefix of it
    // when the connection drops; the retry of the batch sends it again in order and the server drops what it has
    // (Nats-Msg-Id). A per-message refusal with later ones stored would need stream limits that refuse new messages
    // (discard: new), which this transport does not configure.
    const outcomes = await this.acks.publish(batch);
    const failures: Array<{ id: string; failure: PublishFailure }> = [];
    outcomes.forEach((failure, i) => {
      if (failure) failures.push({ id: messages[i]!.id, failure });
    });
    if (failures.length === 0) return;
    // No responders: the stream (or JetStream) is gone; make sure it exists again on the next publish.
    if (failures.some(({ failure }) => failure.streamMissing)) this.provisioner.forgetStream();
    const { id, failure } = failures[0]!;
    throw new FAILURE_ERRORS[failure.kind](
      'nats',
      'publish',
      `${failures.length} message(s) of ${messages.length} not acknowledged by stream ${this.stream} (first: ${id}: ${failure.detail})` +
        (failure.kind === 'unavailable' ? '; publish them again (stored ones are de-duplicated)' : ''),
      failure.cause,
    );
  }

  async consume(options: ConsumeOptions): Promise<Consumer> {
    this.assertOpen('consume');
    if (!options.group) throw new TransportConfigurationError('nats', 'consume', 'a group is required');
    if (options.retryDelayMs !== undefined && !(options.retryDelayMs >= 0))
      throw new TransportConfigurationError('nats', 'consume', 'retryDelayMs must be 0 or more');
    const operation = `consume (group ${JSON.stringify(options.group)})`;
    const { config, clientFilter } = this.consumerConfig(options, operation);
    const durable = safeName(options.group);
    await this.provisioner.ensureStream(operation);
    await this.provisioner.ensureConsumer(durable, options.group, config, options.from, operation);
    this.assertOpen('consume');
    const runner = new GroupRunner(this.groups, { options, durable, config, clientFilter }, (stopped) =>
      this.runners.delete(stopped),
    );
    this.runners.add(runner);
    return { stop: () => runner.stop() };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A message in progress gets up to the ack wait to finish; after that the server would redeliver it anyway.
    await Promise.all([...this.runners].map((runner) => runner.stop(this.settings.ackWaitMs)));
    this.acks.close();
    const nc = this.connection;
    if (this.owned && !nc.isClosed()) {
      try {
        await nc.drain();
      } catch {
        await nc.close().catch(() => undefined);
      }
    }
  }

  private assertOpen(operation: string): void {
    if (this.closed)
      throw new TransportClosedError('nats', operation, 'the transport is closed; create a new transport');
  }

  /** The durable consumer's settings for a group: explicit acks, one message in flight, the subjects as filters. */
  private consumerConfig(
    options: ConsumeOptions,
    operation: string,
  ): { config: Partial<ConsumerConfig>; clientFilter: readonly string[] | undefined } {
    const filters = filterSubjects(this.prefix, options.subjects, operation);
    const config: Partial<ConsumerConfig> = {
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(this.settings.ackWaitMs),
      max_ack_pending: 1,
    };
    if (filters.length === 1) config.filter_subject = filters[0];
    else if (versionAtLeast(this.connection.info?.version, 2, 10)) config.filter_subjects = filters;
    else {
      // nats-server before 2.10 filters on one subject only: take the prefix and skip the others here (acknowledged).
      config.filter_subject = `${this.prefix}.>`;
      return { config, clientFilter: options.subjects };
    }
    return { config, clientFilter: undefined };
  }
}
