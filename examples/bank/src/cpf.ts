/**
 * The CPF (Cadastro de Pessoas Físicas), Brazil's tax id of a person: 11 digits, the last two check digits of the
 * first nine, written `123.456.789-09` or bare `12345678909`. Each open account has its holder's CPF, unique across
 * open accounts: the store's uniqueness rule {@link cpfUniqueness} claims it when the account opens and releases it
 * when the account closes.
 */
import { defineUniqueness } from '@eventline/core';
import { z } from 'zod';

const FORMATTED = /^\d{3}\.\d{3}\.\d{3}-\d{2}$/;
const BARE = /^\d{11}$/;

/** The check digit of `digits` (9 or 10 of them): weights from `digits.length + 1` down to 2, sum × 10 mod 11, 10 → 0. */
function checkDigit(digits: string): number {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) sum += Number(digits[i]) * (digits.length + 1 - i);
  return ((sum * 10) % 11) % 10;
}

/**
 * The CPF's 11 digits when `value` is a valid CPF (formatted or bare, both check digits right, not eleven equal
 * digits, which pass the check but are not issued); otherwise null.
 */
export function parseCpf(value: unknown): string | null {
  if (typeof value !== 'string' || !(FORMATTED.test(value) || BARE.test(value))) return null;
  const digits = value.replace(/\D/g, '');
  if (/^(\d)\1{10}$/.test(digits)) return null;
  if (checkDigit(digits.slice(0, 9)) !== Number(digits[9])) return null;
  if (checkDigit(digits.slice(0, 10)) !== Number(digits[10])) return null;
  return digits;
}

/** `123.456.789-09` for `12345678909`. */
export function formatCpf(digits: string): string {
  return `${digits.slice(0, 3)}.${digits.slice(3, 6)}.${digits.slice(6, 9)}-${digits.slice(9)}`;
}

/** A command's CPF: formatted or bare, checked, given on as its 11 digits. */
export const cpf = z.string().transform((value, context) => {
  const digits = parseCpf(value);
  if (digits === null) {
    context.addIssue({
      code: 'custom',
      message:
        "must be a valid CPF: 11 digits, formatted '123.456.789-09' or bare '12345678909', with both check digits right",
    });
    return z.NEVER;
  }
  return digits;
});

/** The scope of the holders' CPFs in the store. */
export const CPF_SCOPE = 'cpf';

/**
 * The uniqueness rule: `AccountOpened` claims the holder's CPF (events written before the bank kept CPFs have none
 * and claim nothing), `AccountClosed` releases it. Values are normalised to their digits.
 */
export const cpfUniqueness = defineUniqueness({
  scope: CPF_SCOPE,
  claimedBy: { AccountOpened: (data: { holderTaxId?: string }) => data.holderTaxId },
  releasedBy: ['AccountClosed'],
  normalise: (value) => value.replace(/[.-]/g, ''),
});

/** The valid CPF whose first nine digits are `nineDigits`, formatted. */
export function completeCpf(nineDigits: string): string {
  if (!/^\d{9}$/.test(nineDigits)) throw new RangeError(`completeCpf takes 9 digits, got '${nineDigits}'`);
  const ten = `${nineDigits}${checkDigit(nineDigits)}`;
  return formatCpf(`${ten}${checkDigit(ten)}`);
}

/**
 * A valid CPF made from any text, the same for the same text (a hash of it; eleven equal digits avoided): for examples
 * and tests, never for people.
 */
export function sampleCpf(seed: string): string {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(seed, 'utf8')) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  const nine = String(hash % 1_000_000_000).padStart(9, '0');
  return completeCpf(/^(\d)\1{8}$/.test(nine) ? '123456789' : nine);
}
