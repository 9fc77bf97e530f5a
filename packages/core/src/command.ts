import type { StandardSchemaV1 } from '@standard-schema/spec';
import { safeQuote, ValidationError } from './errors.js';
import { isUuid, newId } from './ids.js';
import type { JsonValue } from './json.js';
import { isValidEventType } from './stream-id.js';

/** Metadata of a command; what it carries flows into the events it causes. */
export interface CommandMetadata {
  /** Shared by everything one request causes. A new one is made when absent. */
  correlationId?: string;
  /** The message that caused this command (an event, for a saga), if any. */
  causationId?: string;
  /** A caller-chosen key: a second command with the same key is not handled again; the first result is returned. */
  idempotencyKey?: string;
  traceparent?: string;
  tenant?: string;
  actor?: string;
  [key: string]: JsonValue | undefined;
}

/** A request to change something. `id` is a UUID; it becomes the `causationId` of the events the command causes. */
export interface Command<Type extends string = string, Data = unknown> {
  readonly id: string;
  readonly type: Type;
  readonly data: Data;
  readonly metadata: CommandMetadata;
}

/**
 * A command type declared once with a Standard Schema validator; its data type is inferred.
 *
 * ```ts
 * const Deposit = defineCommand('Deposit', z.object({ accountId: z.string(), amount: z.number().positive() }));
 * await bus.dispatch(Deposit.create({ accountId: '42', amount: 10 }, { idempotencyKey: 'req-7' }));
 * ```
 */
export interface CommandDefinition<Type extends string = string, Schema extends StandardSchemaV1 = StandardSchemaV1> {
  readonly type: Type;
  readonly schema: Schema;
  create(
    data: StandardSchemaV1.InferInput<Schema>,
    options?: { id?: string; idempotencyKey?: string; metadata?: CommandMetadata },
  ): Command<Type, StandardSchemaV1.InferOutput<Schema>>;
  is(command: Command): command is Command<Type, StandardSchemaV1.InferOutput<Schema>>;
}

/** The command type of a definition (or a union of definitions). */
export type CommandOf<D> =
  D extends CommandDefinition<infer T, infer S> ? Command<T, StandardSchemaV1.InferOutput<S>> : never;

export function defineCommand<const Type extends string, Schema extends StandardSchemaV1>(
  type: Type,
  schema: Schema,
): CommandDefinition<Type, Schema> {
  if (!isValidEventType(type))
    throw new ValidationError(
      `Invalid command type name '${String(type)}': use a letter followed by letters, digits or '_' (e.g. 'OpenAccount')`,
    );
  if (typeof (schema as { '~standard'?: { validate?: unknown } })?.['~standard']?.validate !== 'function') {
    throw new ValidationError(
      `The schema of command type '${type}' is not a Standard Schema validator (zod 3.24+, valibot 1, arktype 2...)`,
    );
  }
  return {
    type,
    schema,
    create(data, options = {}) {
      return createCommand(type, data as StandardSchemaV1.InferOutput<Schema>, options);
    },
    is(command: Command): command is Command<Type, StandardSchemaV1.InferOutput<Schema>> {
      return command.type === type;
    },
  };
}

/** A command of any type, without a definition (the HTTP API and tests build them from plain input). */
export function createCommand<Type extends string, Data>(
  type: Type,
  data: Data,
  options: { id?: string; idempotencyKey?: string; metadata?: CommandMetadata } = {},
): Command<Type, Data> {
  const id = options.id ?? newId();
  if (!isUuid(id)) throw new ValidationError(`Command '${type}': id ${safeQuote(id)} is not a UUID`);
  const metadata: CommandMetadata = { ...options.metadata };
  if (options.idempotencyKey !== undefined) metadata.idempotencyKey = options.idempotencyKey;
  metadata.correlationId ??= newId();
  return { id, type, data, metadata };
}
