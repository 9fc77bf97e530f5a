import { createHash } from 'node:crypto';
import { TransportConfigurationError } from '@eventline/core';

/**
 * Names and subjects on NATS. A JetStream stream or consumer name may not contain `.`, `*`, `>`, whitespace or path
 * separators; a subject token may not be empty or contain whitespace, `*` or `>`.
 */

const UNSAFE_CHAR = /[^A-Za-z0-9_-]/;
const UNSAFE_CHARS = /[^A-Za-z0-9_-]/g;
const MAX_NAME = 64;

/**
 * A stream or consumer name for `raw`: `raw` itself when it is already safe, otherwise the unsafe characters replaced
 * by `_` and a short hash of `raw` appended, so two different inputs never share a name (`a.b` and `a_b` differ).
 */
export function safeName(raw: string): string {
  if (raw.length > 0 && raw.length <= MAX_NAME && !UNSAFE_CHAR.test(raw)) return raw;
  const hash = createHash('sha256').update(raw).digest('hex').slice(0, 10);
  return `${raw.replace(UNSAFE_CHARS, '_').slice(0, MAX_NAME - hash.length - 1)}_${hash}`;
}

function validToken(token: string): boolean {
  return token.length > 0 && !/[\s*>]/.test(token);
}

/** Throws unless `prefix` is one or more valid subject tokens (`eventline`, `acme.events`). */
export function assertPrefix(prefix: string): void {
  if (!prefix.split('.').every(validToken)) {
    throw new TransportConfigurationError(
      'nats',
      'configure',
      `invalid subject prefix ${JSON.stringify(prefix)}: use dot-separated tokens without whitespace, '*' or '>'`,
    );
  }
}

/** Why a message subject (`<category>.<type>`) cannot be used on NATS, or undefined when it can. */
export function subjectProblem(subject: string): string | undefined {
  const tokens = subject.split('.');
  if (tokens.length < 2) return `subject ${JSON.stringify(subject)} is not <category>.<type>`;
  if (!tokens.every(validToken)) return `subject ${JSON.stringify(subject)} has an empty token, whitespace, '*' or '>'`;
  return undefined;
}

/**
 * The NATS filter subjects for a consumer's `subjects` (an invalid entry is a configuration error of `operation`) (see `subjectMatches` in eventline): an exact `<category>.<type>`,
 * or `<category>.*` for a whole category, which becomes `<prefix>.<category>.>` so that it matches exactly what
 * `subjectMatches` matches (a type containing dots included). Entries covered by another entry are dropped, because
 * JetStream rejects overlapping filters. No entries (or none given): the whole prefix, `<prefix>.>`.
 */
export function filterSubjects(prefix: string, subjects: readonly string[] | undefined, operation: string): string[] {
  if (!subjects || subjects.length === 0) return [`${prefix}.>`];
  const categories = new Set<string>();
  const exact = new Set<string>();
  for (const entry of subjects) {
    if (entry.endsWith('.*') && validToken(entry.slice(0, -2)) && !entry.slice(0, -2).includes('.')) {
      categories.add(entry.slice(0, -2));
      continue;
    }
    const problem = subjectProblem(entry);
    if (problem)
      throw new TransportConfigurationError(
        'nats',
        operation,
        `invalid subject filter: ${problem} (use <category>.<type> or <category>.*)`,
      );
    exact.add(entry);
  }
  const filters = [...categories].map((category) => `${prefix}.${category}.>`);
  for (const entry of exact) {
    if (!categories.has(entry.slice(0, entry.indexOf('.')))) filters.push(`${prefix}.${entry}`);
  }
  return filters;
}

/** Whether `version` (`2.9.10`) is at least `major.minor`. */
export function versionAtLeast(version: string | undefined, major: number, minor: number): boolean {
  const match = /^v?(\d+)\.(\d+)/.exec(version ?? '');
  if (!match) return false;
  const [maj, min] = [Number(match[1]), Number(match[2])];
  return maj > major || (maj === major && min >= minor);
}
