import type { ConsumerConfig, ConsumerMessages, JetStreamClient, JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { TransportError, TransportUnavailableError, type Clock, type ConsumeOptions } from '@eventline/core';
import { subjectMatches } from '@eventline/core/backend';
import { describe, MSG_ID_HEADER, receivedMessage } from './messages.js';
import type { JetStreamProvisioner } from './provisioning.js';

/** Pull requests expire (and are renewed) this often; heartbeats every half of it detect a silent server. */
const PULL_EXPIRES_MS = 5_000;

/** What every group runner of a transport shares. */
export interface GroupContext {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly provisioner: JetStreamProvisioner;
  readonly stream: string;
  readonly prefix: string;
  readonly ackWaitMs: number;
  readonly ackTimeoutMs: number;
  readonly clock: Clock;
  /** Errors it recovers from by itself. */
  readonly report: (error: TransportError) => void;
}

/** A group's durable consumer as the server holds it, and how this member reads it. */
export interface GroupSubscription {
  readonly options: ConsumeOptions;
  readonly durable: string;
  readonly config: Partial<ConsumerConfig>;
  /** Set when the server cannot filter on several subjects: the consumer takes the whole prefix and filters here. */
  readonly clientFilter: readonly string[] | undefined;
}

/**
 * One `consume()` call: pulls the group's durable consumer one message at a time (`max_ack_pending = 1` on the
 * server keeps every stream in order across members), hands each to the handler, and acknowledges it, or asks for
 * it again after `retryDelayMs` when the handler throws. When the pull ends or fails (the consumer or the stream was
 * deleted, the connection broke), it sets them up again after a pause of the clock that doubles up to 5 s.
 */
export class GroupRunner {
  private stopped = false;
  private messages: ConsumerMessages | undefined;
  /** Aborted by stop(): ends a pause between two set-ups at once. */
  private readonly stopping = new AbortController();
  private readonly done: Promise<void>;

  constructor(
    private readonly context: GroupContext,
    private readonly subscription: GroupSubscription,
    private readonly onStopped: (runner: GroupRunner) => void,
  ) {
    this.done = this.loop();
  }

  /** Stops taking messages and waits for the one in progress (and its ack); `timeoutMs` bounds the wait. */
  async stop(timeoutMs?: number): Promise<void> {
    this.stopped = true;
    this.messages?.stop();
    this.stopping.abort();
    const waits: Array<Promise<unknown>> = [this.done, this.context.nc.closed()];
    const bound = new AbortController();
    if (timeoutMs !== undefined) waits.push(this.context.clock.sleep(timeoutMs, bound.signal));
    await Promise.race(waits);
    bound.abort();
    this.onStopped(this);
  }

  private get ending(): boolean {
    return this.stopped || this.context.nc.isClosed();
  }

  private get operation(): string {
    return `consume (group ${JSON.stringify(this.subscription.options.group)})`;
  }

  private async loop(): Promise<void> {
    let failures = 0;
    let setUp = true; // consume() just created the consumer
    while (!this.ending) {
      try {
        if (!setUp) await this.setUpAgain();
        setUp = false;
        const messages = await this.pull();
        for await (const message of messages) {
          failures = 0;
          if (this.ending) {
            this.handBack(message);
            continue;
          }
          await this.handle(message);
        }
      } catch (error) {
        if (this.ending) break;
        failures++;
        this.context.report(
          error instanceof TransportError
            ? error
            : new TransportUnavailableError('nats', this.operation, `${describe(error)}; retrying`, error),
        );
      }
      if (this.ending) break;
      // The iterator ended or failed (consumer or stream deleted, connection trouble): set up again, after a pause.
      await this.context.clock.sleep(Math.min(5_000, 100 * 2 ** Math.min(failures, 6)), this.stopping.signal);
    }
  }

  /** Checks the stream and the durable consumer again: either may be what went missing. */
  private async setUpAgain(): Promise<void> {
    const { provisioner } = this.context;
    const { durable, options, config } = this.subscription;
    provisioner.forgetStream();
    await provisioner.ensureStream(this.operation);
    await provisioner.ensureConsumer(durable, options.group, config, options.from, this.operation);
  }

  private async pull(): Promise<ConsumerMessages> {
    const consumer = await this.context.js.consumers.get(this.context.stream, this.subscription.durable);
    const messages = await consumer.consume({
      max_messages: 1,
      expires: PULL_EXPIRES_MS,
      abort_on_missing_resource: true,
    });
    this.messages = messages;
    if (this.stopped) messages.stop();
    return messages;
  }

  /** Taken after stop(): hand it straight back so another member gets it without waiting for the ack wait. */
  private handBack(message: JsMsg): void {
    try {
      message.nak();
    } catch {
      /* the connection is gone: the ack wait will release it */
    }
  }

  private async handle(message: JsMsg): Promise<void> {
    const { nc, prefix, stream } = this.context;
    const received = receivedMessage(message, prefix, stream);
    const { clientFilter, options } = this.subscription;
    if (clientFilter && !subjectMatches(received.subject, clientFilter)) {
      await this.ack(message);
      return;
    }
    const handled = new AbortController();
    this.keepInProgress(message, handled.signal);
    let ok: boolean;
    try {
      await options.handler(received);
      ok = true;
    } catch {
      ok = false;
    } finally {
      handled.abort();
    }
    if (nc.isClosed()) return;
    if (ok) {
      await this.ack(message);
    } else {
      try {
        message.nak(options.retryDelayMs ?? 1000);
      } catch (error) {
        this.context.report(
          new TransportUnavailableError(
            'nats',
            'nak',
            `message ${received.id}: ${describe(error)} (redelivered after the ack wait)`,
            error,
          ),
        );
      }
    }
  }

  /**
   * A handler slower than the ack wait keeps its message: "in progress", every third of the ack wait, resets the
   * server's ack timer, so the message is not redelivered to another member while this one still works on it.
   */
  private keepInProgress(message: JsMsg, handled: AbortSignal): void {
    const { nc, clock, ackWaitMs } = this.context;
    const every = Math.max(50, Math.floor(ackWaitMs / 3));
    void (async () => {
      for (;;) {
        await clock.sleep(every, handled);
        if (handled.aborted || nc.isClosed()) return;
        try {
          message.working();
        } catch {
          /* disconnected: the ack wait decides */
        }
      }
    })();
  }

  private async ack(message: JsMsg): Promise<void> {
    try {
      await message.ackAck({ timeout: this.context.ackTimeoutMs });
    } catch (error) {
      if (!this.context.nc.isClosed())
        this.context.report(
          new TransportUnavailableError(
            'nats',
            'ack',
            `message ${message.headers?.get(MSG_ID_HEADER) ?? message.seq}: ${describe(error)} (it may be delivered again)`,
            error,
          ),
        );
    }
  }
}
