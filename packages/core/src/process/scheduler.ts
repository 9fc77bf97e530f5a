/**
 * A durable command scheduler for application code: `scheduleCommand(at, command)` sends the command through the
 * command bus at (or after) `at`, without a process manager. It keeps its commands in a {@link ProcessStore} as a
 * process's timers and outbox are kept: at the due time the timer is taken and the command enqueued in one
 * transaction, then the outbox sender sends it with its own id as the idempotency key, retrying and parking as a
 * process manager's sender does.
 */
import { systemClock, type Clock } from '../clock.js';
import type { Command } from '../command.js';
import { safeQuote, UnknownCommandError, ValidationError } from '../errors.js';
import { isUuid } from '../ids.js';
import { jsonIssues, type JsonValue } from '../json.js';
import { isValidEventType } from '../stream-id.js';
import { idempotencyStreamId, type CommandBus } from '../write/command-bus.js';
import type { OutboxCommand, ProcessStore, TimerRecord } from './contract.js';
import { assertProcessName } from './definition.js';
import { createWorkLoop, positiveOption, type WorkLoop } from './loop.js';
import { createOutboxSender, type CommandSendingOptions, type OutboxSender } from './sender.js';
import { dueTimeOf, fireDueTimers, LATEST_DUE } from './timers.js';

export interface CommandSchedulerOptions<Tx> extends CommandSendingOptions {
  processes: ProcessStore<Tx>;
  /** Where the commands go. It must de-duplicate by idempotency key (`defaultMiddleware` does). */
  bus: CommandBus;
  /** The time due times are measured on (and the sender's retries). Default `systemClock`. */
  clock?: Clock;
  /**
   * Schedulers of one name on one store share their commands: each command is sent once by whichever takes it.
   * Default 'commands'. A process name's rules (a letter, then letters, digits, '_', '-' or '.'); it never meets a
   * process manager's own timers or outbox.
   */
  name?: string;
  /** How often the sender and the timer loop look for work when nothing wakes them. Default 1000 and 100 ms. */
  pollIntervalMs?: { commands?: number; timers?: number };
  /** Errors it recovers from (a command that failed and will be tried again, a store unavailable). */
  onError?: (error: unknown, where: string) => void;
}

/** A command waiting for its time. */
export interface ScheduledCommand {
  /** The command's id: what `cancel` takes. */
  readonly id: string;
  readonly dueAt: Date;
  readonly command: Command;
}

export interface CommandScheduler<Tx = unknown> {
  readonly name: string;
  /**
   * Sends `command` through the bus at `at`, or `afterMs` from now: not before, and late when no scheduler ran at
   * the time (it goes as soon as one does). The command keeps its id, which names the schedule: scheduling a command
   * with the id of one still waiting moves it to the new time. With `tx` (a transaction of the process store), it is
   * written in that transaction, with the caller's own writes, or not at all.
   */
  scheduleCommand(
    at: Date | { readonly afterMs: number },
    command: Command,
    options?: { tx?: Tx },
  ): Promise<{ id: string; dueAt: Date }>;
  /** Cancels a command still waiting for its time: true when it was; false when it is unknown or already due. */
  cancel(id: string, options?: { tx?: Tx }): Promise<boolean>;
  /** The commands waiting for their time, earliest first. */
  scheduled(): Promise<ScheduledCommand[]>;
  /** Commands due and waiting to be sent, or parked: after their tries, or refused by the domain. */
  commands(options?: { status?: 'pending' | 'parked' }): Promise<OutboxCommand[]>;
  /** Sends a parked command again. False when there is no such parked command. */
  retryCommand(id: string): Promise<boolean>;
  start(): void;
  /** Stops the timer loop and the sender (the pass in progress finishes). */
  stop(): Promise<void>;
  /** Fires the due commands and sends them once now (tests on a test clock call it after moving time). */
  runOnce(): Promise<{ sent: number; fired: number }>;
}

/** The store's process name of a scheduler: a ':' no process name has, so it never meets a process's rows. */
const processOf = (name: string) => `scheduler:${name}`;

/** The name of the timers that carry a scheduled command. */
const TIMER_NAME = 'scheduled-command';

/**
 * A durable command scheduler.
 *
 * ```ts
 * const scheduler = createCommandScheduler({ processes, bus });
 * scheduler.start();
 * const { id } = await scheduler.scheduleCommand({ afterMs: 86_400_000 }, ExpireInvite.create({ inviteId: '7' }));
 * ```
 */
export function createCommandScheduler<Tx>(options: CommandSchedulerOptions<Tx>): CommandScheduler<Tx> {
  const given = options as Partial<CommandSchedulerOptions<Tx>> | null;
  if (typeof given !== 'object' || given === null)
    throw new ValidationError('createCommandScheduler() expects { processes, bus }');
  if (typeof given.processes !== 'object' || given.processes === null)
    throw new ValidationError('createCommandScheduler(): processes must be a process store');
  if (typeof given.bus?.dispatch !== 'function')
    throw new ValidationError('createCommandScheduler(): bus must be a command bus');
  const name = options.name ?? 'commands';
  assertProcessName(name);
  const process = processOf(name);
  const { processes, bus } = options;
  const clock = options.clock ?? systemClock;
  const owner = 'Command scheduler';
  let running = false;
  let halted = false;
  const now = () => new Date(clock.now());

  const sender: OutboxSender = createOutboxSender({
    process,
    processes,
    bus,
    clock,
    sending: options,
    owner,
    // No process to compensate: the refused command is parked, where an operator can see it and retry or drop it.
    onRefused: (row, error) =>
      processes.commandFailed(process, row.command.id, {
        attempts: row.attempts + 1,
        error: { name: error.name, message: `refused by the domain (${error.rule}): ${error.message}` },
        notBefore: now(),
        park: true,
      }),
    halted: () => halted,
    onError: options.onError,
  });

  const fire = async (): Promise<number> => {
    const at = now();
    const fired = await fireDueTimers({
      process,
      processes,
      now: at,
      apply: (tx, timers) =>
        processes.enqueue(
          tx,
          timers.map((timer) => ({
            process,
            instance: timer.instance,
            command: commandOf(timer),
            notBefore: at,
          })),
        ),
      halted: () => halted,
      onError: options.onError,
    });
    if (fired > 0) loops.commands.wake();
    return fired;
  };

  const loop = (which: string, intervalMs: number, work: () => Promise<number>) =>
    createWorkLoop({
      clock,
      intervalMs,
      work,
      onError: (error) => options.onError?.(error, `scheduler ${name}: ${which}`),
    });
  const loops: { commands: WorkLoop; timers: WorkLoop } = {
    commands: loop(
      'commands',
      positiveOption(options.pollIntervalMs?.commands, 1000, 'pollIntervalMs.commands', owner),
      () => sender.sendDue(),
    ),
    timers: loop('timers', positiveOption(options.pollIntervalMs?.timers, 100, 'pollIntervalMs.timers', owner), fire),
  };

  const inTx = <T>(tx: Tx | undefined, work: (tx: Tx) => Promise<T>): Promise<T> =>
    tx === undefined ? processes.transaction(work) : work(tx);

  return {
    name,
    async scheduleCommand(at, command, scheduleOptions = {}) {
      // A Date is `at`; any other object is read for `afterMs`; anything else is refused as not a Date.
      const delay = typeof at === 'object' && at !== null && !(at instanceof Date);
      const dueAt = delay
        ? dueTimeOf('scheduleCommand()', now(), undefined, (at as { afterMs?: unknown }).afterMs)
        : dueTimeOf('scheduleCommand()', now(), at, undefined);
      const checked = checkCommand(command, bus);
      const timer: TimerRecord = {
        id: checked.id,
        process,
        instance: checked.id,
        name: TIMER_NAME,
        dueAt,
        data: { command: checked } as unknown as JsonValue,
      };
      await inTx(scheduleOptions.tx, (tx) => processes.setTimers(tx, [timer]));
      if (scheduleOptions.tx === undefined) loops.timers.wake();
      return { id: checked.id, dueAt };
    },
    async cancel(id, cancelOptions = {}) {
      if (!isUuid(id)) return false;
      const key = id.toLowerCase();
      // Taken as if it were the latest due time there is: the timer goes whenever it is due, unless a firing took it.
      const latest = new Date(LATEST_DUE);
      const taken = await inTx(cancelOptions.tx, (tx) => processes.takeTimer(tx, process, key, key, latest));
      return taken !== null;
    },
    async scheduled() {
      return (await processes.listTimers(process)).map((timer) => ({
        id: timer.id,
        dueAt: timer.dueAt,
        command: commandOf(timer),
      }));
    },
    commands(listOptions = {}) {
      return processes.listCommands(process, listOptions);
    },
    async retryCommand(id) {
      if (!isUuid(id)) return false;
      const retried = await processes.retryCommand(process, id.toLowerCase(), now());
      if (retried) loops.commands.wake();
      return retried;
    },
    start() {
      if (running) return;
      running = true;
      halted = false;
      loops.commands.start();
      loops.timers.start();
    },
    async stop() {
      if (!running) return;
      running = false;
      halted = true;
      await Promise.all([loops.commands.stop(), loops.timers.stop()]);
      halted = false;
    },
    async runOnce() {
      const fired = await fire();
      const sent = await sender.sendDue();
      return { sent, fired };
    },
  };
}

/** The command as it is kept: checked, its id in lower case, its idempotency key its id unless it has one. */
function checkCommand(command: unknown, bus: CommandBus): Command {
  const given = command as Partial<Command> | null;
  const notOne = (why: string) =>
    new ValidationError(
      `scheduleCommand(): ${why}; build a command with defineCommand(...).create() (got ${safeQuote(command)})`,
      [],
      command,
    );
  if (typeof given !== 'object' || given === null || Array.isArray(given)) throw notOne('the command is not an object');
  if (!isValidEventType(given.type)) throw notOne('its type must be a command type name');
  if (!isUuid(given.id)) throw notOne('its id must be a UUID');
  if (typeof given.metadata !== 'object' || given.metadata === null || Array.isArray(given.metadata))
    throw notOne('its metadata must be an object');
  const issues = [...jsonIssues(given.data, ['data']), ...jsonIssues(given.metadata, ['metadata'])];
  if (issues.length > 0)
    throw new ValidationError(`scheduleCommand(): command '${given.type}' is not JSON`, issues, command);
  // A key the bus would refuse at the due time is refused now (idempotencyStreamId throws a ValidationError).
  if (given.metadata.idempotencyKey !== undefined) idempotencyStreamId(given.metadata.idempotencyKey);
  const types = bus.types();
  if (!types.includes(given.type)) throw new UnknownCommandError(given.type, types);
  const id = given.id.toLowerCase();
  const copy = structuredClone({ data: given.data, metadata: given.metadata }) as Pick<Command, 'data' | 'metadata'>;
  return {
    id,
    type: given.type,
    data: copy.data,
    metadata: { ...copy.metadata, idempotencyKey: copy.metadata.idempotencyKey ?? id },
  };
}

function commandOf(timer: TimerRecord): Command {
  return (timer.data as unknown as { command: Command }).command;
}
