/**
 * Released migrations are frozen: a database migrated by an earlier release must end up exactly where a fresh one does,
 * so the text of each released migration never changes. This pins the SHA-256 of each one (of its text, with the
 * `{{schema}}` placeholder). A change to the schema is a new migration, with the next version, added here too.
 */
// tier: unit
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { LATEST_MIGRATION, migrations, quoteSchema } from '@eventline/postgres';
import { SCHEMA_PLACEHOLDER, migrationTexts } from '../src/migrations.js';

const RELEASED: Record<number, string> = {
  1: '9742dfe0a80b57757a93c573022ddd24d245384c9a2295a0878e85e31c7e7bda',
  2: '22b7405c6f9caceaaf3313628a8e3744f56a5a92e9694651232f0fabc9d5f194',
  3: '153117d099c69211e438dbfd594b19107654f81e6b284d95fa660c62c358163e',
  4: '1a6876b36ba525be8023c28b5ff93f1b0f09a8ff8dd2420572b670d9bf65224b',
  5: '4423cbe6729ea9250bbc4e231c1cc831c906e07acd5070cb2bb178c67f088d50',
  6: '9793400403c37e755402c9bf32522c3d8770b0c3bb8d0e9b5600c1ec6c5c9536',
  7: '4da133386211465e50e9e4cea00d606c34d7676674543888472636dbaea2349d',
};

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

describe('released migrations', () => {
  it('never change', () => {
    for (const [version, hash] of Object.entries(RELEASED)) {
      const text = migrationTexts.get(Number(version));
      assert.ok(text !== undefined, `released migration ${version} is missing: a released migration is never removed`);
      assert.equal(
        sha256(text),
        hash,
        `migration ${version} changed: a released migration must never change (databases migrated by earlier releases ` +
          `would differ from new ones). Restore its text and add a new migration (version ${LATEST_MIGRATION + 1}) instead.`,
      );
    }
  });

  it('are numbered 1, 2, 3... with no gap, each with a name, and every one is pinned above', () => {
    assert.deepEqual(
      migrations.map((m) => m.version),
      Array.from({ length: migrations.length }, (_, i) => i + 1),
    );
    assert.equal(LATEST_MIGRATION, migrations.length);
    for (const migration of migrations) {
      assert.ok(migration.name.length > 0);
      assert.ok(
        RELEASED[migration.version] !== undefined,
        `migration ${migration.version} is not pinned: add its SHA-256 (${sha256(migrationTexts.get(migration.version)!)}) to RELEASED once it is released`,
      );
    }
  });

  it('take the schema in one way only: every {{schema}} becomes the quoted name', () => {
    const quoted = quoteSchema('app_events');
    for (const migration of migrations) {
      const text = migrationTexts.get(migration.version)!;
      assert.ok(text.includes(SCHEMA_PLACEHOLDER));
      const sql = migration.sql(quoted);
      assert.equal(sql, text.split(SCHEMA_PLACEHOLDER).join(quoted));
      assert.ok(!sql.includes('{{') && !sql.includes('}}'), `migration ${migration.version} has another placeholder`);
    }
  });
});
