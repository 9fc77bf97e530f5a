import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import type { Command } from '../command.js';
import type { Decider, DomainEvent } from '../write/aggregate.js';

/**
 * Given / when / then for deciders and class aggregates (through `aggregateFromClass`), with no store:
 *
 * ```ts
 * const spec = DeciderSpecification.for(account);
 * await spec.given([opened, deposited(100)]).when(withdraw(30)).then([withdrawn(30)]);
 * await spec.given([opened]).when(withdraw(500)).thenThrows(DomainError, (e) => e.rule === 'INSUFFICIENT_FUNDS');
 * ```
 * Events are compared by `type` and `data` (metadata is the repository's business). Failures print the whole scenario.
 */
export const DeciderSpecification = {
  for<State, C extends Command, E extends DomainEvent>(decider: Decider<State, C, E>) {
    return {
      given(events: readonly E[]) {
        return {
          when(command: C) {
            const run = async (): Promise<readonly E[]> => {
              let state = decider.initialState();
              for (const event of events) state = decider.evolve(state, event);
              const decided = await decider.decide(command, state);
              return Array.isArray(decided) ? decided : [decided as E];
            };
            const scenario = () => `\n  given: ${show(events)}\n  when:  ${show([command])}`;
            return {
              /** The command records exactly these events (type and data), in order. `[]` means "decides nothing". */
              async then(expected: readonly E[]): Promise<void> {
                let actual: readonly E[];
                try {
                  actual = await run();
                } catch (error) {
                  assert.fail(
                    `expected events, but the command threw ${String(error)}${scenario()}\n  then:  ${show(expected)}`,
                  );
                }
                assert.deepStrictEqual(
                  strip(actual),
                  strip(expected),
                  `the command recorded other events than expected${scenario()}`,
                );
              },
              /** The command is refused with an error of this class (and, optionally, matching `check`). */
              async thenThrows<X extends Error>(
                type: new (...args: never[]) => X,
                check?: (error: X) => boolean,
              ): Promise<void> {
                let actual: readonly E[];
                try {
                  actual = await run();
                } catch (error) {
                  assert.ok(error instanceof type, `expected ${type.name}, got ${String(error)}${scenario()}`);
                  if (check) assert.ok(check(error), `the ${type.name} did not match: ${String(error)}${scenario()}`);
                  return;
                }
                assert.fail(`expected ${type.name}, but the command recorded ${show(actual)}${scenario()}`);
              },
            };
          },
        };
      },
    };
  },
};

function strip(events: readonly DomainEvent[]): Array<{ type: string; data: unknown }> {
  return events.map((event) => ({ type: event.type, data: event.data }));
}

function show(items: readonly unknown[]): string {
  if (items.length === 0) return '(nothing)';
  return items
    .map((item) => {
      const { type, data } = item as { type: string; data: unknown };
      return `${type} ${inspect(data, { depth: 4, breakLength: Infinity })}`;
    })
    .join(', ');
}
