import { HttpProblem } from './problems.js';

/**
 * Parses a JSON request body, refusing (as a 400 `MALFORMED_REQUEST` that says why) what would otherwise be parsed
 * into something else or fail later with a 500:
 * - objects and arrays nested deeper than `maxDepth` (checked before parsing, in one pass over the text);
 * - numbers out of range (`1e309` would become Infinity) and whole numbers beyond 2^53 - 1 (`9007199254740993` would
 *   silently become ...992): send those as strings;
 * - `__proto__` keys, and `constructor` keys holding a `prototype` (prototype pollution of code that merges objects).
 */
export function parseJsonBody(text: string, maxDepth: number): unknown {
  if (text.length === 0) {
    throw new HttpProblem(
      400,
      'MALFORMED_REQUEST',
      "The body is empty but its content-type is 'application/json': send a JSON value (for a command with no data, 'null' or '{}')",
    );
  }
  checkJsonText(text, maxDepth);
  try {
    return mayHoldPrototypeKeys(text) ? JSON.parse(text, refusePrototypeKeys) : JSON.parse(text);
  } catch (error) {
    if (error instanceof HttpProblem) throw error;
    throw new HttpProblem(
      400,
      'MALFORMED_REQUEST',
      `The body is not valid JSON (${(error as Error).message.slice(0, 200)})`,
    );
  }
}

function checkJsonText(text: string, maxDepth: number): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) {
        throw new HttpProblem(
          400,
          'MALFORMED_REQUEST',
          `The JSON body nests objects and arrays deeper than ${maxDepth} levels; this API accepts at most ${maxDepth}`,
        );
      }
    } else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let end = i + 1;
      while (end < text.length && isNumberChar(text.charCodeAt(end))) end++;
      checkNumber(text.slice(i, end));
      i = end - 1;
    }
  }
}

function isNumberChar(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2b || c === 0x2d;
}

function checkNumber(token: string): void {
  const value = Number(token);
  if (Number.isNaN(value)) return; // not a number literal: JSON.parse says so
  const shown = token.length > 40 ? `${token.slice(0, 40)}…` : token;
  if (!Number.isFinite(value))
    throw new HttpProblem(
      400,
      'MALFORMED_REQUEST',
      `The number ${shown} in the body is out of range (JSON numbers here are 64-bit floats, at most about 1.8e308)`,
    );
  if (/^-?\d+$/.test(token) && !Number.isSafeInteger(value)) {
    throw new HttpProblem(
      400,
      'MALFORMED_REQUEST',
      `The whole number ${shown} in the body is beyond 2^53 - 1 and cannot be kept exactly; send it as a string`,
    );
  }
}

function mayHoldPrototypeKeys(text: string): boolean {
  return text.includes('__proto__') || text.includes('constructor') || text.includes('\\u');
}

function refusePrototypeKeys(key: string, value: unknown): unknown {
  if (key === '__proto__')
    throw new HttpProblem(
      400,
      'MALFORMED_REQUEST',
      "The body has a '__proto__' key, which this API refuses (it could change the prototype of objects built from it)",
    );
  if (key === 'constructor' && value !== null && typeof value === 'object' && Object.hasOwn(value, 'prototype')) {
    throw new HttpProblem(
      400,
      'MALFORMED_REQUEST',
      "The body has a 'constructor' key holding a 'prototype', which this API refuses",
    );
  }
  return value;
}
