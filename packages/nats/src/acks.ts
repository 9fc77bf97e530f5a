import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node';

/** A message ready for JetStream: its full subject, body, and headers (Nats-Msg-Id and the rest). */
export interface OutgoingMessage {
  readonly subject: string;
  readonly body: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
}

interface Pending {
  resolve(error: Error | undefined): void;
}

/**
 * Publishes batches to JetStream and collects their PubAcks on one reply subscription of its own, instead of one
 * nats.js request per message (each of which makes a timer, a promise and, on every completion, an Error with its
 * stack: most of the CPU of a publish). The protocol is the same as `js.publish`: a PUB with headers and a reply
 * subject; the stream answers on the reply subject with `{"stream","seq","duplicate"}` or `{"error":{...}}`, and the
 * server with a 503 status when no stream takes the subject.
 *
 * A batch is written in one synchronous loop, so it goes out whole on one connection, in order (see `publish` in
 * transport.ts for why that keeps every stream in order). Each message's outcome is an Error or undefined; one timer
 * per batch ends the wait for acknowledgements that do not come (a connection dropped mid-batch loses them).
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
  ) {
    this.inbox = createInbox();
  }

  /** Resolves, once every message was acknowledged or timed out, with each message's error (undefined when stored). */
  publish(messages: readonly OutgoingMessage[]): Promise<Array<Error | undefined>> {
    this.subscribe();
    const outcomes: Array<Error | undefined> = new Array(messages.length);
    let open = messages.length;
    return new Promise((resolve) => {
      const tokens: string[] = [];
      let timer: ReturnType<typeof setTimeout> | undefined = undefined;
      const settle = (index: number, error: Error | undefined) => {
        outcomes[index] = error;
        if (--open === 0) {
          if (timer) clearTimeout(timer);
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
          const refusal = error instanceof Error ? error : new Error(String(error));
          this.pending.delete(token);
          tokens.pop();
          for (let rest = i; rest < messages.length; rest++)
            settle(
              rest,
              rest === i
                ? refusal
                : new Error(`not sent: an earlier message of the batch was refused (${refusal.message})`),
            );
          break;
        }
      }
      if (open === 0) return;
      timer = setTimeout(() => {
        for (const token of tokens) {
          const waiting = this.pending.get(token);
          if (!waiting) continue;
          this.pending.delete(token);
          waiting.resolve(new Error(`no acknowledgement within ${this.timeoutMs} ms`));
        }
      }, this.timeoutMs);
    });
  }

  close(): void {
    this.subscription?.unsubscribe();
    this.subscription = undefined;
    for (const waiting of this.pending.values())
      waiting.resolve(new Error('the transport closed before the acknowledgement came'));
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

  private outcomeOf(msg: Msg): Error | undefined {
    if (msg.data.length === 0 && msg.headers?.code === 503)
      return new Error(
        'no responders: no JetStream stream takes this subject (is JetStream enabled, the stream there?)',
      );
    let ack: { stream?: string; error?: { code?: number; err_code?: number; description?: string } };
    try {
      ack = msg.json();
    } catch {
      return new Error(`an acknowledgement that is not JSON: ${msg.string().slice(0, 200)}`);
    }
    if (ack.error)
      return new Error(
        `JetStream refused the message: ${ack.error.description ?? 'no description'} (code ${ack.error.code ?? '?'}, err_code ${ack.error.err_code ?? '?'})`,
      );
    if (ack.stream !== this.stream)
      return new Error(`acknowledged by stream ${String(ack.stream)}, expected ${this.stream}`);
    return undefined;
  }

  private failAll(error: Error): void {
    for (const waiting of this.pending.values()) waiting.resolve(error);
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
