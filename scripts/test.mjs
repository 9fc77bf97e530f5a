#!/usr/bin/env node
// Runs the *.test.ts files under packages/, examples/, bench/ and test/ with Node's own test runner.
// Node 20's `--test` does not expand globs, so the files are found here and passed explicitly.
//
// Every test file names its tier in a line `// tier: <name>` above its imports:
//   unit         no services and no child processes: the core, the examples' domains, the HTTP API on the memory
//                store; runs in seconds (`npm run test:unit`)
//   integration  against the real PostgreSQL, PGlite, NATS, RabbitMQ and Redis (`npm run test:integration`)
//   faults       processes SIGKILLed mid-work, brokers restarted, the packed tarballs installed (`npm run test:faults`)
// Usage: npm test [-- [--tier=<name>[,<name>]] <path fragment> ...]   (no tier: all of them; fragments filter paths)
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const TIERS = ['unit', 'integration', 'faults'];
const root = new URL('..', import.meta.url).pathname;
const roots = ['packages', 'examples', 'bench', 'test'];
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (name.endsWith('.test.ts')) files.push(relative(root, path));
  }
}
for (const dir of roots) {
  try {
    walk(join(root, dir));
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
}
function tierOf(file) {
  const match = /^\/\/ tier: (\S+)\s*$/m.exec(readFileSync(join(root, file), 'utf8'));
  if (match === null || !TIERS.includes(match[1])) {
    console.error(`${file} does not name its tier: add a line "// tier: ${TIERS.join(' | ')}" at its top`);
    process.exit(1);
  }
  return match[1];
}
const tiers = new Map(files.map((file) => [file, tierOf(file)]));
const args = process.argv.slice(2);
const tierArgs = args.filter((arg) => arg.startsWith('--tier='));
const wanted = tierArgs.flatMap((arg) => arg.slice('--tier='.length).split(','));
for (const tier of wanted) {
  if (!TIERS.includes(tier)) {
    console.error(`unknown tier '${tier}': the tiers are ${TIERS.join(', ')}`);
    process.exit(1);
  }
}
const fragments = args.filter((arg) => !arg.startsWith('--tier='));
const selected = files
  .sort()
  .filter((file) => wanted.length === 0 || wanted.includes(tiers.get(file)))
  .filter((file) => fragments.length === 0 || fragments.some((f) => file.includes(f)));
if (selected.length === 0) {
  console.error(`no test files matched ${fragments.join(', ') || '(all)'}`);
  process.exit(1);
}
// A test file that leaves a handle open (a socket, a timer) never exits, and the run would wait for ever: bound it.
const limitMinutes = Number(process.env.EVENTLINE_TEST_LIMIT_MINUTES ?? 30);
const result = spawnSync(
  process.execPath,
  ['--conditions=source', '--import', 'tsx', '--test', '--test-reporter=spec', '--test-timeout=300000', ...selected],
  { cwd: root, stdio: 'inherit', env: process.env, timeout: limitMinutes * 60_000, killSignal: 'SIGKILL' },
);
if (result.error?.code === 'ETIMEDOUT') {
  console.error(
    `\nThe tests did not finish within ${limitMinutes} minutes: a test file probably left a connection or timer open. Failing.`,
  );
  process.exit(1);
}
process.exit(result.status ?? 1);
