import type { Command } from '../command.js';
import { ValidationError } from '../errors.js';
import type { EventMetadata } from '../event.js';
import type { JsonValue } from '../json.js';

/** An event as domain code sees it: a type and data (metadata is added by the repository). */
export interface DomainEvent<Type extends string = string, Data = unknown> {
  readonly type: Type;
  readonly data: Data;
  readonly metadata?: EventMetadata;
}

/**
 * The decider: domain logic as three pure functions. `decide` turns a command and the current state into new events
 * (or throws a `DomainError`), `evolve` folds one event into the state, `initialState` is the state of a new stream.
 */
export interface Decider<State, C extends Command = Command, E extends DomainEvent = DomainEvent> {
  initialState(): State;
  decide(command: C, state: State): E | readonly E[] | Promise<E | readonly E[]>;
  evolve(state: State, event: E): State;
}

/** When and how the repository keeps snapshots of an aggregate's state. */
export interface SnapshotPolicy<State> {
  /** Take a snapshot when an append crosses a multiple of this many events. Omit to take them only on demand. */
  every?: number;
  /** The version of the state's shape. A snapshot taken with another version is ignored and replaced. Default 1. */
  stateVersion?: number;
  /** State to JSON (default: the state itself, which must then be JSON). */
  serialize?(state: State): JsonValue;
  /** JSON back to state (default: the JSON itself). */
  deserialize?(json: JsonValue): State;
}

/** A decider bound to a stream category (`account` → streams `account-<id>`), with an optional snapshot policy. */
export interface Aggregate<State, C extends Command = Command, E extends DomainEvent = DomainEvent> extends Decider<
  State,
  C,
  E
> {
  readonly category: string;
  readonly snapshots?: SnapshotPolicy<State> | undefined;
}

export function defineAggregate<State, C extends Command, E extends DomainEvent>(
  aggregate: Aggregate<State, C, E>,
): Aggregate<State, C, E> {
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(aggregate.category)) {
    throw new ValidationError(
      `Aggregate category '${aggregate.category}' must be a letter followed by letters, digits or '_' (it is the part of the stream id before '-')`,
    );
  }
  const every = aggregate.snapshots?.every;
  if (every !== undefined && !(Number.isSafeInteger(every) && every >= 1)) {
    throw new ValidationError(`Aggregate '${aggregate.category}': snapshots.every must be a whole number of 1 or more`);
  }
  return aggregate;
}

/**
 * The class style: an object that handles commands (returning the events to record, or throwing a `DomainError`) and
 * applies events to itself. The repository creates a fresh instance and replays the stream into it with `apply`.
 */
export interface AggregateRoot<C extends Command = Command, E extends DomainEvent = DomainEvent> {
  handle(command: C): E | readonly E[] | void | Promise<E | readonly E[] | void>;
  apply(event: E): void;
}

/**
 * Turns a class-style aggregate into an {@link Aggregate}, so both styles share one repository.
 * Snapshots of a class default to its own enumerable fields, restored with `Object.assign(create(), json)`.
 */
export function aggregateFromClass<A extends AggregateRoot<C, E>, C extends Command, E extends DomainEvent>(options: {
  category: string;
  create: () => A;
  snapshots?: SnapshotPolicy<A>;
}): Aggregate<A, C, E> {
  const snapshots = options.snapshots && {
    serialize: (state: A) => JSON.parse(JSON.stringify(state)) as JsonValue,
    deserialize: (json: JsonValue) => Object.assign(options.create(), json),
    ...options.snapshots,
  };
  return defineAggregate<A, C, E>({
    category: options.category,
    snapshots,
    initialState: options.create,
    decide: async (command, state) => (await state.handle(command)) ?? [],
    evolve: (state, event) => {
      state.apply(event);
      return state;
    },
  });
}
