/**
 * The bench harness: figures, interleaved rounds, medians, ratios, the table and the one JSON line (shared/BENCH.md).
 * An area of the bench (store, write, projection, bus) is a {@link BenchModule}: it lists the figure names it can
 * produce and records the ones the run asks for.
 */

export interface Result {
  readonly name: string;
  readonly unit: string;
  readonly value: number;
  readonly baseline: number | null;
  /** Higher is better: value/baseline for rates, baseline/value for times and sizes. */
  readonly ratio: number | null;
}

export interface BenchContext {
  /** Whether the run asks for this figure (its name starts with the prefix given on the command line). */
  wants(name: string): boolean;
  /** Records a measured figure; the ratio is derived from the unit. `rounds`, when given, is shown in the progress. */
  record(name: string, unit: string, value: number, baseline: number | null, rounds?: Interleaved): void;
  /** Progress on stderr, so stdout stays the table and the JSON line. */
  log(message: string): void;
}

export interface BenchModule {
  /** The area, for progress messages. */
  readonly area: string;
  /** Every figure name this module can produce. */
  readonly figures: readonly string[];
  run(ctx: BenchContext): Promise<void>;
}

/** Units measured as a rate (per second) are better higher; everything else (ms, MiB) is better lower. */
export function isRate(unit: string): boolean {
  return unit.endsWith('/s');
}

export function makeResult(name: string, unit: string, value: number, baseline: number | null): Result {
  const ratio =
    baseline === null || value <= 0 || baseline <= 0 ? null : isRate(unit) ? value / baseline : baseline / value;
  return {
    name,
    unit,
    value: roundFigure(value),
    baseline: baseline === null ? null : roundFigure(baseline),
    ratio: ratio === null ? null : round(ratio, 2),
  };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of nothing');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export interface Interleaved {
  readonly value: number;
  readonly baseline: number;
  readonly values: readonly number[];
  readonly baselines: readonly number[];
}

/**
 * Runs the measured side and its baseline in alternating order (value first on even rounds, baseline first on odd ones)
 * so drift on a noisy machine hits both alike, after one unrecorded warm-up of each (round -1, unless `warmup` is
 * false); returns the medians.
 */
export async function interleave(
  rounds: number,
  value: (round: number) => Promise<number>,
  baseline: (round: number) => Promise<number>,
  { warmup = true }: { warmup?: boolean } = {},
): Promise<Interleaved> {
  if (warmup) {
    await value(-1);
    await baseline(-1);
  }
  const values: number[] = [];
  const baselines: number[] = [];
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0) {
      values.push(await value(round));
      baselines.push(await baseline(round));
    } else {
      baselines.push(await baseline(round));
      values.push(await value(round));
    }
  }
  return { value: median(values), baseline: median(baselines), values, baselines };
}

/** Runs `work` and returns `count` per second of wall time. */
export async function rate(count: number, work: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await work();
  return count / ((performance.now() - start) / 1000);
}

/** Runs `task(0..total-1)` on `workers` concurrent loops, each taking the next index when it is done (and told which loop it is). */
export async function concurrently(
  workers: number,
  total: number,
  task: (index: number, worker: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const loop = async (worker: number): Promise<void> => {
    while (next < total) await task(next++, worker);
  };
  await Promise.all(Array.from({ length: workers }, (_, worker) => loop(worker)));
}

/** A name for a schema (or anything else) that no other run uses: lower case, safe to splice into SQL. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${process.pid.toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
}

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export function formatTable(results: readonly Result[]): string {
  const header = ['figure', 'unit', 'value', 'baseline', 'ratio'];
  const rows = results.map((r) => [
    r.name,
    r.unit,
    formatNumber(r.value),
    r.baseline === null ? '-' : formatNumber(r.baseline),
    r.ratio === null ? '-' : r.ratio.toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function jsonLine(version: string, results: readonly Result[]): string {
  return JSON.stringify({ bench: 'eventline', version, node: process.version, results });
}

function formatNumber(n: number): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: n < 100 ? 1 : 0 });
}

/** Whole numbers from 100 up, one decimal below: enough for noisy figures, and stable to read as a series. */
function roundFigure(n: number): number {
  return n >= 100 ? Math.round(n) : round(n, 1);
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
