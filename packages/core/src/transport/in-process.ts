import { systemClock, type Clock } from '../clock.js';
import type { ConsumeOptions, Consumer, ReceivedMessage, Transport, TransportMessage } from './contract.js';
import { subjectMatches } from './codec.js';

/**
 * A broker inside the process, for single-process applications and tests: `broker.connect()` gives a client
 * ({@link Transport}); several clients of one broker behave like nodes on a real bus. Messages live in memory.
 */
export interface InProcessBroker {
  connect(): Transport;
}

interface Group {
  cursor: number;
  /** Messages handed to a member and not acknowledged yet, by log index. */
  inFlight: Map<number, { client: number; deliveries: number }>;
  /** Failed or abandoned messages waiting for redelivery (log index → earliest time). */
  retry: Map<number, number>;
  deliveries: Map<number, number>;
  members: Set<Member>;
  /** Streams with a message in flight: the next one of that stream waits (per-stream order). */
  busyStreams: Set<string>;
}

interface Member {
  client: number;
  options: ConsumeOptions;
  stopped: boolean;
  running: number;
  idle: Array<() => void>;
}

/** `clock`: what redelivery delays (`retryDelayMs`) are measured and waited on (default `systemClock`). */
export function createInProcessBroker(options: { name?: string; clock?: Clock } = {}): InProcessBroker {
  const clock = options.clock ?? systemClock;
  const log: TransportMessage[] = [];
  const ids = new Set<string>();
  const groups = new Map<string, Group>();
  let clients = 0;
  let scheduled = false;

  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      pump();
    });
  };

  /** Hands each group's next deliverable message to a free member, in log order, one per stream at a time. */
  const pump = () => {
    const now = clock.now();
    let retryAt = Infinity;
    for (const group of groups.values()) {
      const members = [...group.members].filter((member) => !member.stopped);
      if (members.length === 0) continue;
      const candidates = [...group.retry.entries()].sort(([a], [b]) => a - b);
      const pending: number[] = [];
      for (const [index, at] of candidates) {
        if (at <= now) pending.push(index);
        else retryAt = Math.min(retryAt, at);
      }
      while (group.cursor < log.length) pending.push(group.cursor++);
      pending.sort((a, b) => a - b);
      const deferred: number[] = [];
      for (const index of pending) {
        const message = log[index]!;
        const eligible = members.filter((m) => subjectMatches(message.subject, m.options.subjects));
        if (eligible.length === 0) continue;
        // A redelivery (or a later message of a stream with one in flight) waits its turn: per-stream order.
        if (group.busyStreams.has(message.streamId) || hasEarlierRetry(group, message.streamId, index)) {
          deferred.push(index);
          continue;
        }
        group.retry.delete(index);
        deliver(group, eligible[Math.floor(Math.random() * eligible.length)]!, index); // competing members
      }
      for (const index of deferred)
        if (!group.retry.has(index) && !group.inFlight.has(index)) group.retry.set(index, 0);
    }
    if (retryAt !== Infinity) void clock.sleep(Math.max(1, retryAt - clock.now())).then(schedule);
  };

  const hasEarlierRetry = (group: Group, streamId: string, index: number) =>
    [...group.retry.keys()].some(
      (other) => other < index && log[other]!.streamId === streamId && !group.inFlight.has(other),
    );

  const deliver = (group: Group, member: Member, index: number) => {
    const message = log[index]!;
    const deliveryCount = (group.deliveries.get(index) ?? 0) + 1;
    group.deliveries.set(index, deliveryCount);
    group.inFlight.set(index, { client: member.client, deliveries: deliveryCount });
    group.busyStreams.add(message.streamId);
    member.running++;
    const received: ReceivedMessage = { ...message, headers: { ...message.headers }, deliveryCount };
    void Promise.resolve()
      .then(() => member.options.handler(received))
      .then(
        () => settle(group, member, index, true),
        () => settle(group, member, index, false),
      );
  };

  const settle = (group: Group, member: Member, index: number, ok: boolean) => {
    member.running--;
    const flight = group.inFlight.get(index);
    // A crashed client's messages were already released for redelivery: its late acknowledgement is ignored.
    if (flight && flight.client === member.client) {
      group.inFlight.delete(index);
      group.busyStreams.delete(log[index]!.streamId);
      if (!ok) group.retry.set(index, clock.now() + (member.options.retryDelayMs ?? 1000));
    }
    if (member.running === 0) for (const resolve of member.idle.splice(0)) resolve();
    schedule();
  };

  const release = (client: number) => {
    for (const group of groups.values()) {
      for (const [index, flight] of group.inFlight) {
        if (flight.client !== client) continue;
        group.inFlight.delete(index);
        group.busyStreams.delete(log[index]!.streamId);
        group.retry.set(index, 0);
      }
      for (const member of group.members) if (member.client === client) group.members.delete(member);
    }
    schedule();
  };

  return {
    connect(): Transport {
      const client = ++clients;
      let closed = false;
      const members: Member[] = [];
      return {
        name: options.name ?? 'in-process',
        async publish(messages) {
          if (closed) throw new Error('this in-process transport client is closed');
          for (const message of messages) {
            if (ids.has(message.id)) continue; // de-duplicated by id, like NATS's Nats-Msg-Id
            ids.add(message.id);
            log.push(structuredClone(message));
          }
          schedule();
        },
        async consume(consumeOptions): Promise<Consumer> {
          let group = groups.get(consumeOptions.group);
          if (!group) {
            group = {
              cursor: consumeOptions.from === 'new' ? log.length : 0,
              inFlight: new Map(),
              retry: new Map(),
              deliveries: new Map(),
              members: new Set(),
              busyStreams: new Set(),
            };
            groups.set(consumeOptions.group, group);
          }
          const member: Member = { client, options: consumeOptions, stopped: false, running: 0, idle: [] };
          group.members.add(member);
          members.push(member);
          schedule();
          const owner = group;
          return {
            async stop() {
              member.stopped = true;
              owner.members.delete(member);
              if (member.running > 0) await new Promise<void>((resolve) => member.idle.push(resolve));
            },
          };
        },
        /** Closing a client with messages in flight releases them for redelivery to other members, as a crash would. */
        async close() {
          closed = true;
          for (const member of members) member.stopped = true;
          release(client);
        },
      };
    },
  };
}
