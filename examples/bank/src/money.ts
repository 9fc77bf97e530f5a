/**
 * Money in the bank: whole numbers of minor units (cents, say), exact at any size.
 *
 * A JS number is exact only up to 2^53 - 1 (`Number.MAX_SAFE_INTEGER`, 9007199254740991); above it a sum silently
 * drops units. So the bank never adds money as numbers:
 * - **In (commands, HTTP bodies)** an amount is either a JSON number that is a safe integer (`"amount": 100`, what
 *   clients have always sent) or a string of decimal digits (`"amount": "123456789012345678901234567890"`). It is
 *   positive, with no sign, decimal point, exponent, spaces or leading zeros, and at most {@link MAX_AMOUNT_DIGITS}
 *   digits (a hostile body cannot make the bank build a huge BigInt). Anything else fails the command's schema: a
 *   `ValidationError`, HTTP 400. A number that is not a safe integer is refused rather than taken: by the time the JSON
 *   is parsed it has already been rounded (9007199254740993 reads as 9007199254740992), and the message says to send
 *   the amount as a string. The validated amount is always the decimal string.
 * - **Events** store amounts as decimal strings (JSON has no bigint), schema version 2. Version 1 (earlier versions of
 *   the bank) stored numbers; {@link amountToString} is the upcaster from v1 to v2 of every money event, so old logs
 *   load and project as they did.
 * - **Arithmetic** goes through BigInt ({@link plus}, {@link minus}, {@link isMore}); what is kept — aggregate state
 *   (snapshots and the state cache hold it as JSON), read models, HTTP replies, `DomainError` details — holds decimal
 *   strings: `"0"`, `"9007199254740994"`, and `"-30"` for the signed amount of a statement line.
 *
 * The bound is on each amount, not on sums: a balance may grow past 100 digits, and is still exact.
 */
import { z } from 'zod';

/** Most digits an amount may have (10^100 - 1 minor units is far beyond any ledger). */
export const MAX_AMOUNT_DIGITS = 100;

/** An amount of minor units as a decimal string: positive, digits only, no leading zero. */
export type Units = string;

const AMOUNT = new RegExp(`^[1-9][0-9]{0,${MAX_AMOUNT_DIGITS - 1}}$`);

/** The problem with an amount as received, or null when it is one. */
function amountProblem(value: number | string): string | null {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) return `an amount is a whole number of minor units (cents), got ${value}`;
    if (value <= 0) return `an amount must be positive, got ${value}`;
    if (!Number.isSafeInteger(value)) {
      return `${value} is beyond 2^53 - 1 (${Number.MAX_SAFE_INTEGER}), where a JSON number has already lost units when it is read: send the amount as a string of digits, e.g. "9007199254740993"`;
    }
    return null;
  }
  if (value.length > MAX_AMOUNT_DIGITS)
    return `an amount has at most ${MAX_AMOUNT_DIGITS} digits, got a string of ${value.length} characters`;
  if (!/^[0-9]+$/.test(value))
    return `an amount given as a string is decimal digits only (no sign, decimal point, exponent or spaces), got ${JSON.stringify(value)}`;
  if (/^0+$/.test(value)) return `an amount must be positive, got "${value}"`;
  if (value.startsWith('0')) return `an amount has no leading zeros, got "${value}"`;
  return null;
}

/** A command's amount: a safe integer or a string of digits in, the decimal string out (see the module comment). */
export const amount = z
  .union([z.number(), z.string()], {
    error: 'an amount is a whole number of minor units: a JSON safe integer (100) or a string of digits ("100")',
  })
  .transform((value, context): Units => {
    const problem = amountProblem(value);
    if (problem === null) return String(value);
    context.addIssue({ code: 'custom', message: problem, input: value });
    return z.NEVER;
  });

/** An amount as events store it (schema version 2): the decimal string only. */
export const storedAmount = z.string().regex(AMOUNT, {
  error: `an amount is a string of at most ${MAX_AMOUNT_DIGITS} decimal digits, positive, with no leading zero`,
});

/** The schema version of every money event (2: amounts as decimal strings; 1 held numbers). */
export const MONEY_SCHEMA_VERSION = 2;

/**
 * The upcaster from v1 to v2 of a money event: `amount` from a number to its decimal string. Through BigInt, so a
 * number of 10^21 or more becomes digits, not `1e+21` (v1 only accepted safe integers, so none should be there).
 */
export function amountToString<D extends { amount: number | string }>(data: D): Omit<D, 'amount'> & { amount: Units } {
  return { ...data, amount: typeof data.amount === 'number' ? BigInt(data.amount).toString() : data.amount };
}

/** The options of a money event's definition: schema version 2 and its upcaster from v1. */
export const moneyEventVersions = { schemaVersion: MONEY_SCHEMA_VERSION, upcasters: { 1: amountToString } };

/** `a + b`, exactly. Takes decimal strings (or, from older documents and messages, safe-integer numbers). */
export const plus = (a: string | number, b: string | number): string => (BigInt(a) + BigInt(b)).toString();

/** `a - b`, exactly (may be negative). */
export const minus = (a: string | number, b: string | number): string => (BigInt(a) - BigInt(b)).toString();

/** `a > b`, exactly. */
export const isMore = (a: string | number, b: string | number): boolean => BigInt(a) > BigInt(b);
