// tier: unit
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { systemClock } from '@eventline/core';
import { createTestClock } from '@eventline/core/testing';

describe('clock', () => {
  it('the system clock sleeps, and an abort cuts the sleep short without rejecting', async () => {
    const controller = new AbortController();
    const sleeping = systemClock.sleep(60_000, controller.signal);
    controller.abort();
    await sleeping;
    await systemClock.sleep(0);
    assert.ok(Math.abs(systemClock.now() - Date.now()) < 1000);
  });

  it('a test clock wakes sleepers in the order they are due, only when advanced', async () => {
    const clock = createTestClock(1_000);
    const woken: string[] = [];
    void clock.sleep(300).then(() => woken.push(`b@${clock.now()}`));
    void clock.sleep(100).then(() => woken.push(`a@${clock.now()}`));
    void clock.sleep(500).then(() => woken.push(`c@${clock.now()}`));
    assert.equal(clock.sleepers, 3);
    await clock.advance(99);
    assert.deepEqual(woken, []);
    await clock.advance(250);
    assert.deepEqual(woken, ['a@1100', 'b@1300']);
    assert.equal(clock.now(), 1_349);
    await clock.advance(1_000);
    assert.deepEqual(woken, ['a@1100', 'b@1300', 'c@1500']);
    assert.equal(clock.sleepers, 0);
  });

  it('a sleeper that sleeps again when woken is woken again within the same advance', async () => {
    const clock = createTestClock(0);
    const ticks: number[] = [];
    const loop = (async () => {
      for (let i = 0; i < 3; i++) {
        await clock.sleep(10);
        ticks.push(clock.now());
      }
    })();
    await clock.advance(30);
    await loop;
    assert.deepEqual(ticks, [10, 20, 30]);
  });

  it('an aborted test sleep resolves at once and is no longer counted', async () => {
    const clock = createTestClock();
    const controller = new AbortController();
    const sleeping = clock.sleep(1_000, controller.signal);
    await clock.untilSleeping(1);
    controller.abort();
    await sleeping;
    assert.equal(clock.sleepers, 0);
    await assert.rejects(clock.advance(-1), RangeError);
  });
});
