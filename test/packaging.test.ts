// tier: integration
// The published packages as a user gets them: packed with `npm pack` (each prepack builds), installed from the
// tarballs into a project outside the workspace, then used from plain Node and type-checked with tsc's nodenext rules.
// The packages' own dependencies (pg, PGlite, fastify...) come from the npm cache that `npm ci` filled.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const root = new URL('..', import.meta.url).pathname;
const fixtures = join(root, 'test', 'packaging');

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  exports?: unknown;
  dependencies?: Record<string, string>;
}

const readJson = <T>(file: string): T => JSON.parse(readFileSync(file, 'utf8')) as T;
const versionOf = (name: string) => readJson<Manifest>(join(root, 'node_modules', name, 'package.json')).version;

// npm passes its own settings (npm_config_local_prefix = the workspace...) to scripts: the user's npm sees none.
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)));
}

function run(command: string, args: string[], cwd: string): string {
  const result = spawnSync(command, args, { cwd, env: cleanEnv(), encoding: 'utf8', timeout: 180_000 });
  assert.equal(
    result.status,
    0,
    `${command} ${args.join(' ')} (in ${cwd}) failed: ${result.error?.message ?? ''}\n${result.stdout}\n${result.stderr}`,
  );
  return result.stdout;
}

const published = readdirSync(join(root, 'packages'))
  .map((dir) => ({ dir: `packages/${dir}`, file: join(root, 'packages', dir, 'package.json') }))
  .filter(({ file }) => existsSync(file))
  .map(({ dir, file }) => ({ dir, file, text: readFileSync(file, 'utf8'), manifest: readJson<Manifest>(file) }))
  .filter(({ manifest }) => !manifest.private);

test('the packed packages install outside the workspace, run on plain Node and type-check as nodenext', async () => {
  const work = mkdtempSync(join(tmpdir(), 'eventline-packaging-'));
  try {
    const tarballs = join(work, 'tarballs');
    mkdirSync(tarballs);
    const packed = JSON.parse(
      run('npm', ['pack', '--json', '--pack-destination', tarballs, ...published.flatMap((p) => ['-w', p.dir])], root),
    ) as Array<{ name: string; filename: string; files: Array<{ path: string }> }>;

    assert.deepEqual(packed.map((p) => p.name).sort(), published.map((p) => p.manifest.name).sort());
    for (const pkg of published) {
      assert.equal(readFileSync(pkg.file, 'utf8'), pkg.text, `${pkg.dir}/package.json is restored after packing`);
      assert.ok(!existsSync(join(root, pkg.dir, 'package.json.workspace')), `${pkg.dir}: no manifest backup left`);
    }
    for (const pack of packed) {
      const paths = pack.files.map((f) => f.path);
      assert.ok(paths.includes('LICENSE') && paths.includes('README.md'), `${pack.name} ships LICENSE and README.md`);
      const stray = paths.filter((p) => !/^(dist\/.*|LICENSE|README\.md|package\.json)$/.test(p) || /\.test\./.test(p));
      assert.deepEqual(stray, [], `${pack.name} ships dist/, its README and LICENSE only`);
    }

    const app = join(work, 'app');
    mkdirSync(app);
    const tarballOf = (name: string) => join(tarballs, packed.find((p) => p.name === name)!.filename);
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({
        name: 'eventline-consumer',
        private: true,
        type: 'module',
        dependencies: {
          ...Object.fromEntries(published.map((p) => [p.manifest.name, `file:${tarballOf(p.manifest.name)}`])),
          zod: versionOf('zod'),
        },
        devDependencies: { '@types/node': versionOf('@types/node') },
      }),
    );
    run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], app);

    for (const pkg of published) {
      const installed = readJson<Manifest>(join(app, 'node_modules', pkg.manifest.name, 'package.json'));
      assert.ok(!JSON.stringify(installed.exports).includes('"source"'), `${pkg.manifest.name}: no source condition`);
      for (const [dep, range] of Object.entries(installed.dependencies ?? {})) {
        if (dep.startsWith('@eventline/')) assert.equal(range, '0.1.0', `${pkg.manifest.name} -> ${dep}`);
      }
    }

    copyFileSync(join(fixtures, 'consumer.mjs'), join(app, 'consumer.mjs'));
    const output = JSON.parse(run(process.execPath, ['consumer.mjs'], app).trim().split('\n').at(-1)!) as unknown;
    const expected = {
      stream: [
        ['MoneyDeposited', 5, 1],
        ['MoneyDeposited', 7, 2],
      ],
      all: 2,
    };
    assert.deepEqual(output, { memory: expected, pglite: expected });

    copyFileSync(join(fixtures, 'consumer.ts'), join(app, 'consumer.ts'));
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const flags = [
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--strict',
      '--noEmit',
      '--pretty',
      'false',
    ];
    // Without skipLibCheck, so that our .d.ts files are checked too (with it, even a missing `pg` would pass).
    const checked = spawnSync(process.execPath, [tsc, ...flags, 'consumer.ts'], { cwd: app, encoding: 'utf8' });
    const errors = checked.stdout.split('\n').filter((line) => /^\S.*: error TS\d+/.test(line));
    // Two dependencies' own declarations name types that only their devDependencies bring (@types/emscripten,
    // @types/redis-errors); a user sees them only without skipLibCheck. Any other error fails.
    const upstream = /^node_modules\/(@electric-sql\/pglite|ioredis)\//;
    assert.deepEqual(
      errors.filter((line) => !upstream.test(line)),
      [],
      `tsc ${flags.join(' ')} consumer.ts:\n${checked.stdout}${checked.stderr}`,
    );
    assert.ok(checked.status === 0 || errors.length > 0, `tsc failed without errors: ${checked.stderr}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
