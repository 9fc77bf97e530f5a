/**
 * `npm run bench [-- <prefix>]`: runs the figures whose names start with the prefix (all by default), prints a table,
 * then exactly one line of JSON (shared/BENCH.md). Progress goes to stderr.
 */
import { readFileSync } from 'node:fs';
import { formatTable, jsonLine, makeResult, type BenchContext, type BenchModule, type Result } from './harness.js';
import { pgliteStoreBench, postgresStoreBench } from './store.js';
import { writeBench } from './write.js';
import { busBench } from './bus.js';
import { projectionBench } from './projection.js';
import { processBench } from './process.js';

/** Every area of the bench; a new area is a new module added here. */
const modules: readonly BenchModule[] = [
  postgresStoreBench,
  pgliteStoreBench,
  writeBench,
  projectionBench,
  processBench,
  busBench,
];

const prefix = process.argv[2] ?? '';
const wants = (name: string): boolean => name.startsWith(prefix);
const selected = modules.filter((m) => m.figures.some(wants));
if (selected.length === 0) {
  console.error(`no figure starts with '${prefix}'. Figures:\n  ${modules.flatMap((m) => m.figures).join('\n  ')}`);
  process.exit(2);
}

const started = performance.now();
const results: Result[] = [];
const ctx: BenchContext = {
  wants,
  record(name, unit, value, baseline, rounds) {
    const result = makeResult(name, unit, value, baseline);
    results.push(result);
    const detail = rounds
      ? `; rounds ${rounds.values.map(Math.round).join(' ')} vs ${rounds.baselines.map(Math.round).join(' ')}`
      : '';
    ctx.log(
      `  ${name}: ${result.value} ${unit} (baseline ${result.baseline ?? '-'}, ratio ${result.ratio ?? '-'}${detail})`,
    );
  },
  log(message) {
    process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)}s] ${message}\n`);
  },
};

for (const module of selected) {
  ctx.log(`${module.area}`);
  await module.run(ctx);
}

const { version } = JSON.parse(readFileSync(new URL('../../packages/core/package.json', import.meta.url), 'utf8')) as {
  version: string;
};
console.log(formatTable(results));
console.log(jsonLine(version, results));
