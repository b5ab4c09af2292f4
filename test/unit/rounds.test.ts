/**
 * How the benchmarks sum up their rounds (bench/rounds.ts): the turn order, the median of
 * the rounds' own ratios, and the spread a table prints beside each median.
 */
import { strict as assert } from 'node:assert';
import { medianRoundRatio, rangeOf, roundRatios, turnOrder } from '../../bench/rounds';

describe('benchmark rounds', () => {
  it('each round starts with the next daemon', () => {
    assert.deepEqual(turnOrder(['a', 'b', 'c'], 1), ['a', 'b', 'c']);
    assert.deepEqual(turnOrder(['a', 'b', 'c'], 2), ['b', 'c', 'a']);
    assert.deepEqual(turnOrder(['a', 'b', 'c'], 4), ['a', 'b', 'c']);
  });

  it('compares within a round, and shows how far the rounds spread', () => {
    // The host got slower in round 2: both fell, while ours stayed ahead within each round.
    const ours = [{ round: 1, iops: 200 }, { round: 2, iops: 110 }, { round: 3, iops: 150 }];
    const theirs = [{ round: 1, iops: 180 }, { round: 2, iops: 100 }, { round: 3, iops: 160 }, { round: 4, iops: 999 }];
    assert.deepEqual(roundRatios(ours, theirs, (x) => x.iops).map((r) => r.toFixed(3)), ['1.111', '1.100', '0.938']);
    assert.equal(medianRoundRatio(ours, theirs, (x) => x.iops).toFixed(3), '1.100');
    assert.deepEqual(rangeOf(ours, (x) => x.iops), [110, 200]);
    assert.ok(rangeOf([], (x: number) => x).every(Number.isNaN), 'no rounds: no range');
    assert.ok(Number.isNaN(medianRoundRatio(ours, [], (x) => x.iops)), 'no round in common: no ratio');
  });
});
