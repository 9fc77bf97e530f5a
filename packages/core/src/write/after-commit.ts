import type { CommandContext } from './repository.js';

/**
 * Work that must wait for the surrounding transaction to commit (snapshots, cached states): given to the
 * transaction's `afterCommit`, or run at once outside a transaction. In a transaction with no `afterCommit` (one the
 * caller opened), it is not done at all, and the result is false: a snapshot saved on another connection before the
 * commit of a transaction that then rolls back would hold events the log does not, and every later command would
 * conflict with it.
 */
export async function afterCommit(context: CommandContext, fn: () => Promise<void> | void): Promise<boolean> {
  if (context.afterCommit) context.afterCommit(async () => fn());
  else if (!context.session) await fn();
  else return false;
  return true;
}
