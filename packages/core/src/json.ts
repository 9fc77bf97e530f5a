import type { ValidationIssue } from './errors.js';

/** A JSON value as the store keeps it: what goes in comes back out equal. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/**
 * How deep JSON may nest: an object or array inside 100 others is the deepest accepted (a value of 100 nested arrays
 * holding a number passes; 101 do not). Events, metadata, documents and command data are checked against it, so no
 * input can make the store (or the code reading it back) recurse without bound.
 */
export const MAX_JSON_DEPTH = 100;

/**
 * Finds why a value would not survive a JSON round trip through the store unchanged, or returns no issues.
 * Accepted: null, booleans, finite numbers, well-formed strings without NUL characters (PostgreSQL's jsonb cannot hold
 * U+0000 or a lone surrogate), arrays
 * and plain objects of those. Object properties whose value is `undefined` are allowed and dropped, as JSON.stringify does.
 * Rejected: undefined elsewhere, NaN/Infinity, bigint, functions, symbols, class instances (Date, Map, Buffer...) and cycles:
 * each would come back as something else, or not at all; and nesting deeper than {@link MAX_JSON_DEPTH}.
 */
export function jsonIssues(value: unknown, path: Array<string | number> = []): ValidationIssue[] {
  // This runs on every event appended: first a quick yes, then, only for a no, the walk that says where and why.
  if (storable(value, 0)) return [];
  const issues: ValidationIssue[] = [];
  // One path stack for the whole walk, copied only when an issue is found.
  walk(value, [...path], new Set(), issues, 0);
  return issues;
}

/**
 * Whether a value is JSON the store keeps as it is (the rules of {@link jsonIssues}), with no paths, no messages and no
 * cycle bookkeeping: a cycle (or a nesting deeper than the limit) answers no, and the full walk then tells.
 */
function storable(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string':
      return stringIssue(value, 'strings') === undefined;
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(value);
    case 'object': {
      if (value === null) return true;
      if (depth >= MAX_JSON_DEPTH) return false;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!storable(value[i], depth + 1)) return false;
        return true;
      }
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) return false;
      const record = value as Record<string, unknown>;
      for (const key in record) {
        const item = record[key];
        if (item === undefined) continue;
        if (stringIssue(key, 'keys') !== undefined || !storable(item, depth + 1)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

/**
 * Why a string (a value, a key, or an id stored as text: a document id) cannot be stored, or undefined: it holds NUL,
 * or a lone UTF-16 surrogate (PostgreSQL keeps neither; its driver turns a lone surrogate into U+FFFD).
 */
export function stringIssue(value: string, what: 'strings' | 'keys'): string | undefined {
  if (value.includes('\u0000')) return `${what} cannot contain the NUL character (U+0000)`;
  // A UTF-16 surrogate without its pair: JSON.stringify writes it as `\ud800`, which PostgreSQL's jsonb refuses.
  if (!value.isWellFormed())
    return 'strings must be well-formed Unicode (this one has a lone surrogate, which PostgreSQL cannot store)';
  return undefined;
}

function walk(
  value: unknown,
  path: Array<string | number>,
  seen: Set<object>,
  issues: ValidationIssue[],
  depth: number,
): void {
  if (issues.length >= 10) return;
  switch (typeof value) {
    case 'string': {
      const issue = stringIssue(value, 'strings');
      if (issue !== undefined) issues.push({ path: [...path], message: issue });
      return;
    }
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(value)) issues.push({ path: [...path], message: `${value} is not a JSON number` });
      return;
    case 'undefined':
      issues.push({ path: [...path], message: 'undefined is not JSON; use null' });
      return;
    case 'bigint':
      issues.push({ path: [...path], message: 'bigint is not JSON; store it as a string' });
      return;
    case 'function':
    case 'symbol':
      issues.push({ path: [...path], message: `a ${typeof value} is not JSON` });
      return;
  }
  if (value === null) return;
  const object = value as object;
  if (seen.has(object)) {
    issues.push({ path: [...path], message: 'circular reference' });
    return;
  }
  if (depth >= MAX_JSON_DEPTH) {
    issues.push({
      path: path.length > 8 ? [...path.slice(0, 8), '…'] : [...path],
      message: `nested more than ${MAX_JSON_DEPTH} levels deep (the limit); flatten the structure`,
    });
    return;
  }
  seen.add(object);
  if (Array.isArray(object)) {
    for (let index = 0; index < object.length; index++) {
      path.push(index);
      walk(object[index], path, seen, issues, depth + 1);
      path.pop();
    }
  } else {
    const proto = Object.getPrototypeOf(object) as unknown;
    if (proto !== Object.prototype && proto !== null) {
      const name = (object as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      issues.push({
        path: [...path],
        message: `a ${name} is not plain JSON; convert it (e.g. a Date to an ISO string) first`,
      });
    } else {
      const record = object as Record<string, unknown>;
      // A plain object's own enumerable string keys (its prototype is Object.prototype or null): what JSON.stringify writes.
      for (const key in record) {
        const item = record[key];
        if (item === undefined) continue;
        path.push(key);
        const issue = stringIssue(key, 'keys');
        if (issue !== undefined) issues.push({ path: [...path], message: issue });
        walk(item, path, seen, issues, depth + 1);
        path.pop();
      }
    }
  }
  seen.delete(object);
}
