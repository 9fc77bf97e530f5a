import { systemClock, type Clock } from '../clock.js';
import { ValidationError } from '../errors.js';
import { newId } from '../ids.js';
import type { Position } from '../position.js';
import type { EncodedEvent, EncodedReadAllPage, EventStore, ReadAllFilter, ReadAllOptions } from '../store/contract.js';
import type { SubscriptionStore } from '../subscriptions/contract.js';
import { createLogSubscription, type Subscription, type SubscriptionOptions } from '../subscriptions/engine.js';
import { asReplay, encodedEvent } from './codec.js';
import type { Transport } from './contract.js';

/** How often a publisher catching up stores its checkpoint, by default (see checkpointIntervalMs). */
const PUBLISHER_CHECKPOINT_INTERVAL_MS = 250;

export interface PublisherOptions<Tx> extends Omit<
  SubscriptionOptions<Tx>,
  'name' | 'handle' | 'handleBatch' | 'onFailure' | 'transactional'
> {
  /** Names the publisher's subscription (checkpoint and lease): `publisher-<name>`. */
  name: string;
  /**
   * Retries of a publish the broker refused or did not confirm. By default a publisher retries for ever (with a
   * backoff up to `maxDelayMs`, each failure reported to `onError`): it never skips an event, since that would lose
   * it on the bus and break the order of its stream. With a finite `maxAttempts`, the publisher stops (state
   * 'failed') when they run out; it never parks an event.
   */
  retry?: SubscriptionOptions<Tx>['retry'];
  /**
   * While catching up, store the checkpoint at most once per this many ms (default 250; 0: after every batch). It is
   * stored when caught up and at stop; a crash republishes at most this stretch, which the broker's de-duplication or
   * the consumer's inbox drops. It never moves before the broker confirmed.
   */
  checkpointIntervalMs?: number;
  transport: Transport;
  subscriptions: SubscriptionStore<Tx>;
}

/**
 * Forwards committed events to a transport: a subscription on the log whose checkpoint moves only after the broker
 * confirmed the batch. The store is the outbox; there is no dual write. Delivery is at least once (a crash between
 * the confirm and the checkpoint republishes the batch, which the broker or the consumer inbox de-duplicates by id),
 * in log order, so in order per stream.
 */
export function createPublisher<Tx>(options: PublisherOptions<Tx>): Subscription {
  const { transport, name, retry, ...rest } = options;
  return createLogSubscription<Tx, EncodedEvent>({
    ...rest,
    read: encodedPages(options.store),
    name: `publisher-${name}`,
    // A broker that is away (restarting, unreachable) must hold the publisher back, never make it skip an event:
    // parking a message would lose it on the bus and let later events of its stream overtake it.
    retry: { maxAttempts: Number.POSITIVE_INFINITY, maxDelayMs: 5_000, ...retry },
    onFailure: 'stop',
    // The broker is outside the store's database: publish with no transaction open, then move the checkpoint.
    transactional: false,
    checkpointIntervalMs: options.checkpointIntervalMs ?? PUBLISHER_CHECKPOINT_INTERVAL_MS,
    handle: (event) => transport.publish([event.message]),
    handleBatch: (events) => transport.publish(events.map((event) => event.message)),
  });
}

/** Pages of the log as messages: from the store's stored JSON where it can (no parse, no second serialisation), else encoded here. */
function encodedPages(store: EventStore): (page: ReadAllOptions) => Promise<EncodedReadAllPage> {
  if (store.readAllPageEncoded) return (page) => store.readAllPageEncoded!(page);
  return async (page) => {
    const { events, next, atEnd } = await store.readAllPage(page);
    return { events: events.map(encodedEvent), next, atEnd };
  };
}

/** What a replay republishes, in log order, as encoded events. */
async function* replaySource(options: ReplayOptions, pageSize: number): AsyncGenerator<EncodedEvent> {
  if (options.streamId !== undefined) {
    for await (const event of options.store.readStream(options.streamId)) yield encodedEvent(event);
    return;
  }
  const read = encodedPages(options.store);
  let after = options.after;
  for (;;) {
    const page = await read({
      ...(after ? { after } : {}),
      ...(options.filter ? { filter: options.filter } : {}),
      limit: Math.max(pageSize, 100),
    });
    yield* page.events;
    if (page.atEnd) return;
    after = page.next;
  }
}

export interface ReplayOptions {
  store: EventStore;
  transport: Transport;
  /** What to republish: a range of the global log (`after`, `until`, inclusive), with an optional filter, or one stream. */
  after?: Position;
  until?: Position;
  filter?: ReadAllFilter;
  streamId?: string;
  /** Most events per second (default: as fast as the broker confirms). */
  ratePerSecond?: number;
  batchSize?: number;
  onProgress?: (progress: { published: number; position: Position | null; eventsPerSecond: number }) => void;
  /** Stops the replay after the batch in progress (a wait for the rate ends at once). */
  signal?: AbortSignal;
  /** What the rate is measured and waited on (default `systemClock`). */
  clock?: Clock;
}

/**
 * Republishes history to a transport, marked as a replay (header `eventline-replay: true`, and a message id of its
 * own so brokers do not drop it as a duplicate), for a downstream domain that lost its data and rebuilds from the bus.
 * Consumers de-duplicate by event id in their inbox, so a consumer that kept its inbox ignores what it already has.
 */
export async function replayToTransport(
  options: ReplayOptions,
): Promise<{ published: number; position: Position | null }> {
  if (options.ratePerSecond !== undefined && !(options.ratePerSecond > 0))
    throw new ValidationError('replay: ratePerSecond must be more than 0');
  const batchSize = options.batchSize ?? 100;
  const run = newId();
  const clock = options.clock ?? systemClock;
  const started = clock.now();
  let published = 0;
  let position: Position | null = null;
  let batch: EncodedEvent[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await options.transport.publish(
      batch.map(({ id, message }) => ({ ...asReplay(message), id: `${id}.replay.${run}` })),
    );
    published += batch.length;
    position = batch[batch.length - 1]!.position;
    batch = [];
    const elapsed = (clock.now() - started) / 1000;
    options.onProgress?.({
      published,
      position,
      eventsPerSecond: elapsed > 0 ? Math.round(published / elapsed) : published,
    });
    if (options.ratePerSecond) {
      const due = (published / options.ratePerSecond) * 1000 - (clock.now() - started);
      if (due > 0) await clock.sleep(due, options.signal);
    }
  };
  const size = Math.min(
    batchSize,
    options.ratePerSecond ? Math.max(1, Math.floor(options.ratePerSecond / 10)) : batchSize,
  );
  for await (const event of replaySource(options, size)) {
    if (options.signal?.aborted) break;
    if (options.until !== undefined && event.position > options.until) break;
    batch.push(event);
    if (batch.length >= size) await flush();
  }
  await flush();
  return { published, position };
}
