import { v7 as uuidv7, validate as uuidValidate } from 'uuid';

/** A new UUIDv7: time-ordered, so ids created later sort later and index well. Used for event and command ids. */
export function newId(): string {
  return uuidv7();
}

/** Whether a value is a UUID in its canonical 36-character form (any version). */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && uuidValidate(value);
}
