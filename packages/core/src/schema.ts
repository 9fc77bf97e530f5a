import type { StandardSchemaV1 } from '@standard-schema/spec';
import { UnknownEventTypeError, UpcasterConfigurationError, ValidationError, type ValidationIssue } from './errors.js';
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
  /** `upcasters[n]` turns data of schema version n into version n+1; applied on every read path. */
  readonly upcasters: Readonly<Record<number, Upcaster>>;
  /** Names this type had before (events stored under them are read as this type). */
  readonly renamedFrom: readonly string[];
  /** An event input of this type; the data is checked against the schema when appended. */
  create(
    data: StandardSchemaV1.InferInput<Schema>,
    options?: { id?: string; metadata?: EventMetadata },
  ): EventInput<Type, StandardSchemaV1.InferOutput<Schema>>;
  /** Whether a recorded event is of this type (narrows its data type). */
  is(event: RecordedEvent): event is RecordedEvent<Type, StandardSchemaV1.InferOutput<Schema>>;
}

/** The data type of an event definition. */
export type EventData<D> = D extends EventDefinition<string, infer S> ? StandardSchemaV1.InferOutput<S> : never;
/** The recorded-event type of an event definition (or a union of them). */
export type EventOf<D> =
  D extends EventDefinition<infer T, infer S> ? RecordedEvent<T, StandardSchemaV1.InferOutput<S>> : never;
/** The event-input type of an event definition (or a union of them). */
export type EventInputOf<D> =
  D extends EventDefinition<infer T, infer S> ? EventInput<T, StandardSchemaV1.InferOutput<S>> : never;

/** Turns the data of one schema version into the next. Pure: it gets the stored data and the event, returns new data. */
export type Upcaster = (data: any, event: RecordedEvent) => unknown; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface EventDefinitionOptions {
  /** The current version of the data shape (default 1). */
  schemaVersion?: number;
  /** `{ 1: v1ToV2, 2: v2ToV3 }`: one upcaster per older version, with no gaps, up to schemaVersion - 1. */
  upcasters?: Record<number, Upcaster>;
  /** Earlier names of this event type. */
  renamedFrom?: readonly string[];
}

export function defineEvent<const Type extends string, Schema extends StandardSchemaV1>(
  type: Type,
  schema: Schema,
  options: EventDefinitionOptions = {},
): EventDefinition<Type, Schema> {
  if (!isValidEventType(type)) {
    throw new ValidationError(
      `Invalid event type name '${String(type)}': use a letter followed by letters, digits or '_' (e.g. 'AccountOpened')`,
    );
  }
  if (!isStandardSchema(schema)) {
    throw new ValidationError(
      `The schema of event type '${type}' is not a Standard Schema validator (zod 3.24+, valibot 1, arktype 2...)`,
    );
  }
  const schemaVersion = options.schemaVersion ?? 1;
  if (!Number.isInteger(schemaVersion) || schemaVersion < 1) {
    throw new ValidationError(
      `The schemaVersion of event type '${type}' must be a whole number of 1 or more, got ${String(schemaVersion)}`,
    );
  }
  const upcasters = checkUpcasters(type, schemaVersion, options.upcasters ?? {});
  const renamedFrom = [...(options.renamedFrom ?? [])];
  for (const name of renamedFrom) {
    if (!isValidEventType(name))
      throw new UpcasterConfigurationError(type, `renamedFrom '${String(name)}' is not a valid event type name`);
    if (name === type) throw new UpcasterConfigurationError(type, 'it is renamed from itself (a cycle)');
  }
  if (new Set(renamedFrom).size !== renamedFrom.length)
    throw new UpcasterConfigurationError(type, 'renamedFrom lists a name twice');
  return {
    type,
    schema,
    schemaVersion,
    upcasters,
    renamedFrom,
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

function checkUpcasters(
  type: string,
  schemaVersion: number,
  upcasters: Record<number, Upcaster>,
): Record<number, Upcaster> {
  const versions = Object.keys(upcasters)
    .map(Number)
    .sort((a, b) => a - b);
  for (const version of versions) {
    if (!Number.isInteger(version) || version < 1)
      throw new UpcasterConfigurationError(type, `upcaster key '${version}' is not a schema version (1 or more)`);
    if (version >= schemaVersion)
      throw new UpcasterConfigurationError(
        type,
        `there is an upcaster from v${version}, but the current schema version is v${schemaVersion}`,
      );
    if (typeof upcasters[version] !== 'function')
      throw new UpcasterConfigurationError(type, `the upcaster from v${version} is not a function`);
  }
  if (versions.length > 0) {
    // The chain must reach the current version with no gap: from the oldest upcaster up to schemaVersion - 1.
    for (let version = versions[0]!; version < schemaVersion; version++) {
      if (!(version in upcasters))
        throw new UpcasterConfigurationError(
          type,
          `no upcaster from v${version} to v${version + 1} (a gap in the chain v${versions[0]} → v${schemaVersion})`,
        );
    }
  }
  return { ...upcasters };
}

function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  const standard = (value as { '~standard'?: { version?: unknown; validate?: unknown } } | null)?.['~standard'];
  return (
    typeof standard === 'object' &&
    standard !== null &&
    standard.version === 1 &&
    typeof standard.validate === 'function'
  );
}

/** Runs a Standard Schema validator (sync or async) and returns its output, or throws a {@link ValidationError}. */
export async function validateWithSchema<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
  what: string,
): Promise<StandardSchemaV1.InferOutput<S>> {
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
  /**
   * The event as the current definitions describe it: an old type name is replaced by the current one and the data is
   * passed through the upcasters from its stored schema version to the current one. Events of types the registry does
   * not know come back unchanged. Backends call this on every read path.
   */
  upcast<E extends RecordedEvent>(event: E): E;
  /** True when {@link upcast} leaves an event of this stored type and schema version as it is. */
  isCurrent(type: string, schemaVersion: number): boolean;
  /** The names events of these types may be stored under (each type and its earlier names), for read filters. */
  storedNames(types: readonly string[]): string[];
}

export function eventRegistry(
  definitions: Iterable<EventDefinition>,
  options: { strict?: boolean } = {},
): EventRegistry {
  const byType = new Map<string, EventDefinition>();
  for (const definition of definitions) {
    if (byType.has(definition.type)) throw new ValidationError(`Event type '${definition.type}' is registered twice`);
    byType.set(definition.type, definition);
  }
  const renames = new Map<string, string>();
  for (const definition of byType.values()) {
    for (const old of definition.renamedFrom) {
      if (byType.has(old)) {
        throw new UpcasterConfigurationError(
          definition.type,
          `it is renamed from '${old}', which is itself a registered type (a rename cycle or a duplicate)`,
        );
      }
      const claimed = renames.get(old);
      if (claimed)
        throw new UpcasterConfigurationError(
          definition.type,
          `'${old}' is already renamed to '${claimed}' (a duplicate rename)`,
        );
      renames.set(old, definition.type);
    }
  }
  const needsUpcasting = renames.size > 0 || [...byType.values()].some((definition) => definition.schemaVersion > 1);
  return {
    strict: options.strict ?? true,
    get: (type) => byType.get(type),
    types: () => [...byType.keys()].sort(),
    isCurrent(type, schemaVersion) {
      if (!needsUpcasting) return true;
      if (renames.has(type)) return false;
      const definition = byType.get(type);
      return !definition || schemaVersion === definition.schemaVersion;
    },
    storedNames: (types) => [...new Set(types.flatMap((type) => [type, ...(byType.get(type)?.renamedFrom ?? [])]))],
    upcast<E extends RecordedEvent>(event: E): E {
      if (!needsUpcasting) return event;
      const type = renames.get(event.type) ?? event.type;
      const definition = byType.get(type);
      if (!definition) return event;
      let version = event.metadata.schemaVersion ?? 1;
      if (type === event.type && version === definition.schemaVersion) return event;
      let data = event.data;
      while (version < definition.schemaVersion) {
        const upcaster = definition.upcasters[version];
        if (!upcaster) {
          throw new UpcasterConfigurationError(
            type,
            `event ${event.id} of stream '${event.streamId}' has schema version ${version}, and there is no upcaster from v${version}`,
          );
        }
        data = upcaster(data, event) as E['data'];
        version++;
      }
      return { ...event, type, data, metadata: { ...event.metadata, schemaVersion: version } };
    },
  };
}

/** Event types eventline itself appends (idempotency records), accepted by strict registries too. */
const SYSTEM_EVENT_TYPES = new Set(['CommandHandled']);

/** Validates `data` against the registry's definition of `type`; returns the validated output and the schema version. */
export async function validateEventData(
  registry: EventRegistry | undefined,
  type: string,
  data: unknown,
): Promise<{ data: unknown; schemaVersion: number | undefined }> {
  const definition = registry?.get(type);
  if (!definition) {
    if (registry?.strict && !SYSTEM_EVENT_TYPES.has(type)) throw new UnknownEventTypeError(type, registry.types());
    return { data, schemaVersion: undefined };
  }
  return {
    data: await validateWithSchema(definition.schema, data, `The data of event '${type}'`),
    schemaVersion: definition.schemaVersion,
  };
}
