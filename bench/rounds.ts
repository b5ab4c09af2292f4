/**
 * Benchmarks run in rounds, the daemons taking turns: who goes when, and how a round's
 * figures are summed up. On a shared host the machine's speed drifts by tens of percent over
 * minutes, while the daemons of one round run within seconds of each other; so each round
 * starts with another daemon, and a comparison is the median of the rounds' own ratios.
 */

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** The median of f over xs, NaN when there is none. */
export const medianOf = <T>(xs: T[] | undefined, f: (x: T) => number): number => (xs && xs.length ? median(xs.map(f)) : NaN);

/** The order in which xs take their turns in round `round` (from 1): each round starts with the next one. */
export function turnOrder<T>(xs: T[], round: number): T[] {
  return xs.map((_, k) => xs[(k + round - 1) % xs.length]);
}

/** ours / theirs (f of each) for every round both have a figure for. */
export function roundRatios<T extends { round: number }>(ours: T[] | undefined, theirs: T[] | undefined, f: (x: T) => number): number[] {
  const ratios: number[] = [];
  for (const x of ours ?? []) {
    const y = theirs?.find((t) => t.round === x.round);
    if (y) ratios.push(f(x) / f(y));
  }
  return ratios.filter(Number.isFinite);
}

/** The median over the rounds both have a figure for of ours / theirs (f of each), NaN when none. */
export function medianRoundRatio<T extends { round: number }>(ours: T[] | undefined, theirs: T[] | undefined, f: (x: T) => number): number {
  return medianOf(roundRatios(ours, theirs, f), (r) => r);
}

/** The smallest and the largest of f over xs ([NaN, NaN] when there is none): how far rounds spread. */
export function rangeOf<T>(xs: T[] | undefined, f: (x: T) => number): [number, number] {
  const v = (xs ?? []).map(f).filter(Number.isFinite);
  return v.length ? [Math.min(...v), Math.max(...v)] : [NaN, NaN];
}
