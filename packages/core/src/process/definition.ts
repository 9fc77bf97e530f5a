/**
 * A process manager (a saga), declared in the decider style of the write side: what starts an instance, which events
 * it takes, how an event finds its instance, how inputs change its state and what it decides to do.
 */
import type { Command } from '../command.js';
import { ValidationError, safeQuote } from '../errors.js';
import type { RecordedEvent } from '../event.js';
import { isValidEventType } from '../stream-id.js';

/** An event of the log, given to the instance it correlates to. */
export interface ProcessEventInput {
  readonly kind: 'event';
  readonly event: RecordedEvent;
}

/** A timer the instance set, fired (at or after its due time; late after a restart, never early, never twice). */
export interface ProcessTimerInput {
  readonly kind: 'timer';
  readonly id: string;
  readonly name: string;
  readonly data: unknown;
  readonly dueAt: Date;
}

/** A command the instance sent that the domain refused (a DomainError): the place to compensate. */
export interface ProcessRejectedInput {
  readonly kind: 'rejected';
  readonly command: Command;
  readonly error: { readonly code: string; readonly rule: string; readonly message: string };
}

export type ProcessInput = ProcessEventInput | ProcessTimerInput | ProcessRejectedInput;

/** A timer to set: due at `at`, or `afterMs` after the input was handled. Its `id` is unique in the instance. */
export interface TimerRequest {
  readonly id?: string;
  readonly name: string;
  readonly at?: Date;
  readonly afterMs?: number;
  readonly data?: unknown;
}

/** What an instance does after an input. Every part is optional. */
export interface ProcessDecision {
  /** Commands to send, in order. Each gets a deterministic id, the instance's correlation id and the input as causation. */
  readonly commands?: readonly Command[];
  /** Timers to set (a timer id that is pending is set again, replacing it). */
  readonly schedule?: readonly TimerRequest[];
  /** Ids of this instance's pending timers to cancel. */
  readonly cancel?: readonly string[];
  /** Ends the instance: its pending timers are cancelled; later inputs are recorded and otherwise ignored. */
  readonly complete?: boolean;
}

export interface ProcessDefinition<State = unknown> {
  /** Unique per application: it names the process's subscription, instances, outbox and timers. */
  readonly name: string;
  /** Event types that may start an instance (an event of another type for an instance that does not exist is skipped). */
  readonly startedBy: readonly string[];
  /** Event types an existing instance takes, besides those that start one. */
  readonly handles: readonly string[];
  /** The instance an event belongs to, or null when it belongs to none. */
  readonly correlate: (event: RecordedEvent) => string | null;
  /** A new instance's state (JSON). */
  readonly initialState: () => State;
  /** The state after an input; called before `decide`, which sees the new state. Default: the state unchanged. */
  readonly evolve: (state: State, input: ProcessInput) => State;
  /** What to do after an input, given the state `evolve` returned. */
  readonly decide: (input: ProcessInput, state: State) => ProcessDecision;
  /** Every event type the process reads. */
  readonly eventTypes: readonly string[];
}

/**
 * Declares a process manager.
 *
 * ```ts
 * const responses = defineProcess({
 *   name: 'guestlist-responses',
 *   startedBy: ['InviteAccepted'],
 *   correlate: () => 'guestlist',
 *   initialState: () => ({ accepted: 0 }),
 *   evolve: (state, input) =>
 *     input.kind === 'event' && input.event.type === 'InviteAccepted' ? { accepted: state.accepted + 1 } : state,
 *   decide: (input, state) => {
 *     if (input.kind !== 'event') return {};
 *     const inviteId = input.event.streamId.slice('invitation-'.length);
 *     return { commands: [state.accepted <= 2 ? ConfirmInvite.create({ inviteId }) : DenyInvite.create({ inviteId })] };
 *   },
 * });
 * ```
 */
export function defineProcess<State>(definition: {
  name: string;
  startedBy: readonly string[];
  handles?: readonly string[];
  correlate: (event: RecordedEvent) => string | null;
  initialState: () => State;
  evolve?: (state: State, input: ProcessInput) => State;
  decide: (input: ProcessInput, state: State) => ProcessDecision;
}): ProcessDefinition<State> {
  const given = definition as Partial<typeof definition> | null;
  if (typeof given !== 'object' || given === null)
    throw new ValidationError('defineProcess() expects a definition object');
  assertProcessName(given.name);
  const types = (value: unknown, field: string): readonly string[] => {
    if (value === undefined && field === 'handles') return [];
    if (!Array.isArray(value) || value.some((type) => !isValidEventType(type)))
      throw new ValidationError(
        `Process '${given.name}': ${field} must be an array of event type names (a letter, then letters, digits or '_'), got ${safeQuote(value)}`,
      );
    return [...new Set(value as string[])];
  };
  const startedBy = types(given.startedBy, 'startedBy');
  if (startedBy.length === 0)
    throw new ValidationError(
      `Process '${given.name}': startedBy must name at least one event type that starts an instance`,
    );
  const handles = types(given.handles, 'handles');
  for (const field of ['correlate', 'initialState', 'decide'] as const) {
    if (typeof given[field] !== 'function')
      throw new ValidationError(`Process '${given.name}': ${field} must be a function`);
  }
  if (given.evolve !== undefined && typeof given.evolve !== 'function')
    throw new ValidationError(`Process '${given.name}': evolve must be a function when given`);
  return {
    name: definition.name,
    startedBy,
    handles,
    correlate: definition.correlate,
    initialState: definition.initialState,
    evolve: definition.evolve ?? ((state) => state),
    decide: definition.decide,
    eventTypes: [...new Set([...startedBy, ...handles])],
  };
}

/** A process name: 1 to 100 characters, a letter first, then letters, digits, '_', '-' or '.'. */
export function assertProcessName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !/^[A-Za-z][A-Za-z0-9_.-]{0,99}$/.test(name))
    throw new ValidationError(
      `Invalid process name ${safeQuote(name)}: use 1 to 100 characters, a letter first, then letters, digits, '_', '-' or '.' (e.g. 'guestlist-responses')`,
    );
}

/**
 * The class style of a process: an object that applies each input to itself (`apply`, optional) and then says what to
 * do (`handle`). Its state is its own enumerable fields, kept as JSON and restored with `Object.assign(create(), json)`
 * before every input, as a class aggregate's snapshot is.
 */
export interface ProcessRoot {
  apply?(input: ProcessInput): void;
  handle(input: ProcessInput): ProcessDecision;
}

/**
 * Turns a class-style process into a {@link ProcessDefinition}, so both styles share one manager.
 *
 * ```ts
 * class ResponseSaga implements ProcessRoot {
 *   accepted = 0;
 *   apply(input: ProcessInput) {
 *     if (input.kind === 'event' && input.event.type === 'InviteAccepted') this.accepted++;
 *   }
 *   handle(input: ProcessInput): ProcessDecision {
 *     if (input.kind !== 'event' || input.event.type !== 'InviteAccepted') return {};
 *     const inviteId = input.event.streamId.slice('invitation-'.length);
 *     return { commands: [this.accepted <= 2 ? ConfirmInvite.create({ inviteId }) : DenyInvite.create({ inviteId })] };
 *   }
 * }
 * const responses = processFromClass({
 *   name: 'guestlist-responses',
 *   startedBy: ['InviteAccepted'],
 *   correlate: () => 'main',
 *   create: () => new ResponseSaga(),
 * });
 * ```
 */
export function processFromClass<R extends ProcessRoot>(options: {
  name: string;
  startedBy: readonly string[];
  handles?: readonly string[];
  correlate: (event: RecordedEvent) => string | null;
  create: () => R;
}): ProcessDefinition<Record<string, unknown>> {
  if (typeof options?.create !== 'function')
    throw new ValidationError(
      `Process '${String(options?.name)}': create must be a function that returns the process object`,
    );
  const revive = (state: Record<string, unknown>): R => {
    const root = Object.assign(options.create(), state);
    if (typeof root.handle !== 'function')
      throw new ValidationError(
        `Process '${options.name}': create() must return an object with a handle(input) method`,
      );
    return root;
  };
  const fields = (root: R): Record<string, unknown> => ({ ...(root as unknown as Record<string, unknown>) });
  return defineProcess<Record<string, unknown>>({
    name: options.name,
    startedBy: options.startedBy,
    ...(options.handles === undefined ? {} : { handles: options.handles }),
    correlate: options.correlate,
    initialState: () => fields(options.create()),
    evolve: (state, input) => {
      const root = revive(state);
      root.apply?.(input);
      return fields(root);
    },
    decide: (input, state) => revive(state).handle(input),
  });
}
