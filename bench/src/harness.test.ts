// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { concurrently, formatTable, interleave, jsonLine, makeResult, median } from './harness.js';

describe('bench harness', () => {
  it('takes the median', () => {
    assert.equal(median([5, 1, 3]), 3);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.throws(() => median([]), RangeError);
  });

  it('makes every ratio "higher is better"', () => {
    assert.equal(makeResult('a', 'events/s', 800, 1000).ratio, 0.8);
    assert.equal(makeResult('b', 'MiB', 100, 80).ratio, 0.8);
    assert.equal(makeResult('c', 'ms', 10, 20).ratio, 2);
    assert.deepEqual(makeResult('d', 'MiB', 84.04, null), {
      name: 'd',
      unit: 'MiB',
      value: 84,
      baseline: null,
      ratio: null,
    });
    assert.equal(makeResult('e', 'events/s', 1234.56, 1000).value, 1235);
  });

  it('alternates the order of value and baseline after a warm-up of each', async () => {
    const calls: string[] = [];
    const r = await interleave(
      3,
      async (round) => (calls.push(`v${round}`), 10 + round),
      async (round) => (calls.push(`b${round}`), 20 + round),
    );
    assert.deepEqual(calls, ['v-1', 'b-1', 'v0', 'b0', 'b1', 'v1', 'v2', 'b2']);
    assert.deepEqual(r, { value: 11, baseline: 21, values: [10, 11, 12], baselines: [20, 21, 22] });
  });

  it('runs each index once on the concurrent loops', async () => {
    const seen: number[] = [];
    let active = 0;
    let most = 0;
    await concurrently(3, 10, async (i) => {
      most = Math.max(most, ++active);
      await new Promise((resolve) => setTimeout(resolve, 1));
      seen.push(i);
      active--;
    });
    assert.deepEqual(
      [...seen].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.equal(most, 3);
  });

  it('prints a table and one line of JSON', () => {
    const results = [makeResult('store.x', 'events/s', 900, 1000), makeResult('store.x.rss', 'MiB', 84, null)];
    const table = formatTable(results).split('\n');
    assert.equal(table.length, 4);
    assert.match(table[2]!, /^store\.x\s+events\/s\s+900\s+1,000\s+0\.90$/);
    const line = jsonLine('0.1.0', results);
    assert.ok(!line.includes('\n'));
    assert.deepEqual(JSON.parse(line), { bench: 'eventline', version: '0.1.0', node: process.version, results });
  });
});
