import type { RecordedEvent } from '../event.js';
import { decodeEvent } from './codec.js';
import type { ConsumeOptions, Consumer, ReceivedMessage, Transport } from './contract.js';

/**
 * A consumer's record of the messages it has processed. `process` runs the effect and records the id in one
 * transaction, so a redelivered or re-published message has no second effect (exactly-once effect on top of
 * at-least-once delivery). In memory: {@link createInMemoryInbox}; PostgreSQL/PGlite: `@eventline/postgres`.
 */
export interface Inbox<Tx = unknown> {
  /** False (and the effect does not run) when `group` already processed `messageId`. */
  process(group: string, messageId: string, effect: (tx: Tx) => Promise<void>): Promise<boolean>;
}

export function createInMemoryInbox(): Inbox<undefined> {
  const processed = new Set<string>();
  const running = new Map<string, Promise<boolean>>();
  return {
    async process(group, messageId, effect) {
      const key = `${group}\u0001${messageId}`;
      const inFlight = running.get(key);
      if (inFlight) {
        await inFlight.catch(() => undefined);
        return this.process(group, messageId, effect);
      }
      if (processed.has(key)) return false;
      const run = effect(undefined).then(() => {
        processed.add(key);
        return true;
      });
      running.set(key, run);
      try {
        return await run;
      } finally {
        running.delete(key);
      }
    },
  };
}

export interface ConsumeEventsOptions<Tx> extends Omit<ConsumeOptions, 'handler'> {
  readonly inbox: Inbox<Tx>;
  /** The effect of one event, written through the inbox's transaction. */
  readonly handle: (
    event: RecordedEvent,
    context: { tx: Tx; message: ReceivedMessage; replay: boolean },
  ) => Promise<void>;
}

/** Consumes events from a transport through an inbox: each event id has its effect once per group. */
export function consumeEvents<Tx>(transport: Transport, options: ConsumeEventsOptions<Tx>): Promise<Consumer> {
  const { inbox, handle, ...consume } = options;
  return transport.consume({
    ...consume,
    handler: async (message) => {
      const event = decodeEvent(message);
      // Keyed by the event id (not the message id), so a replayed copy of an event already processed has no effect.
      await inbox.process(options.group, event.id, (tx) =>
        handle(event, { tx, message, replay: message.headers['eventline-replay'] === 'true' }),
      );
    },
  });
}
