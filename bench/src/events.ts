/**
 * Realistic event payloads, the same shape whether built in JavaScript (for appends) or in SQL (for seeding reads):
 * about 200 bytes of JSON data and metadata with a correlation and a causation id.
 */
import { newId, type EventInput } from '@eventline/core';

export interface BenchEvent extends EventInput {
  readonly id: string;
  readonly metadata: { correlationId: string; causationId: string };
}

/** An order event; `n` varies the data so rows are not all identical. */
export function orderEvent(n: number): BenchEvent {
  const sku = 10000 + (n % 9000);
  return {
    id: newId(),
    type: n % 5 === 0 ? 'OrderPlaced' : 'OrderLineAdded',
    data: {
      orderId: `ord-${String(n).padStart(7, '0')}`,
      customerId: `cus-${String(n % 9973).padStart(5, '0')}`,
      lines: [
        { sku: `SKU-${sku}`, quantity: 1 + (n % 3), unitPriceCents: 1999 },
        { sku: `SKU-${sku + 7}`, quantity: 1, unitPriceCents: 4500 },
      ],
      totalCents: 1999 * (1 + (n % 3)) + 4500,
      currency: 'EUR',
      channel: 'web',
    },
    metadata: { correlationId: newId(), causationId: newId() },
  };
}

export function orderEvents(count: number, from = 0): BenchEvent[] {
  return Array.from({ length: count }, (_, i) => orderEvent(from + i));
}

/** The stream read by the `readStream.10k` figures: every 10th event of the seeded log. */
export const HOT_STREAM = 'order-hot';
export const SEEDED_EVENTS = 100_000;
export const HOT_STREAM_EVENTS = SEEDED_EVENTS / 10;

/**
 * A SELECT of `count` rows `(event_id, stream_id, version, type, data, metadata)` in log order (a multiple of 1,000), the
 * same shape as {@link orderEvent}: every 10th event goes to {@link HOT_STREAM} (10,000 events of the 100,000 the read
 * figures seed), the others to 900 streams (`order-<k>`, 100 events each of the 100,000), interleaved as many writers
 * would leave them. Runs on PostgreSQL and PGlite alike.
 */
export function seedRowsSelect(count: number): string {
  return `
    SELECT gen_random_uuid() AS event_id,
           CASE WHEN i % 10 = 0 THEN '${HOT_STREAM}' ELSE 'order-' || (i % 1000) END AS stream_id,
           CASE WHEN i % 10 = 0 THEN i / 10 + 1 ELSE i / 1000 + 1 END AS version,
           CASE WHEN i % 5 = 0 THEN 'OrderPlaced' ELSE 'OrderLineAdded' END AS type,
           jsonb_build_object(
             'orderId', 'ord-' || lpad(i::text, 7, '0'),
             'customerId', 'cus-' || lpad((i % 9973)::text, 5, '0'),
             'lines', jsonb_build_array(
               jsonb_build_object('sku', 'SKU-' || (10000 + i % 9000), 'quantity', 1 + i % 3, 'unitPriceCents', 1999),
               jsonb_build_object('sku', 'SKU-' || (10007 + i % 9000), 'quantity', 1, 'unitPriceCents', 4500)),
             'totalCents', 1999 * (1 + i % 3) + 4500,
             'currency', 'EUR',
             'channel', 'web') AS data,
           jsonb_build_object('correlationId', gen_random_uuid(), 'causationId', gen_random_uuid()) AS metadata
      FROM generate_series(0, ${count - 1}) AS i`;
}
