#!/usr/bin/env node
// Builds and packs the published packages (every package under packages/ that is not private).
//
//   node scripts/package.mjs build            every published package, in dependency order (npm run build)
//   node scripts/package.mjs build <dir>      one package, after any workspace dependency whose dist/ is out of date
//   node scripts/package.mjs prepack          (a package's prepack) build it, then write the manifest to publish
//   node scripts/package.mjs postpack         (a package's postpack) put the workspace manifest back
//
// In the workspace, exports carry a `source` condition pointing at the .ts files (node --conditions=source, and
// tsconfig's customConditions). A published package has no sources, so prepack removes that condition, with the
// workspace-only scripts, from package.json, keeping the original beside it; postpack restores it. A pack that died
// between the two is repaired by the next prepack or postpack.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

const root = resolve(new URL('..', import.meta.url).pathname);
const backupName = 'package.json.workspace';

/** The published packages, by name: { name, dir, manifest }. */
function publishedPackages() {
  const byName = new Map();
  for (const entry of readdirSync(join(root, 'packages'))) {
    const dir = join(root, 'packages', entry);
    const file = join(dir, 'package.json');
    if (!existsSync(file)) continue;
    const manifest = JSON.parse(readFileSync(existsSync(join(dir, backupName)) ? join(dir, backupName) : file, 'utf8'));
    if (!manifest.private) byName.set(manifest.name, { name: manifest.name, dir, manifest });
  }
  return byName;
}

/** The packages in dependency order: each after the workspace packages it depends on. */
function inDependencyOrder(byName) {
  const order = [];
  const seen = new Set();
  const visit = (pkg, path) => {
    if (seen.has(pkg.name)) return;
    if (path.includes(pkg.name)) throw new Error(`dependency cycle: ${[...path, pkg.name].join(' -> ')}`);
    for (const dep of Object.keys(pkg.manifest.dependencies ?? {})) {
      const inner = byName.get(dep);
      if (inner) visit(inner, [...path, pkg.name]);
    }
    seen.add(pkg.name);
    order.push(pkg);
  };
  for (const pkg of [...byName.values()].sort((a, b) => a.name.localeCompare(b.name))) visit(pkg, []);
  return order;
}

function newestMtime(dir) {
  let newest = 0;
  if (!existsSync(dir)) return newest;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const stat = statSync(path);
    newest = Math.max(newest, stat.isDirectory() ? newestMtime(path) : stat.mtimeMs);
  }
  return newest;
}

function upToDate(pkg) {
  const dist = join(pkg.dir, 'dist');
  if (!existsSync(dist)) return false;
  const inputs = Math.max(newestMtime(join(pkg.dir, 'src')), statSync(join(pkg.dir, 'tsconfig.build.json')).mtimeMs);
  return newestMtime(dist) >= inputs;
}

function compile(pkg) {
  const started = Date.now();
  rmSync(join(pkg.dir, 'dist'), { recursive: true, force: true });
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', join(pkg.dir, 'tsconfig.build.json')], { stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`build of ${pkg.name} failed`);
    process.exit(result.status ?? 1);
  }
  console.error(
    `built ${pkg.name} (${relative(root, pkg.dir)}/dist) in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
}

function findPackage(byName, dir) {
  const wanted = resolve(dir);
  const pkg = [...byName.values()].find((p) => p.dir === wanted);
  if (!pkg) throw new Error(`${dir} is not a published package (one of ${[...byName.keys()].join(', ')})`);
  return pkg;
}

/** Builds `dir`'s package, first building each workspace dependency whose dist/ is missing or older than its sources. */
function buildOne(byName, dir) {
  const target = findPackage(byName, dir);
  const needed = new Set();
  const collect = (pkg) => {
    for (const dep of Object.keys(pkg.manifest.dependencies ?? {})) {
      const inner = byName.get(dep);
      if (inner && !needed.has(inner.name)) {
        needed.add(inner.name);
        collect(inner);
      }
    }
  };
  collect(target);
  for (const pkg of inDependencyOrder(byName)) {
    if (needed.has(pkg.name) && !upToDate(pkg)) compile(pkg);
  }
  compile(target);
}

/** The manifest as published: no `source` export condition, no scripts that only work inside the workspace. */
function publishedManifest(manifest) {
  const stripSource = (value) => {
    if (typeof value !== 'object' || value === null) return value;
    return Object.fromEntries(
      Object.entries(value)
        .filter(([key]) => key !== 'source')
        .map(([key, inner]) => [key, stripSource(inner)]),
    );
  };
  const published = { ...manifest, exports: stripSource(manifest.exports) };
  delete published.scripts;
  return published;
}

function restore(dir) {
  const backup = join(dir, backupName);
  if (existsSync(backup)) renameSync(backup, join(dir, 'package.json'));
}

const [command, dir] = process.argv.slice(2);
if (command === 'build') {
  const byName = publishedPackages();
  if (dir === undefined) for (const pkg of inDependencyOrder(byName)) compile(pkg);
  else buildOne(byName, dir);
} else if (command === 'prepack') {
  const here = process.cwd();
  restore(here);
  buildOne(publishedPackages(), here);
  const file = join(here, 'package.json');
  const text = readFileSync(file, 'utf8');
  writeFileSync(join(here, backupName), text);
  writeFileSync(file, JSON.stringify(publishedManifest(JSON.parse(text)), null, 2) + '\n');
} else if (command === 'postpack') {
  restore(process.cwd());
} else {
  console.error('usage: node scripts/package.mjs build [<package dir>] | prepack | postpack');
  process.exit(2);
}
