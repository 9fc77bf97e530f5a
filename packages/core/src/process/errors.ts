import { EventlineError, type ValidationIssue } from '../errors.js';

/**
 * A process's `decide` (or `evolve`) returned something that cannot be kept: a state that is not JSON, a command that
 * is not one, a timer without a due time. The input is retried and then parked like any failing input; nothing of it
 * was written.
 */
export class ProcessDecisionError extends EventlineError {
  readonly code = 'PROCESS_DECISION' as const;
  constructor(
    readonly process: string,
    readonly instance: string,
    message: string,
    readonly issues: readonly ValidationIssue[] = [],
  ) {
    super(`Process '${process}', instance '${instance}': ${message}`);
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), process: this.process, instance: this.instance, issues: this.issues };
  }
}

/** The process store was closed: create a new one. */
export class ProcessStoreClosedError extends EventlineError {
  readonly code = 'PROCESS_STORE_CLOSED' as const;
  constructor() {
    super('The process store was closed: create a new process store (and process managers over it).');
  }
}
