/**
 * The outbox sender of process managers and command schedulers: takes the commands due out of a process's outbox and
 * through the command bus, several instances at a time, each instance's commands one after the other, with retries
 * and parking.
 */
import type { Clock } from '../clock.js';
import { DomainError, toError, UnknownCommandError, ValidationError } from '../errors.js';
import type { CommandBus } from '../write/command-bus.js';
import type { OutboxCommand, ProcessStore } from './contract.js';
import { positiveOption } from './loop.js';

/** How commands leave an outbox: the options a process manager and a command scheduler share. */
export interface CommandSendingOptions {
  /** Tries of a command that fails (not refused by the domain) before it is parked. Default 5. */
  maxCommandAttempts?: number;
  /** Backoff of those tries: base and cap, ms. Default 100 and 30 000. */
  commandRetry?: { baseDelayMs?: number; maxDelayMs?: number };
  /**
   * Commands in flight at once, each of a different instance. Default 8; 1 sends one command at a time.
   *
   * Order: the commands of one instance are sent strictly in the order they were decided, one at a time: the next
   * one is sent only after the previous one has left the outbox (handled, refused or dropped; a parked command holds
   * its instance's later ones back until it is retried). Commands of different instances have no order between them:
   * with more than one in flight, a later command of one instance may be handled before an earlier one of another.
   */
  commandsInFlight?: number;
}

export interface OutboxSender {
  /** One pass: sends the commands due now. Resolves with how many left the outbox (sent, refused or parked). */
  sendDue(): Promise<number>;
}

/** Commands read from the outbox per pass. */
const NEXT_COMMANDS_BATCH = 100;

export function createOutboxSender<Tx>(options: {
  /** The process whose outbox it sends (a process's name, or a scheduler's). */
  process: string;
  processes: ProcessStore<Tx>;
  bus: CommandBus;
  clock: Clock;
  sending: CommandSendingOptions;
  /** Whose options these are, for the messages of bad ones ("Process manager", "Command scheduler"). */
  owner: string;
  /**
   * A command the domain refused (a DomainError). The command is still pending in the outbox: this removes it (and
   * compensates, for a process) or parks it.
   */
  onRefused: (row: OutboxCommand, error: DomainError) => Promise<void>;
  /** True once the sender should take no more commands in this pass (stop() was called). */
  halted: () => boolean;
  onError?: ((error: unknown, where: string) => void) | undefined;
}): OutboxSender {
  const { process, processes, bus, clock, owner } = options;
  const maxAttempts = positiveOption(options.sending.maxCommandAttempts, 5, 'maxCommandAttempts', owner);
  const baseDelay = positiveOption(options.sending.commandRetry?.baseDelayMs, 100, 'commandRetry.baseDelayMs', owner);
  const maxDelay = positiveOption(options.sending.commandRetry?.maxDelayMs, 30_000, 'commandRetry.maxDelayMs', owner);
  const inFlight = Math.floor(positiveOption(options.sending.commandsInFlight, 8, 'commandsInFlight', owner));
  if (inFlight < 1 || inFlight > 1000)
    throw new ValidationError(
      `${owner} option commandsInFlight must be 1 to 1000, got ${options.sending.commandsInFlight}`,
    );

  /** Sends one command: true when it was sent (its id added to `sent`), refused or parked. */
  const send = async (row: OutboxCommand, sent: string[]): Promise<boolean> => {
    try {
      await bus.dispatch(row.command);
      sent.push(row.command.id);
      return true;
    } catch (thrown) {
      const error = toError(thrown);
      if (error instanceof DomainError) {
        await options.onRefused(row, error);
        return true;
      }
      const attempts = row.attempts + 1;
      const permanent = error instanceof ValidationError || error instanceof UnknownCommandError;
      const park = permanent || attempts >= maxAttempts;
      const delay = Math.min(maxDelay, baseDelay * 2 ** (attempts - 1));
      await processes.commandFailed(process, row.command.id, {
        attempts,
        error: { name: error.name, message: error.message },
        notBefore: new Date(clock.now() + delay),
        park,
      });
      if (!park) options.onError?.(error, `process ${process}: command ${row.command.type} ${row.command.id}`);
      return park;
    }
  };

  return {
    async sendDue() {
      // The head of each instance: no two rows of one pass are of the same instance, so they may all be in flight.
      const rows = await processes.nextCommands(process, new Date(clock.now()), NEXT_COMMANDS_BATCH);
      if (rows.length === 0) return 0;
      let done = 0;
      let next = 0;
      // Sent commands leave the outbox together at the end of the pass, in one transaction: a crash before it sends
      // them again, and the bus recognises them by their idempotency keys. An instance's next command is read by the
      // next pass, after this one's has left.
      const sent: string[] = [];
      const lane = async () => {
        while (next < rows.length && !options.halted()) {
          if (await send(rows[next++]!, sent)) done++;
        }
      };
      const lanes = await Promise.allSettled(Array.from({ length: Math.min(inFlight, rows.length) }, lane));
      if (sent.length > 0)
        await processes.transaction((tx) => Promise.all(sent.map((id) => processes.removeCommand(tx, process, id))));
      const failed = lanes.find((lane): lane is PromiseRejectedResult => lane.status === 'rejected');
      if (failed) throw failed.reason;
      return done;
    },
  };
}
