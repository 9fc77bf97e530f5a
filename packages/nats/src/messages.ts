import type { JsMsg } from '@nats-io/jetstream';
import type { ReceivedMessage, TransportMessage } from '@eventline/core';
import { HEADERS } from '@eventline/core/backend';
import type { OutgoingMessage } from './acks.js';

/** How messages look on NATS: the full subject, `Nats-Msg-Id` for the id, and the eventline headers. */

export const MSG_ID_HEADER = 'Nats-Msg-Id';
const EXPECTED_STREAM_HEADER = 'Nats-Expected-Stream';
const HEADER_KEY = /^[!-9;-~]+$/;
const LINE_BREAK = /[\r\n]/;

/** Why a message's headers cannot go on the wire (keys: visible ASCII but ':'; values: no CR or LF), or undefined. */
export function headerProblem(message: TransportMessage): string | undefined {
  for (const key in message.headers) {
    if (!HEADER_KEY.test(key)) return `header name ${JSON.stringify(key)} is not visible ASCII without ':'`;
    if (LINE_BREAK.test(message.headers[key]!)) return `header ${key} contains a line break`;
  }
  return LINE_BREAK.test(message.id) ? 'the id contains a line break' : undefined;
}

/** A message as published to `stream`: its subject under `prefix`, its id as `Nats-Msg-Id`, its stream id always. */
export function outgoingMessage(message: TransportMessage, prefix: string, stream: string): OutgoingMessage {
  const headers: Array<readonly [string, string]> = [
    [MSG_ID_HEADER, message.id],
    [EXPECTED_STREAM_HEADER, stream],
  ];
  for (const key in message.headers) headers.push([key, message.headers[key]!]);
  if (!(HEADERS.streamId in message.headers)) headers.push([HEADERS.streamId, message.streamId]);
  return { subject: `${prefix}.${message.subject}`, body: message.body, headers };
}

/** A delivered JetStream message as a consumer sees it: without the prefix and the `Nats-*` headers. */
export function receivedMessage(message: JsMsg, prefix: string, stream: string): ReceivedMessage {
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
}

export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
