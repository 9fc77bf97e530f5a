import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  ReplayPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamInfo,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import {
  TransportConfigurationError,
  TransportError,
  TransportUnavailableError,
  type ConsumeOptions,
} from '@eventline/core';
import { describe } from './messages.js';

function isApiError(error: unknown, code: number): boolean {
  return error instanceof JetStreamApiError && error.code === code;
}

export interface StreamSettings {
  readonly stream: string;
  readonly prefix: string;
  readonly duplicateWindowMs: number;
  /** Whether `duplicateWindowMs` was given: only then is an existing stream updated to it. */
  readonly duplicateWindowGiven: boolean;
  readonly timeoutMs: number;
}

/**
 * What the transport needs to exist on the server: the JetStream stream capturing `<prefix>.>` and each group's
 * durable consumer. Created on first use, checked again after trouble (the stream or a consumer may have been deleted).
 */
export class JetStreamProvisioner {
  private manager: Promise<JetStreamManager> | undefined;
  private streamReady: Promise<void> | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly settings: StreamSettings,
  ) {}

  /** Makes sure the stream exists and captures the prefix (once, until {@link forgetStream}). */
  ensureStream(operation: string): Promise<void> {
    this.streamReady ??= this.createOrUpdateStream().catch((error: unknown) => {
      this.streamReady = undefined;
      const detail = `cannot create or update JetStream stream ${JSON.stringify(this.settings.stream)}: ${describe(error)}`;
      // The server answered and said no (overlapping subjects, limits): the set-up is wrong. Anything else: unreachable.
      if (error instanceof JetStreamApiError) throw new TransportConfigurationError('nats', operation, detail, error);
      throw new TransportUnavailableError('nats', operation, detail, error);
    });
    return this.streamReady;
  }

  /** The stream may be gone (deleted, or the server lost it): check it again on the next {@link ensureStream}. */
  forgetStream(): void {
    this.streamReady = undefined;
  }

  /** Creates the group's durable consumer, or updates it to `config`; refuses one that cannot be updated. */
  async ensureConsumer(
    durable: string,
    group: string,
    config: Partial<ConsumerConfig>,
    from: ConsumeOptions['from'],
    operation: string,
  ): Promise<void> {
    try {
      await this.createOrUpdateConsumer(durable, group, config, from, operation);
    } catch (error) {
      if (error instanceof TransportError) throw error;
      throw new TransportUnavailableError(
        'nats',
        operation,
        `cannot create durable consumer ${JSON.stringify(durable)} on stream ${this.settings.stream}: ${describe(error)}`,
        error,
      );
    }
  }

  private jsm(): Promise<JetStreamManager> {
    this.manager ??= jetstreamManager(this.nc, { timeout: this.settings.timeoutMs }).catch((error: unknown) => {
      this.manager = undefined;
      throw error;
    });
    return this.manager;
  }

  private async createOrUpdateStream(): Promise<void> {
    const { stream, prefix, duplicateWindowMs } = this.settings;
    const manager = await this.jsm();
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
    if (this.settings.duplicateWindowGiven && config.duplicate_window !== nanos(duplicateWindowMs))
      changes.duplicate_window = nanos(duplicateWindowMs);
    if (Object.keys(changes).length > 0) await manager.streams.update(stream, changes);
  }

  private async createOrUpdateConsumer(
    durable: string,
    group: string,
    config: Partial<ConsumerConfig>,
    from: ConsumeOptions['from'],
    operation: string,
  ): Promise<void> {
    const stream = this.settings.stream;
    const manager = await this.jsm();
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
      throw new TransportConfigurationError(
        'nats',
        operation,
        `the durable consumer ${JSON.stringify(durable)} of group ${JSON.stringify(group)} exists with another configuration and cannot be updated ` +
          `(${describe(error)}); delete it or use another group name`,
        error,
      );
    }
  }
}
