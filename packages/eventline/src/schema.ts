import type { StandardSchemaV1 } from '@standard-schema/spec';
import { UnknownEventTypeError, ValidationError, type ValidationIssue } from './errors.js';
import type { EventInput, EventMetadata, RecordedEvent } from './event.js';
import { isValidEventType } from './stream-id.js';

/**
 * An event type declared once with a Standard Schema validator (zod, valibot, arktype...). Its TypeScript data type is
 * inferred from the schema, and a store given the definition validates every appended event of that type against it.
 *
 * ```ts
 * const AccountOpened = defineEvent('AccountOpened', z.object({ owner: z.string() }));
 * await store.append('account-1', [AccountOpened.create({ owner: 'Ada' })]);
 * ```
 */
export interface EventDefinition<Type extends string = string, Schema extends StandardSchemaV1 = StandardSchemaV1> {
  readonly type: Type;
  readonly schema: Schema;
  /** The version of the data shape this definition describes; recorded in each event's metadata. */
  readonly schemaVersion: number;
  /** An event input of this type; the data is checked against the schema when appended. */
  create(data: StandardSchemaV1.InferInput<Schema>, options?: { id?: string; metadata?: EventMetadata }): EventInput<Type, StandardSchemaV1.InferOutput<Schema>>;
  /** Whether a recorded event is of this type (narrows its data type). */
  is(event: RecordedEvent): event is RecordedEvent<Type, StandardSchemaV1.InferOutput<Schema>>;
}

/** The data type of an event definition. */
export type EventData<D> = D extends EventDefinition<string, infer S> ? StandardSchemaV1.InferOutput<S> : never;
/** The recorded-event type of an event definition (or a union of them). */
export type EventOf<D> = D extends EventDefinition<infer T, infer S> ? RecordedEvent<T, StandardSchemaV1.InferOutput<S>> : never;
/** The event-input type of an event definition (or a union of them). */
export type EventInputOf<D> = D extends EventDefinition<infer T, infer S> ? EventInput<T, StandardSchemaV1.InferOutput<S>> : never;

export function defineEvent<const Type extends string, Schema extends StandardSchemaV1>(
  type: Type,
  schema: Schema,
  options: { schemaVersion?: number } = {},
): EventDefinition<Type, Schema> {
  if (!isValidEventType(type)) {
    throw new ValidationError(`Invalid event type name '${String(type)}': use a letter followed by letters, digits or '_' (e.g. 'AccountOpened')`);
  }
  if (!isStandardSchema(schema)) {
    throw new ValidationError(`The schema of event type '${type}' is not a Standard Schema validator (zod 3.24+, valibot 1, arktype 2...)`);
  }
  const schemaVersion = options.schemaVersion ?? 1;
  if (!Number.isInteger(schemaVersion) || schemaVersion < 1) {
    throw new ValidationError(`The schemaVersion of event type '${type}' must be a whole number of 1 or more, got ${String(schemaVersion)}`);
  }
  return {
    type,
    schema,
    schemaVersion,
    create(data, createOptions = {}) {
      return {
        type,
        data: data as StandardSchemaV1.InferOutput<Schema>,
        ...(createOptions.id === undefined ? {} : { id: createOptions.id }),
        ...(createOptions.metadata === undefined ? {} : { metadata: createOptions.metadata }),
      };
    },
    is(event: RecordedEvent): event is RecordedEvent<Type, StandardSchemaV1.InferOutput<Schema>> {
      return event.type === type;
    },
  };
}

function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  const standard = (value as { '~standard'?: { version?: unknown; validate?: unknown } } | null)?.['~standard'];
  return typeof standard === 'object' && standard !== null && standard.version === 1 && typeof standard.validate === 'function';
}

/** Runs a Standard Schema validator (sync or async) and returns its output, or throws a {@link ValidationError}. */
export async function validateWithSchema<S extends StandardSchemaV1>(schema: S, value: unknown, what: string): Promise<StandardSchemaV1.InferOutput<S>> {
  let result = schema['~standard'].validate(value);
  if (result instanceof Promise) result = await result;
  if (result.issues) {
    const issues: ValidationIssue[] = result.issues.map((issue) => ({
      path: (issue.path ?? []).map((segment) => {
        const key = typeof segment === 'object' && segment !== null ? segment.key : segment;
        return typeof key === 'number' ? key : String(key);
      }),
      message: issue.message,
    }));
    throw new ValidationError(`${what} failed its schema`, issues, value);
  }
  return result.value;
}

/** The event types a store knows. With `strict`, appending an unregistered type is an {@link UnknownEventTypeError}. */
export interface EventRegistry {
  readonly strict: boolean;
  get(type: string): EventDefinition | undefined;
  types(): string[];
}

export function eventRegistry(definitions: Iterable<EventDefinition>, options: { strict?: boolean } = {}): EventRegistry {
  const byType = new Map<string, EventDefinition>();
  for (const definition of definitions) {
    if (byType.has(definition.type)) throw new ValidationError(`Event type '${definition.type}' is registered twice`);
    byType.set(definition.type, definition);
  }
  return {
    strict: options.strict ?? true,
    get: (type) => byType.get(type),
    types: () => [...byType.keys()].sort(),
  };
}

/** Validates `data` against the registry's definition of `type`; returns the validated output and the schema version. */
export async function validateEventData(registry: EventRegistry | undefined, type: string, data: unknown): Promise<{ data: unknown; schemaVersion: number | undefined }> {
  const definition = registry?.get(type);
  if (!definition) {
    if (registry?.strict) throw new UnknownEventTypeError(type, registry.types());
    return { data, schemaVersion: undefined };
  }
  return { data: await validateWithSchema(definition.schema, data, `The data of event '${type}'`), schemaVersion: definition.schemaVersion };
}
