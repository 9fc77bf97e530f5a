/**
 * Runs a process manager: a subscription that feeds the log's events to their instances, a sender that takes the
 * commands they decided out of the outbox and through the command bus, and a timer loop that fires due timers.
 *
 * Exactly once, and where: for each input (an event, a fired timer, a refused command) the instance's new state, the
 * commands it sends (outbox rows), the timers it sets or cancels and the input's mark (the subscription's checkpoint,
 * the timer's removal, the refused command's removal) commit in one transaction of the process store. Commands leave
 * the outbox at least once; each has a deterministic id (process, instance, input, index) and goes through the command
 * bus as its idempotency key, so a command sent again after a crash is recognised by the bus and not handled twice.
 */
import { createHash } from 'node:crypto';
import { systemClock, type Clock } from '../clock.js';
import type { Command } from '../command.js';
import { safeQuote } from '../errors.js';
import type { RecordedEvent } from '../event.js';
import { jsonIssues, type JsonValue } from '../json.js';
import type { EventStore } from '../store/contract.js';
import type { SubscriptionStore } from '../subscriptions/contract.js';
import { createSubscription, type Subscription } from '../subscriptions/engine.js';
import type { CommandBus } from '../write/command-bus.js';
import type { OutboxCommand, ProcessInstanceRecord, ProcessStore, TimerRecord } from './contract.js';
import type { ProcessDecision, ProcessDefinition, ProcessInput } from './definition.js';
import { ProcessDecisionError } from './errors.js';
import { createWorkLoop, positiveOption, type WorkLoop } from './loop.js';
import { createOutboxSender, type CommandSendingOptions, type OutboxSender } from './sender.js';
import { dueTimeOf, fireDueTimers } from './timers.js';

export interface ProcessManagerOptions<State, Tx> extends CommandSendingOptions {
  process: ProcessDefinition<State>;
  store: EventStore;
  /** Checkpoints and leases of the process's subscription; its `Tx` is the process store's. */
  subscriptions: SubscriptionStore<Tx>;
  processes: ProcessStore<Tx>;
  /** Where the commands go. It must de-duplicate by idempotency key (`defaultMiddleware` does). */
  bus: CommandBus;
  /**
   * The time the process sees: timers' due times, command retries, the sender's and the timer loop's rests, the
   * instances' timestamps. Default `systemClock`; a test clock moves timers and retries without waiting.
   */
  clock?: Clock;
  /**
   * What the process's subscription waits on (polls, re-reads while a commit is held back, input retries). Default
   * `clock`. A test that moves `clock` by hand on a PostgreSQL store passes `systemClock` here, so the subscription
   * keeps reading while the test holds the process's time still.
   */
  subscriptionClock?: Clock;
  /** How often the sender and the timer loop look for work when nothing wakes them. Default 1000 and 100 ms. */
  pollIntervalMs?: { commands?: number; timers?: number };
  /** Passed to the subscription: retries of a failing input before it is parked, batch size, lease. */
  retry?: { maxAttempts?: number; baseDelayMs?: number; maxDelayMs?: number };
  batchSize?: number;
  lease?: { ttlMs?: number; owner?: string };
  /** Errors it recovers from (a command that failed and will be tried again, a store unavailable). */
  onError?: (error: unknown, where: string) => void;
}

export interface ProcessManager {
  readonly name: string;
  /** The subscription that feeds events in (its status, parked inputs, `waitFor`). */
  readonly subscription: Subscription;
  start(): void;
  /** Stops the three loops (the batch in progress finishes). */
  stop(): Promise<void>;
  instance(id: string): Promise<ProcessInstanceRecord | null>;
  instances(options?: { after?: string; limit?: number }): Promise<ProcessInstanceRecord[]>;
  /** Pending timers, of one instance when given. */
  timers(instance?: string): Promise<TimerRecord[]>;
  /** Commands waiting to be sent, or parked after their tries. */
  commands(options?: { instance?: string; status?: 'pending' | 'parked' }): Promise<OutboxCommand[]>;
  /** Sends a parked command again. False when there is no such parked command. */
  retryCommand(commandId: string): Promise<boolean>;
  /** Runs the sender and the timer loop once now (tests on a test clock call it after moving time). */
  runOnce(): Promise<{ sent: number; fired: number }>;
}

export function createProcessManager<State, Tx>(options: ProcessManagerOptions<State, Tx>): ProcessManager {
  return new ProcessRunner(options);
}

/** A deterministic command id: the same (process, instance, input, index) always gives the same UUID (version 8). */
export function processCommandId(process: string, instance: string, input: string, index: number): string {
  const hash = createHash('sha256')
    .update(JSON.stringify([process, instance, input, index]))
    .digest();
  hash[6] = (hash[6]! & 0x0f) | 0x80;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

class ProcessRunner<State, Tx> implements ProcessManager {
  readonly name: string;
  readonly subscription: Subscription;
  private readonly definition: ProcessDefinition<State>;
  private readonly processes: ProcessStore<Tx>;
  private readonly clock: Clock;
  private readonly sender: OutboxSender;
  private readonly loops: { readonly commands: WorkLoop; readonly timers: WorkLoop };
  private running = false;
  /** Set while stop() waits: a pass in progress takes no more commands or timers. */
  private halted = false;
  private halt = new AbortController();

  constructor(private readonly options: ProcessManagerOptions<State, Tx>) {
    this.definition = options.process;
    this.name = options.process.name;
    this.processes = options.processes;
    this.clock = options.clock ?? systemClock;
    const owner = 'Process manager';
    this.sender = createOutboxSender({
      process: this.name,
      processes: this.processes,
      bus: options.bus,
      clock: this.clock,
      sending: options,
      owner,
      onRefused: (row, error) =>
        this.processes.transaction(async (tx) => {
          if (!(await this.processes.removeCommand(tx, this.name, row.command.id))) return;
          await this.applyAll(tx, [
            {
              instance: row.instance,
              input: {
                kind: 'rejected',
                command: row.command,
                error: { code: error.code, rule: error.rule, message: error.message },
              },
            },
          ]);
        }),
      halted: () => this.halted,
      onError: options.onError,
    });
    const loop = (which: 'commands' | 'timers', intervalMs: number, work: () => Promise<number>) =>
      createWorkLoop({
        clock: this.clock,
        intervalMs,
        work,
        onError: (error) => this.options.onError?.(error, `process ${this.name}: ${which}`),
      });
    this.loops = {
      commands: loop(
        'commands',
        positiveOption(options.pollIntervalMs?.commands, 1000, 'pollIntervalMs.commands', owner),
        () => this.sender.sendDue(),
      ),
      timers: loop('timers', positiveOption(options.pollIntervalMs?.timers, 100, 'pollIntervalMs.timers', owner), () =>
        this.fireDueTimers(),
      ),
    };
    this.subscription = createSubscription<Tx>({
      name: `process:${this.name}`,
      store: options.store,
      subscriptions: options.subscriptions,
      filter: { types: this.definition.eventTypes },
      handle: (event, context) => this.onEvent(event, context.tx),
      handleBatch: (events, context) => this.onEvents(events, context.tx),
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.batchSize !== undefined ? { batchSize: options.batchSize } : {}),
      ...(options.lease ? { lease: options.lease } : {}),
      ...(options.onError ? { onError: options.onError } : {}),
      clock: options.subscriptionClock ?? this.clock,
    });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.halted = false;
    this.halt = new AbortController();
    this.subscription.start();
    this.loops.commands.start();
    this.loops.timers.start();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.halted = true;
    this.halt.abort();
    await Promise.all([this.subscription.stop(), this.loops.commands.stop(), this.loops.timers.stop()]);
    this.halted = false;
  }

  instance(id: string): Promise<ProcessInstanceRecord | null> {
    return this.processes.loadInstance(null, this.name, id);
  }

  instances(options?: { after?: string; limit?: number }): Promise<ProcessInstanceRecord[]> {
    return this.processes.listInstances(this.name, options);
  }

  timers(instance?: string): Promise<TimerRecord[]> {
    return this.processes.listTimers(this.name, instance === undefined ? {} : { instance });
  }

  commands(options: { instance?: string; status?: 'pending' | 'parked' } = {}): Promise<OutboxCommand[]> {
    return this.processes.listCommands(this.name, options);
  }

  async retryCommand(commandId: string): Promise<boolean> {
    const retried = await this.processes.retryCommand(this.name, commandId, this.now());
    if (retried) this.loops.commands.wake();
    return retried;
  }

  async runOnce(): Promise<{ sent: number; fired: number }> {
    const fired = await this.fireDueTimers();
    const sent = await this.sender.sendDue();
    return { sent, fired };
  }

  // --- inputs -------------------------------------------------------------------------------------------------

  /**
   * A batch of the subscription, in its transaction: each instance is loaded once, its inputs applied in order, then
   * written once. A batch that fails is retried by the subscription event by event (through {@link onEvent}).
   */
  private async onEvents(events: readonly RecordedEvent[], tx: Tx): Promise<void> {
    const inputs: Pending[] = [];
    for (const event of events) {
      const instance = this.correlate(event);
      if (instance !== null) inputs.push({ instance, input: { kind: 'event', event }, event });
    }
    if ((await this.applyAll(tx, inputs)) && this.running) this.wakeAfter(events[events.length - 1]!);
  }

  private async onEvent(event: RecordedEvent, tx: Tx): Promise<void> {
    const instance = this.correlate(event);
    if (instance === null) return;
    if ((await this.applyAll(tx, [{ instance, input: { kind: 'event', event }, event }])) && this.running)
      this.wakeAfter(event);
  }

  private correlate(event: RecordedEvent): string | null {
    const instance = this.definition.correlate(event);
    if (instance === null) return null;
    if (typeof instance !== 'string' || instance.length === 0 || instance.length > 200)
      throw new ProcessDecisionError(
        this.name,
        String(instance),
        `correlate() must return a string of 1 to 200 characters or null, got ${safeQuote(instance)} for event ${event.id}`,
      );
    return instance;
  }

  /** The outbox rows commit with the batch's checkpoint: wakes the sender once they have. */
  private wakeAfter(event: RecordedEvent): void {
    void this.subscription.waitFor(event.position, { timeoutMs: Infinity, signal: this.halt.signal }).then(
      () => {
        this.loops.commands.wake();
        this.loops.timers.wake();
      },
      () => undefined,
    );
  }

  /**
   * Applies inputs in `tx`: every instance they name is loaded (the store may do it in one statement), each one's
   * inputs are evolved and decided in order, and only then is anything written: each instance's commands, timers and
   * state once. A decision that fails writes nothing. Resolves true when it wrote commands or timers.
   */
  private async applyAll(tx: Tx, inputs: readonly Pending[]): Promise<boolean> {
    if (inputs.length === 0) return false;
    const now = this.now();
    const byInstance = new Map<string, Pending[]>();
    for (const pending of inputs) {
      const list = byInstance.get(pending.instance);
      if (list) list.push(pending);
      else byInstance.set(pending.instance, [pending]);
    }
    const plans = await Promise.all(
      [...byInstance].map(async ([instance, list]) =>
        this.plan(instance, await this.processes.loadInstance(tx, this.name, instance), list, now),
      ),
    );
    await Promise.all(plans.map((plan) => (plan ? this.write(tx, plan) : undefined)));
    return plans.some((plan) => plan !== null && (plan.commands.length > 0 || plan.set.size > 0));
  }

  /** One instance's inputs, in order, from its stored record: what to write, or null when nothing changes. */
  private plan(instance: string, record: ProcessInstanceRecord | null, inputs: readonly Pending[], now: Date) {
    let current = record && {
      state: record.completed ? record.state : (structuredClone(record.state) as State),
      inputs: record.inputs,
      ignored: record.ignored,
      correlationId: record.correlationId,
      lastPosition: record.lastPosition,
      completed: record.completed,
      startedAt: record.startedAt,
    };
    let changed = false;
    const commands: Array<{ process: string; instance: string; notBefore: Date; command: Command }> = [];
    let cancelAll = false;
    const cancel = new Set<string>();
    const set = new Map<string, TimerRecord>();
    for (const { input, event } of inputs) {
      // A timer an earlier input of this batch cancelled or set again does not fire (as if taken after that input).
      if (input.kind === 'timer' && (cancelAll || cancel.has(input.id) || set.has(input.id))) continue;
      if (current === null) {
        if (input.kind !== 'event' || !this.definition.startedBy.includes(input.event.type)) continue;
      } else if (current.completed) {
        current.ignored++;
        changed = true;
        continue;
      } else if (event && current.lastPosition !== null && event.position <= current.lastPosition) {
        continue; // a redelivery of an event already applied
      }
      const before = current === null ? this.definition.initialState() : (current.state as State);
      const state = this.definition.evolve(before, input);
      const decision = this.definition.decide(input, state);
      const stateIssues = jsonIssues(state, ['state']);
      if (stateIssues.length > 0)
        throw new ProcessDecisionError(this.name, instance, 'evolve() returned a state that is not JSON', stateIssues);
      const inputKey = keyOf(input);
      const correlationId =
        current?.correlationId ??
        (event
          ? typeof event.metadata.correlationId === 'string'
            ? event.metadata.correlationId
            : event.id
          : instance);
      const causationId =
        input.kind === 'event' ? input.event.id : input.kind === 'rejected' ? input.command.id : `timer:${input.id}`;
      const checked = this.check(instance, decision, now);
      checked.commands.forEach((command, index) => {
        const id = processCommandId(this.name, instance, inputKey, index);
        commands.push({
          process: this.name,
          instance,
          notBefore: now,
          command: {
            id,
            type: command.type,
            data: command.data,
            metadata: { ...command.metadata, correlationId, causationId, idempotencyKey: id },
          } satisfies Command,
        });
      });
      if (checked.complete) {
        cancelAll = true;
        cancel.clear();
        set.clear();
      } else {
        for (const id of checked.cancel) {
          set.delete(id);
          cancel.add(id);
        }
        for (const timer of checked.timers) {
          cancel.delete(timer.id);
          set.set(timer.id, { ...timer, process: this.name, instance });
        }
      }
      changed = true;
      current = {
        state: state as JsonValue,
        inputs: (current?.inputs ?? 0) + 1,
        ignored: current?.ignored ?? 0,
        correlationId,
        lastPosition: event ? event.position : (current?.lastPosition ?? null),
        completed: checked.complete,
        startedAt: current?.startedAt ?? now,
      };
    }
    if (!changed || current === null) return null;
    return { record: { ...current, process: this.name, instance, updatedAt: now }, commands, cancelAll, cancel, set };
  }

  /** A plan's writes: its commands, then its timers (cancelled, then set), then its state. */
  private async write(tx: Tx, plan: NonNullable<ReturnType<ProcessRunner<State, Tx>['plan']>>): Promise<void> {
    const { record, commands, cancelAll, cancel, set } = plan;
    if (commands.length > 0) await this.processes.enqueue(tx, commands);
    if (cancelAll) await this.processes.cancelTimers(tx, this.name, record.instance, 'all');
    if (cancel.size > 0) await this.processes.cancelTimers(tx, this.name, record.instance, [...cancel]);
    if (set.size > 0) await this.processes.setTimers(tx, [...set.values()]);
    await this.processes.saveInstance(tx, { ...record, state: record.state as JsonValue });
  }

  /** The decision, checked: nothing of it is written unless all of it can be. */
  private check(instance: string, decision: ProcessDecision, now: Date) {
    const fail = (message: string, issues: ReturnType<typeof jsonIssues> = []): never => {
      throw new ProcessDecisionError(this.name, instance, message, issues);
    };
    if (typeof decision !== 'object' || decision === null)
      fail(`decide() must return an object, got ${safeQuote(decision)}`);
    const commands = decision.commands ?? [];
    if (!Array.isArray(commands)) fail('decide(): commands must be an array of commands');
    for (const command of commands) {
      if (typeof command !== 'object' || command === null || typeof command.type !== 'string')
        fail(`decide(): ${safeQuote(command)} is not a command; build one with defineCommand(...).create()`);
      const issues = jsonIssues(command.data, ['commands', command.type, 'data']);
      if (issues.length > 0) fail(`decide(): the data of command '${command.type}' is not JSON`, issues);
    }
    const schedule = decision.schedule ?? [];
    if (!Array.isArray(schedule)) fail('decide(): schedule must be an array of timers');
    const timers = schedule.map((request) => {
      if (typeof request !== 'object' || request === null) fail(`decide(): ${safeQuote(request)} is not a timer`);
      if (typeof request.name !== 'string' || !/^[A-Za-z][A-Za-z0-9_.-]{0,99}$/.test(request.name))
        fail(`decide(): timer name ${safeQuote(request.name)} must be 1 to 100 letters, digits, '_', '.' or '-'`);
      const id = request.id ?? request.name;
      if (
        typeof id !== 'string' ||
        id.length === 0 ||
        id.length > 200 ||
        jsonIssues(id).length > 0 ||
        id.includes('\u0000')
      )
        fail(`decide(): timer id ${safeQuote(id)} must be a string of 1 to 200 characters`);
      let dueAt: Date;
      try {
        dueAt = dueTimeOf(`timer '${id}'`, now, request.at, request.afterMs);
      } catch (error) {
        return fail(`decide(): ${(error as Error).message}`);
      }
      const data = request.data ?? null;
      const issues = jsonIssues(data, ['schedule', id, 'data']);
      if (issues.length > 0) fail(`decide(): the data of timer '${id}' is not JSON`, issues);
      return { id, name: request.name, dueAt, data: data as JsonValue };
    });
    const cancel = decision.cancel ?? [];
    if (!Array.isArray(cancel) || cancel.some((id) => typeof id !== 'string'))
      fail('decide(): cancel must be an array of timer ids');
    if (decision.complete !== undefined && typeof decision.complete !== 'boolean')
      fail('decide(): complete must be true or false');
    return {
      commands: commands as readonly Command[],
      timers,
      cancel: cancel as readonly string[],
      complete: decision.complete === true,
    };
  }

  // --- the timer loop (the sender is ./sender.ts) ----------------------------------------------------------

  /** Fires the timers due now, each one an input of its instance, taken and applied in one transaction. */
  private async fireDueTimers(): Promise<number> {
    const now = this.now();
    const fired = await fireDueTimers({
      process: this.name,
      processes: this.processes,
      now,
      apply: async (tx, timers) => {
        await this.applyAll(
          tx,
          timers.map((timer) => ({
            instance: timer.instance,
            input: { kind: 'timer', id: timer.id, name: timer.name, data: timer.data, dueAt: timer.dueAt },
          })),
        );
      },
      halted: () => this.halted,
      onError: this.options.onError,
    });
    if (fired > 0) this.loops.commands.wake();
    return fired;
  }

  private now(): Date {
    return new Date(this.clock.now());
  }
}

/** An input for an instance; `event` when it is one of the log. */
interface Pending {
  readonly instance: string;
  readonly input: ProcessInput;
  readonly event?: RecordedEvent;
}

function keyOf(input: ProcessInput): string {
  if (input.kind === 'event') return `event:${input.event.id}`;
  if (input.kind === 'timer') return `timer:${input.id}:${input.dueAt.getTime()}`;
  return `rejected:${input.command.id}`;
}
