#!/usr/bin/env node
// Runs every *.test.ts under packages/, examples/ and bench/ with Node's own test runner.
// Node 20's `--test` does not expand globs, so the files are found here and passed explicitly.
// Usage: npm test [-- <path fragment> ...]   (only files whose path contains one of the fragments)
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const roots = ['packages', 'examples', 'bench'];
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
  try { walk(join(root, dir)); } catch (error) { if (error.code !== 'ENOENT') throw error; }
}
const fragments = process.argv.slice(2);
const selected = files.sort().filter((file) => fragments.length === 0 || fragments.some((f) => file.includes(f)));
if (selected.length === 0) {
  console.error(`no test files matched ${fragments.join(', ') || '(all)'}`);
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  ['--conditions=source', '--import', 'tsx', '--test', '--test-reporter=spec', ...selected],
  { cwd: root, stdio: 'inherit', env: process.env },
);
process.exit(result.status ?? 1);
