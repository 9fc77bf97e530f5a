import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { Clock } from '@eventline/core';
import { describe } from './messages.js';

/** A message ready for JetStream: its full subject, body, and headers (Nats-Msg-Id and the rest). */
export interface OutgoingMessage {
  readonly subject: string;
  readonly body: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
}

/**
 * Why a message was not stored: the broker is away or slow (`unavailable`, retry), the transport or its connection is
 * closed (`closed`), the broker refused it (`refused`), or another stream took it (`configuration`).
 * `streamMissing`: no stream takes the subject (it was deleted): create it again before the retry.
 */
export interface PublishFailure {
  readonly kind: 'unavailable' | 'closed' | 'refused' | 'configuration';
  readonly detail: string;
  readonly cause?: unknown;
  readonly streamMissing?: boolean;
}

interface Pending {
  resolve(failure: PublishFailure | undefined): void;
}

/**
 * Publishes batches to JetStream and collects their PubAcks on one reply subscription of its own, instead of one
 * nats.js request per message (each of which makes a timer, a promise and, on every completion, an Error with its
 * stack: most of the CPU of a publish). The protocol is the same as `js.publish`: a PUB with headers and a reply
 * subject; the stream answers on the reply subject with `{"stream","seq","duplicate"}` or `{"error":{...}}`, and the
 * server with a 503 status when no stream takes the subject.
 *
 * A batch is written in one synchronous loop, so it goes out whole on one connection, in order (see `publish` in
 * transport.ts for why that keeps every stream in order). Each message's outcome is a {@link PublishFailure} or
 * undefined; one sleep of the clock per batch ends the wait for acknowledgements that do not come (a connection
 * dropped mid-batch loses them).
 */
export class AckCollector {
  private subscription: Subscription | undefined;
  private readonly inbox: string;
  private sequence = 0;
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly stream: string,
    private readonly timeoutMs: number,
    private readonly clock: Clock,
  ) {
    this.inbox = createInbox();
  }

  /** Resolves, once every message was acknowledged or timed out, with each message's failure (undefined when stored). */
  publish(messages: readonly OutgoingMessage[]): Promise<Array<PublishFailure | undefined>> {
    this.subscribe();
    const outcomes: Array<PublishFailure | undefined> = new Array(messages.length);
    let open = messages.length;
    return new Promise((resolve) => {
      const tokens: string[] = [];
      let timeout: AbortController | undefined = undefined;
      const settle = (index: number, failure: PublishFailure | undefined) => {
        outcomes[index] = failure;
        if (--open === 0) {
          timeout?.abort();
          resolve(outcomes);
        }
      };
      for (let i = 0; i < messages.length; i++) {
        const message = messages[i]!;
        const token = (this.sequence++).toString(36);
        const reply = `${this.inbox}.${token}`;
        const index = i;
        this.pending.set(token, { resolve: (error) => settle(index, error) });
        tokens.push(token);
        try {
          this.nc.publish(message.subject, message.body, { reply, headers: encodedHeaders(message.headers) });
        } catch (error) {
          // Refused before it was sent (too large, connection closed): send none of the rest, so that no later message
          // of its stream is stored before it.
          const refusal: PublishFailure = this.nc.isClosed()
            ? { kind: 'closed', detail: 'the NATS connection is closed; create a new transport', cause: error }
            : { kind: 'refused', detail: `not sent (${describe(error)})`, cause: error };
          this.pending.delete(token);
          tokens.pop();
          for (let rest = i; rest < messages.length; rest++)
            settle(
              rest,
              rest === i ? refusal : { ...refusal, detail: `not sent: an earlier message of the batch was refused` },
            );
          break;
        }
      }
      if (open === 0) return;
      const controller = new AbortController();
      timeout = controller;
      void this.clock.sleep(this.timeoutMs, controller.signal).then(() => {
        if (controller.signal.aborted) return;
        for (const token of tokens) {
          const waiting = this.pending.get(token);
          if (!waiting) continue;
          this.pending.delete(token);
          waiting.resolve({
            kind: 'unavailable',
            detail: `no acknowledgement within ${this.timeoutMs} ms (is the server reachable?)`,
          });
        }
      });
    });
  }

  close(): void {
    this.subscription?.unsubscribe();
    this.subscription = undefined;
    for (const waiting of this.pending.values())
      waiting.resolve({ kind: 'closed', detail: 'the transport closed before the acknowledgement came' });
    this.pending.clear();
  }

  private subscribe(): void {
    if (this.subscription && !this.subscription.isClosed()) return;
    // nats.js subscribes again by itself after a reconnection.
    this.subscription = this.nc.subscribe(`${this.inbox}.*`, {
      callback: (error, msg) => (error ? this.failAll(error) : this.acknowledge(msg)),
    });
  }

  private acknowledge(msg: Msg): void {
    const token = msg.subject.slice(this.inbox.length + 1);
    const waiting = this.pending.get(token);
    if (!waiting) return; // timed out already
    this.pending.delete(token);
    waiting.resolve(this.outcomeOf(msg));
  }

  private outcomeOf(msg: Msg): PublishFailure | undefined {
    if (msg.data.length === 0 && msg.headers?.code === 503)
      return {
        kind: 'unavailable',
        detail: 'no responders: no JetStream stream takes this subject (is JetStream enabled, the stream there?)',
        streamMissing: true,
      };
    let ack: { stream?: string; error?: { code?: number; err_code?: number; description?: string } };
    try {
      ack = msg.json();
    } catch {
      return { kind: 'refused', detail: `an acknowledgement that is not JSON: ${msg.string().slice(0, 200)}` };
    }
    if (ack.error)
      return {
        kind: 'refused',
        detail: `JetStream refused the message: ${ack.error.description ?? 'no description'} (code ${ack.error.code ?? '?'}, err_code ${ack.error.err_code ?? '?'})`,
      };
    if (ack.stream !== this.stream)
      return {
        kind: 'configuration',
        detail: `acknowledged by stream ${String(ack.stream)}, expected ${this.stream}: another stream captures the subject`,
      };
    return undefined;
  }

  private failAll(error: Error): void {
    const failure: PublishFailure = {
      kind: 'unavailable',
      detail: `the reply subscription failed (${error.message})`,
      cause: error,
    };
    for (const waiting of this.pending.values()) waiting.resolve(failure);
    this.pending.clear();
    this.subscription = undefined;
  }
}

/**
 * Headers in the NATS wire format, for `nc.publish`, which only calls `encode()` on them. Building the text at once
 * spares nats.js's MsgHdrs its per-header canonicalisation and look-ups (quadratic in the number of headers).
 * Values must not contain CR or LF (checked by the caller).
 */
const encoder = new TextEncoder();

function encodedHeaders(entries: ReadonlyArray<readonly [string, string]>): MsgHdrs {
  let text = 'NATS/1.0';
  for (const [key, value] of entries) text += `\r\n${key}: ${value}`;
  text += '\r\n\r\n';
  return { encode: () => encoder.encode(text) } as unknown as MsgHdrs;
}
