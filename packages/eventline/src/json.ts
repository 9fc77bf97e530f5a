import type { ValidationIssue } from './errors.js';

/** A JSON value as the store keeps it: what goes in comes back out equal. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/**
 * Finds why a value would not survive a JSON round trip through the store unchanged, or returns no issues.
 * Accepted: null, booleans, finite numbers, well-formed strings without NUL characters (PostgreSQL's jsonb cannot hold
 * U+0000 or a lone surrogate), arrays
 * and plain objects of those. Object properties whose value is `undefined` are allowed and dropped, as JSON.stringify does.
 * Rejected: undefined elsewhere, NaN/Infinity, bigint, functions, symbols, class instances (Date, Map, Buffer...) and cycles:
 * each would come back as something else, or not at all.
 */
export function jsonIssues(value: unknown, path: Array<string | number> = []): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  walk(value, path, new Set(), issues);
  return issues;
}

/** A UTF-16 surrogate without its pair: JSON.stringify writes it as `\ud800`, which PostgreSQL's jsonb refuses. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const LONE_SURROGATE_MESSAGE = 'strings must be well-formed Unicode (this one has a lone surrogate, which PostgreSQL cannot store)';

function walk(value: unknown, path: Array<string | number>, seen: Set<object>, issues: ValidationIssue[]): void {
  if (issues.length >= 10) return;
  switch (typeof value) {
    case 'string':
      if (value.includes('\u0000')) issues.push({ path: [...path], message: 'strings cannot contain the NUL character (U+0000)' });
      else if (LONE_SURROGATE.test(value)) issues.push({ path: [...path], message: LONE_SURROGATE_MESSAGE });
      return;
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
  seen.add(object);
  if (Array.isArray(object)) {
    object.forEach((item, index) => walk(item, [...path, index], seen, issues));
  } else {
    const proto = Object.getPrototypeOf(object) as unknown;
    if (proto !== Object.prototype && proto !== null) {
      const name = (object as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      issues.push({ path: [...path], message: `a ${name} is not plain JSON; convert it (e.g. a Date to an ISO string) first` });
    } else {
      for (const [key, item] of Object.entries(object)) {
        if (item === undefined) continue;
        if (key.includes('\u0000')) issues.push({ path: [...path, key], message: 'keys cannot contain the NUL character (U+0000)' });
        else if (LONE_SURROGATE.test(key)) issues.push({ path: [...path, key], message: LONE_SURROGATE_MESSAGE });
        walk(item, [...path, key], seen, issues);
      }
    }
  }
  seen.delete(object);
}
