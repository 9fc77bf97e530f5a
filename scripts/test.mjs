#!/usr/bin/env node
// Runs every *.test.ts under packages/, examples/, bench/ and test/ with Node's own test runner.
// Node 20's `--test` does not expand globs, so the files are found here and passed explicitly.
// Usage: npm test [-- <path fragment> ...]   (only files whose path contains one of the fragments)
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

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
const fragments = process.argv.slice(2);
const selected = files.sort().filter((file) => fragments.length === 0 || fragments.some((f) => file.includes(f)));
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
