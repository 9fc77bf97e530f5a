/**
 * Uniqueness claims: a value (a tax id, an e-mail address) unique across streams, declared as rules and kept by the
 * store in the same transaction as the append that claims it. The rules are pure functions of the log, so the claims
 * can always be recomputed from it (`rebuildClaims()`): an event of a `claimedBy` type claims its value for its
 * stream, an event of a `releasedBy` type (or one whose metadata lists the scope in `releasesClaims`) releases the
 * stream's claims in that scope, and a hard-deleted stream's claims go with its events. Values are never stored in
 * clear: each is an HMAC-SHA-256 (or SHA-256 without a key) of the scope and the normalised value.
 */
import { createHash, createHmac } from 'node:crypto';
import { safeQuote, UniquenessConfigurationError, ValidationError } from '../errors.js';
import type { EventMetadata, RecordedEvent } from '../event.js';
import type { EventRegistry } from '../schema.js';
import { isValidEventType } from '../stream-id.js';

/** What a `claimedBy` function gets besides the data: the event's type, stream and metadata. */
export interface ClaimSource {
  readonly type: string;
  readonly streamId: string;
  readonly metadata: EventMetadata;
}

/**
 * The value an event claims: a string, or `null`/`undefined` for none (an event written before the field existed).
 * The data is the event's data as the store validated it (on append) or upcast it (on rebuild).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ClaimedValue = (data: any, event: ClaimSource) => string | null | undefined;

/** One rule: a scope (a name for what is unique), which event types claim a value in it, and which release it. */
export interface UniquenessRule<Scope extends string = string> {
  readonly scope: Scope;
  /** Event type → the value the event claims. */
  readonly claimedBy: Readonly<Record<string, ClaimedValue>>;
  /** Event types that release every value the stream holds in this scope (applied before a claim by the same event). */
  readonly releasedBy: readonly string[];
  /** The value's canonical form before hashing (e.g. digits only). Default: Unicode NFC. */
  readonly normalise: (value: string) => string;
}

/** The store option: the rules, and the secret key of the values' HMAC. */
export interface UniquenessOptions {
  readonly rules: readonly UniquenessRule[];
  /**
   * The HMAC-SHA-256 key (at least 16 bytes). Without one, values are hashed with plain SHA-256, and a value from a
   * small set (a CPF has 10^9 possibilities) can be found from its hash by trying them all: set a key, keep it out of
   * the database, and never change it (a new key makes every stored hash unknown: `rebuildClaims()` after a change).
   */
  readonly key?: string | Uint8Array;
}

/** The metadata field that lists the scopes an event releases for its stream (what the append option `releases` sets). */
export const RELEASES_CLAIMS = 'releasesClaims';

/** Longest value accepted, in UTF-16 code units, before and after normalising. */
export const MAX_CLAIM_VALUE_LENGTH = 1024;

const SCOPE = /^[A-Za-z][A-Za-z0-9_.:-]{0,99}$/;
const MIN_KEY_BYTES = 16;

/** A scope name: a letter, then up to 99 letters, digits, `_`, `.`, `:` or `-`. */
export function isValidScope(value: unknown): value is string {
  return typeof value === 'string' && SCOPE.test(value);
}

/**
 * Declares a uniqueness rule, checked now (a {@link UniquenessConfigurationError} for a bad scope name, no claiming
 * type, a type that is not an event type name, a value function that is not a function).
 * ```ts
 * const cpf = defineUniqueness({
 *   scope: 'cpf',
 *   claimedBy: { AccountOpened: (data: { holderTaxId: string }) => data.holderTaxId },
 *   releasedBy: ['AccountClosed'],
 *   normalise: (value) => value.replace(/\D/g, ''),
 * });
 * ```
 */
export function defineUniqueness<Scope extends string>(rule: {
  scope: Scope;
  claimedBy: Readonly<Record<string, ClaimedValue>>;
  releasedBy?: readonly string[];
  normalise?: (value: string) => string;
}): UniquenessRule<Scope> {
  return checkRule(rule) as UniquenessRule<Scope>;
}

function checkRule(input: unknown): UniquenessRule {
  if (typeof input !== 'object' || input === null)
    throw new UniquenessConfigurationError(undefined, `a rule must be an object, got ${safeQuote(input)}`);
  const { scope, claimedBy, releasedBy = [], normalise } = input as Record<string, unknown>;
  if (!isValidScope(scope))
    throw new UniquenessConfigurationError(
      scope,
      "the scope must be a letter followed by up to 99 letters, digits, '_', '.', ':' or '-' (e.g. 'cpf')",
    );
  if (typeof claimedBy !== 'object' || claimedBy === null || Array.isArray(claimedBy))
    throw new UniquenessConfigurationError(scope, 'claimedBy must be an object of event type → value function');
  const claims: Record<string, ClaimedValue> = Object.create(null);
  for (const type of Object.keys(claimedBy)) {
    if (!isValidEventType(type))
      throw new UniquenessConfigurationError(scope, `claimedBy names ${safeQuote(type)}, which is not an event type`);
    const value = (claimedBy as Record<string, unknown>)[type];
    if (typeof value !== 'function')
      throw new UniquenessConfigurationError(scope, `claimedBy.${type} must be a function of the event's data`);
    claims[type] = value as ClaimedValue;
  }
  if (Object.keys(claims).length === 0)
    throw new UniquenessConfigurationError(scope, 'claimedBy names no event type: a rule needs one that claims');
  if (!Array.isArray(releasedBy))
    throw new UniquenessConfigurationError(scope, 'releasedBy must be an array of event types');
  for (const type of releasedBy)
    if (!isValidEventType(type))
      throw new UniquenessConfigurationError(scope, `releasedBy names ${safeQuote(type)}, which is not an event type`);
  if (normalise !== undefined && typeof normalise !== 'function')
    throw new UniquenessConfigurationError(scope, 'normalise must be a function of a string');
  return Object.freeze({
    scope,
    claimedBy: Object.freeze(claims),
    releasedBy: Object.freeze([...new Set(releasedBy as string[])]),
    normalise: (normalise as ((value: string) => string) | undefined) ?? ((value: string) => value.normalize('NFC')),
  });
}

/** A change to the claims, in the order of the events: release the stream's claims in a scope, or claim a hash. */
export type ClaimOperation =
  | { readonly op: 'release'; readonly scope: string }
  | { readonly op: 'claim'; readonly scope: string; readonly hash: string };

/** What `rebuildClaims()` did. */
export interface RebuildClaimsResult {
  /** Claims held after the rebuild. */
  readonly claims: number;
  /**
   * Claims the log makes of a value another stream already held at that point (possible only for a rule added after
   * the fact): the first claimant in log order keeps it; these were not claimed. Resolve them, then rebuild again.
   */
  readonly conflicts: ReadonlyArray<{ scope: string; owner: string; streamId: string; eventId: string }>;
}

/** An event as the rules see it; `data` is parsed only when a rule needs it. */
export interface ClaimEvent {
  readonly type: string;
  readonly data: () => unknown;
  readonly metadata: () => EventMetadata;
  /** Cheap test: may the metadata hold {@link RELEASES_CLAIMS}? (false lets the metadata go unparsed) */
  readonly mayRelease: boolean;
}

/**
 * The compiled rules of a store (backends get one from {@link compileUniqueness}): which events touch claims, the
 * operations a batch makes, the hash of a value.
 */
export class Uniqueness {
  private readonly claimers = new Map<string, Array<{ scope: string; value: ClaimedValue }>>();
  private readonly releasers = new Map<string, string[]>();
  private readonly normalisers = new Map<string, (value: string) => string>();
  private readonly key: Buffer | null;

  constructor(rules: readonly UniquenessRule[], key: Buffer | null) {
    this.key = key;
    for (const rule of rules) {
      this.normalisers.set(rule.scope, rule.normalise);
      for (const [type, value] of Object.entries(rule.claimedBy)) {
        const list = this.claimers.get(type) ?? [];
        list.push({ scope: rule.scope, value });
        this.claimers.set(type, list);
      }
      for (const type of rule.releasedBy) this.releasers.set(type, [...(this.releasers.get(type) ?? []), rule.scope]);
    }
  }

  /** The declared scopes. */
  get scopes(): string[] {
    return [...this.normalisers.keys()];
  }

  /** Every event type that claims or releases (for a rebuild's read of the log). */
  get types(): string[] {
    return [...new Set([...this.claimers.keys(), ...this.releasers.keys()])];
  }

  /** Whether an event of this type claims or releases: the cheap test each appended event goes through. */
  touches(type: string): boolean {
    return this.claimers.has(type) || this.releasers.has(type);
  }

  /** Checks the scope names of an append's `releases` option, or of {@link RELEASES_CLAIMS} in an event's metadata. */
  assertReleases(value: unknown, where: string): string[] {
    if (!Array.isArray(value) || value.length > 100)
      throw new ValidationError(`${where}: releases must be an array of at most 100 scope names`);
    for (const scope of value) this.assertScope(scope, where);
    return [...new Set(value as string[])];
  }

  /** The scope, if it is one of the rules'; otherwise a {@link ValidationError}. */
  assertScope(scope: unknown, where: string): string {
    if (typeof scope !== 'string' || !this.normalisers.has(scope))
      throw new ValidationError(
        `${where}: ${safeQuote(scope)} is not a uniqueness scope of this store (scopes: ${this.scopes.join(', ') || 'none'})`,
      );
    return scope;
  }

  /**
   * The claim operations of a batch, in order: for each event, the scopes its metadata releases, then those its type
   * releases, then the values it claims. `strictMetadata` (appends) refuses an unknown scope in the metadata; a
   * rebuild ignores it (a rule removed since).
   */
  operationsOf(streamId: string, events: readonly ClaimEvent[], strictMetadata: boolean): ClaimOperation[] {
    const operations: ClaimOperation[] = [];
    for (const event of events) {
      if (event.mayRelease) {
        const metadata = event.metadata();
        if (Object.hasOwn(metadata, RELEASES_CLAIMS)) {
          const where = `Append to '${streamId}' (${event.type}): metadata.${RELEASES_CLAIMS}`;
          const listed = metadata[RELEASES_CLAIMS];
          const scopes = strictMetadata
            ? this.assertReleases(listed, where)
            : Array.isArray(listed)
              ? listed.filter((scope): scope is string => typeof scope === 'string' && this.normalisers.has(scope))
              : [];
          for (const scope of scopes) operations.push({ op: 'release', scope });
        }
      }
      for (const scope of this.releasers.get(event.type) ?? []) operations.push({ op: 'release', scope });
      const claimers = this.claimers.get(event.type);
      if (!claimers) continue;
      const data = event.data();
      for (const { scope, value } of claimers) {
        let claimed: unknown;
        try {
          claimed = value(data, { type: event.type, streamId, metadata: event.metadata() });
        } catch (error) {
          throw new ValidationError(
            `Append to '${streamId}' (${event.type}): the '${scope}' rule's claimedBy function threw: ${(error as Error)?.message ?? String(error)}`,
          );
        }
        if (claimed === null || claimed === undefined) continue;
        operations.push({
          op: 'claim',
          scope,
          hash: this.hashOf(scope, claimed, `Append to '${streamId}' (${event.type})`),
        });
      }
    }
    return operations;
  }

  /**
   * The claim operations of a prepared append ({@link operationsOf} on its JSON), or null when it makes none: the
   * test that keeps appends of other events on their fast path (one look-up per event, no parsing).
   */
  operationsOfAppend(
    streamId: string,
    events: ReadonlyArray<{ readonly type: string; readonly dataJson: string; readonly metadataJson: string }>,
  ): ClaimOperation[] | null {
    let touched = false;
    for (const event of events)
      if (this.touches(event.type) || event.metadataJson.includes(`"${RELEASES_CLAIMS}"`)) touched = true;
    if (!touched) return null;
    const operations = this.operationsOf(
      streamId,
      events.map((event) => claimEventOfJson(event.type, event.dataJson, event.metadataJson)),
      true,
    );
    return operations.length === 0 ? null : operations;
  }

  /**
   * The stored hash (hex) of a value in a scope: checked (a string, not empty, at most {@link MAX_CLAIM_VALUE_LENGTH},
   * well-formed Unicode without NUL, before and after normalising), normalised, then HMAC-SHA-256 with the key (or
   * SHA-256) of `scope NUL value` as UTF-8.
   */
  hashOf(scope: string, value: unknown, where: string): string {
    const normalise = this.normalisers.get(this.assertScope(scope, where))!;
    checkValue(value, `${where}: the value claimed in '${scope}'`);
    let normalised: unknown;
    try {
      normalised = normalise(value as string);
    } catch (error) {
      if (error instanceof ValidationError) throw error;
      throw new ValidationError(
        `${where}: the '${scope}' rule's normalise refused the value: ${(error as Error)?.message ?? String(error)}`,
      );
    }
    checkValue(normalised, `${where}: the value claimed in '${scope}', normalised`);
    const text = `${scope}\u0000${normalised as string}`;
    return (this.key ? createHmac('sha256', this.key) : createHash('sha256')).update(text, 'utf8').digest('hex');
  }

  /**
   * An append's events with its `releases` option (checked) recorded in the first event's metadata under
   * {@link RELEASES_CLAIMS}, so that the log itself says what was released and a rebuild releases it again.
   */
  withReleases<E extends { readonly metadata?: EventMetadata }>(
    streamId: string,
    events: readonly E[],
    releases: unknown,
  ): E[] {
    const scopes = this.assertReleases(releases, `Append to '${streamId}'`);
    if (scopes.length === 0 || !Array.isArray(events) || events.length === 0) return [...(events ?? [])];
    const first = events[0]!;
    if (typeof first !== 'object' || first === null) return [...events];
    const metadata = first.metadata ?? {};
    if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) return [...events];
    const listed = Object.hasOwn(metadata, RELEASES_CLAIMS)
      ? this.assertReleases(metadata[RELEASES_CLAIMS], `Append to '${streamId}': metadata.${RELEASES_CLAIMS}`)
      : [];
    return [
      { ...first, metadata: { ...metadata, [RELEASES_CLAIMS]: [...new Set([...listed, ...scopes])] } },
      ...events.slice(1),
    ];
  }
}

/** The append option `releases` given to a store without uniqueness rules. */
export function assertNoReleases(streamId: string, releases: unknown): void {
  if (releases !== undefined)
    throw new ValidationError(
      `Append to '${streamId}': releases ${safeQuote(releases)} names uniqueness scopes, but this store has no uniqueness rules`,
    );
}

/**
 * Recomputes the claims from the log, event by event in log order, as appends made them (see {@link
 * RebuildClaimsResult} for a claim of a value another stream already held).
 */
export class ClaimsRebuild {
  /** `scope NUL hash` → owner. */
  readonly claims = new Map<string, { scope: string; hash: string; owner: string }>();
  private readonly owned = new Map<string, Set<string>>();
  private readonly conflicts: Array<{ scope: string; owner: string; streamId: string; eventId: string }> = [];

  constructor(private readonly uniqueness: Uniqueness) {}

  apply(event: RecordedEvent): void {
    const operations = this.uniqueness.operationsOf(event.streamId, [claimEventOf(event)], false);
    for (const operation of operations) {
      const mine = this.owned.get(event.streamId);
      if (operation.op === 'release') {
        for (const key of [...(mine ?? [])]) {
          if (this.claims.get(key)!.scope !== operation.scope) continue;
          this.claims.delete(key);
          mine!.delete(key);
        }
        continue;
      }
      const key = `${operation.scope}\u0000${operation.hash}`;
      const holder = this.claims.get(key);
      if (holder) {
        if (holder.owner !== event.streamId)
          this.conflicts.push({
            scope: operation.scope,
            owner: holder.owner,
            streamId: event.streamId,
            eventId: event.id,
          });
        continue;
      }
      this.claims.set(key, { scope: operation.scope, hash: operation.hash, owner: event.streamId });
      if (mine) mine.add(key);
      else this.owned.set(event.streamId, new Set([key]));
    }
  }

  result(): RebuildClaimsResult {
    return { claims: this.claims.size, conflicts: [...this.conflicts] };
  }
}

function checkValue(value: unknown, what: string): void {
  if (typeof value !== 'string')
    throw new ValidationError(`${what} must be a string (or null/undefined for none), got ${safeQuote(value)}`);
  if (value.length === 0) throw new ValidationError(`${what} is empty`);
  if (value.length > MAX_CLAIM_VALUE_LENGTH)
    throw new ValidationError(`${what} is ${value.length} characters long, over ${MAX_CLAIM_VALUE_LENGTH}`);
  if (!value.isWellFormed() || value.includes('\u0000'))
    throw new ValidationError(`${what} holds a NUL or a lone UTF-16 surrogate`);
}

/**
 * The store option compiled (null when there are no rules), checked against the store's registry: a rule naming a
 * type the registry does not define, two rules of one scope, or a key shorter than 16 bytes is a
 * {@link UniquenessConfigurationError}.
 */
export function compileUniqueness(options: unknown, registry: EventRegistry | undefined): Uniqueness | null {
  if (options === undefined) return null;
  if (typeof options !== 'object' || options === null || !Array.isArray((options as UniquenessOptions).rules))
    throw new UniquenessConfigurationError(undefined, 'the uniqueness option must be { rules: [...], key? }');
  const { rules: given, key } = options as UniquenessOptions;
  const rules = given.map(checkRule);
  const scopes = new Set<string>();
  for (const rule of rules) {
    if (scopes.has(rule.scope)) throw new UniquenessConfigurationError(rule.scope, 'two rules declare this scope');
    scopes.add(rule.scope);
    if (registry) {
      for (const type of [...Object.keys(rule.claimedBy), ...rule.releasedBy])
        if (!registry.get(type))
          throw new UniquenessConfigurationError(
            rule.scope,
            `'${type}' is not an event type of the store's registry (known: ${registry.types().join(', ') || 'none'})`,
          );
    }
  }
  let secret: Buffer | null = null;
  if (key !== undefined) {
    if (typeof key === 'string') secret = Buffer.from(key, 'utf8');
    else if (key instanceof Uint8Array) secret = Buffer.from(key);
    else throw new UniquenessConfigurationError(undefined, 'key must be a string or bytes');
    if (secret.length < MIN_KEY_BYTES)
      throw new UniquenessConfigurationError(
        undefined,
        `key must be at least ${MIN_KEY_BYTES} bytes, got ${secret.length}`,
      );
  }
  return rules.length === 0 ? null : new Uniqueness(rules, secret);
}

/** A recorded event as the rules see it (rebuilds; already upcast). */
export function claimEventOf(event: RecordedEvent): ClaimEvent {
  return {
    type: event.type,
    data: () => event.data,
    metadata: () => event.metadata,
    mayRelease: Object.hasOwn(event.metadata, RELEASES_CLAIMS),
  };
}

/** A prepared event's JSON as the rules see it (appends): parsed only when a rule needs it. */
export function claimEventOfJson(type: string, dataJson: string, metadataJson: string): ClaimEvent {
  let metadata: EventMetadata | undefined;
  return {
    type,
    data: () => JSON.parse(dataJson),
    metadata: () => (metadata ??= JSON.parse(metadataJson) as EventMetadata),
    mayRelease: metadataJson.includes(`"${RELEASES_CLAIMS}"`),
  };
}
