#!/usr/bin/env node
// Copies every ```ts block of the READMEs into .tmp/doc-examples/ so that `npm run typecheck` compiles them with the
// code: a documented example that no longer compiles fails CI. Blocks fenced as ```ts fragment are skipped.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const out = join(root, '.tmp', 'doc-examples');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const readmes = ['README.md'];
for (const dir of ['packages', 'examples', 'bench']) {
  if (!existsSync(join(root, dir))) continue;
  if (existsSync(join(root, dir, 'README.md'))) readmes.push(join(dir, 'README.md'));
  for (const name of readdirSync(join(root, dir))) {
    if (existsSync(join(root, dir, name, 'README.md'))) readmes.push(join(dir, name, 'README.md'));
  }
}

let count = 0;
for (const readme of readmes) {
  const text = readFileSync(join(root, readme), 'utf8');
  const blocks = [...text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)];
  blocks.forEach((block, index) => {
    const name = `${readme.replace(/[/.]/g, '_')}_${index + 1}.ts`;
    writeFileSync(join(out, name), `// from ${readme}, block ${index + 1}\nexport {};\n${block[1]}`);
    count++;
  });
}
console.log(`extracted ${count} documentation examples from ${readmes.length} READMEs`);
