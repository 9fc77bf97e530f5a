import type { Channel } from 'amqplib';
import { TransportConfigurationError } from '@eventline/core';

/** Every name a namespace uses on the broker, all derived from the exchange name. */
export interface RabbitMqNames {
  /** The durable topic exchange messages are published to, with routing key `<category>.<type>`. */
  readonly exchange: string;
  /** The durable stream queue bound to the exchange with `#`: the retained log every group reads. */
  readonly stream: string;
  /** The direct exchange members of a group announce themselves on (routing key: the group). */
  readonly members: string;
  /** The quorum, single-active-consumer queue that holds the cursor token of one partition of a group. */
  cursorQueue(group: string, partition: number): string;
}

export function namesFor(exchange: string): RabbitMqNames {
  return {
    exchange,
    stream: `${exchange}.log`,
    members: `${exchange}.members`,
    cursorQueue: (group, partition) => `${exchange}.group.${group}.${partition}`,
  };
}

/** Headers the transport adds for itself (stripped from received messages). */
export const PRIVATE_HEADERS = {
  /** The message's stream id (the partition key). */
  streamId: 'x-eventline-stream',
  /** Set on the markers a group created with `from: 'new'` writes into the stream. */
  marker: 'x-eventline-marker',
  /** Added by RabbitMQ to messages read from a stream. */
  offset: 'x-stream-offset',
} as const;

export interface RetentionOptions {
  /** How long the stream keeps messages (RabbitMQ `x-max-age`: `7D`, `12h`, `30m`...). Default `7D`. */
  readonly maxAge?: string;
  /** Most bytes the stream keeps (`x-max-length-bytes`). Default: no limit. */
  readonly maxLengthBytes?: number;
  /** Size of a stream segment file (`x-stream-max-segment-size-bytes`); retention drops whole segments. */
  readonly maxSegmentSizeBytes?: number;
}

export function streamArguments(retention: RetentionOptions = {}): Record<string, unknown> {
  const args: Record<string, unknown> = { 'x-queue-type': 'stream', 'x-max-age': retention.maxAge ?? '7D' };
  if (retention.maxLengthBytes !== undefined)
    args['x-max-length-bytes'] = { '!': 'long', value: retention.maxLengthBytes };
  if (retention.maxSegmentSizeBytes !== undefined)
    args['x-stream-max-segment-size-bytes'] = { '!': 'long', value: retention.maxSegmentSizeBytes };
  return args;
}

export const CURSOR_QUEUE_ARGUMENTS = { 'x-queue-type': 'quorum', 'x-single-active-consumer': true } as const;

/** Declares the exchange, the stream bound to it with `#`, and the members exchange (idempotent). */
export async function declareNamespace(
  channel: Channel,
  names: RabbitMqNames,
  retention?: RetentionOptions,
): Promise<void> {
  await channel.assertExchange(names.exchange, 'topic', { durable: true });
  try {
    await channel.assertQueue(names.stream, { durable: true, arguments: streamArguments(retention) });
  } catch (error) {
    throw new TransportConfigurationError(
      'rabbitmq',
      'declare',
      `stream ${names.stream} could not be declared (it may exist with other retention arguments: give the same ` +
        `retention options, or delete the stream): ${(error as Error).message}`,
      error,
    );
  }
  await channel.bindQueue(names.stream, names.exchange, '#');
  await channel.assertExchange(names.members, 'direct', { durable: true });
}
