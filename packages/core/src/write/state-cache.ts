import type { Command } from '../command.js';
import { ConcurrencyError, safeQuote, ValidationError } from '../errors.js';
import type { DomainEvent } from './aggregate.js';
import { afterCommit } from './after-commit.js';
import type {
  CommandContext,
  CommandResult,
  Decided,
  LoadedAggregate,
  Repository,
  StateCacheOptions,
  SteppedRepository,
} from './repository.js';

/**
 * The repository with each aggregate's state and version kept in memory after a command (see
 * `RepositoryOptions.cache`): the next command on it decides at once instead of reading the stream again. The append
 * still carries the version the state is of, so a stale state is refused with a ConcurrencyError, and the command is
 * decided again on the store's state in the same attempt; so is a refusal or an empty decision on a cached state, which
 * no append would check.
 */
export function withStateCache<State, C extends Command, E extends DomainEvent>(
  repository: SteppedRepository<State, C, E>,
  options: StateCacheOptions,
): Repository<State, C, E> {
  const { steps } = repository;
  const cache = new StateCache<State>(options);

  /** Keeps the state a command left once its transaction has committed; drops the entry when it cannot know when. */
  const keep = async (decided: Decided<State>, context: CommandContext) => {
    const { result } = decided;
    if (result.events.length === 0) {
      await afterCommit(context, () => cache.keep(result.streamId, result.version, decided.state()));
      return;
    }
    const kept =
      !result.duplicate &&
      (await afterCommit(context, () => cache.keep(result.streamId, result.version, decided.state())));
    // Appended in a transaction of the caller's (or a duplicate): whatever is cached for the stream is stale now.
    if (!kept) cache.take(result.streamId);
  };

  /** Decides on the cached state; undefined when the store's state must decide (stale, refused, or nothing to do). */
  const onCached = async (
    command: C,
    loaded: LoadedAggregate<State>,
    context: CommandContext,
  ): Promise<CommandResult | undefined> => {
    let events: readonly E[];
    try {
      events = await steps.decide(command, loaded, context);
    } catch {
      // A refusal must not rest on a state that may be stale (another writer may have made the command valid).
      return undefined;
    }
    // Nothing to do, says the cached state: only the store can confirm it (no append will check it).
    if (events.length === 0) return undefined;
    try {
      const decided = await steps.append(command, loaded, events, context);
      await keep(decided, context);
      return decided.result;
    } catch (error) {
      // The cached state was stale (another writer moved the stream on).
      if (error instanceof ConcurrencyError) return undefined;
      throw error;
    }
  };

  const handle: Repository<State, C, E>['handle'] = (id, command, context = {}) => {
    const streamId = repository.streamIdOf(id);
    return steps.retry(context, async () => {
      // A command takes its aggregate's entry out of the cache while it runs, so two commands never share one state.
      // Inside a transaction the cache is not read (the state is read in the transaction).
      const entry = context.session ? undefined : cache.take(streamId);
      if (entry !== undefined && (context.expectedVersion === undefined || context.expectedVersion === entry.version)) {
        const loaded = { streamId, state: entry.state, version: entry.version, eventsRead: 0, fromSnapshot: false };
        const result = await onCached(command, loaded, context);
        if (result) return result;
      }
      // The store's state decides (this is not another attempt: a stale cached state costs no retry).
      const loaded = await steps.load(streamId, context);
      const decided = await steps.append(command, loaded, await steps.decide(command, loaded, context), context);
      await keep(decided, context);
      return decided.result;
    });
  };

  return {
    aggregate: repository.aggregate,
    streamIdOf: repository.streamIdOf,
    load: repository.load,
    snapshot: repository.snapshot,
    handle,
    handler: (idOf) => (command, context) => handle(idOf(command), command, context),
  };
}

/**
 * The states of recently used aggregates, least recently used first (a Map keeps insertion order). An entry is taken
 * out while a command runs on it and put back, newer, when the command succeeds.
 */
class StateCache<State> {
  private readonly entries = new Map<string, { readonly version: number; readonly state: State }>();
  private readonly maxEntries: number;

  constructor(options: StateCacheOptions) {
    const maxEntries = options.maxEntries ?? 10_000;
    if (!(Number.isSafeInteger(maxEntries) && maxEntries >= 1))
      throw new ValidationError(`cache.maxEntries must be a whole number of 1 or more; got ${safeQuote(maxEntries)}`);
    this.maxEntries = maxEntries;
  }

  take(streamId: string): { readonly version: number; readonly state: State } | undefined {
    const entry = this.entries.get(streamId);
    if (entry) this.entries.delete(streamId);
    return entry;
  }

  /** Keeps a state unless a newer one of the same stream is already kept (a command that finished first). */
  keep(streamId: string, version: number, state: State): void {
    const current = this.entries.get(streamId);
    if (current && current.version >= version) return;
    this.entries.delete(streamId);
    this.entries.set(streamId, { version, state });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }
}
