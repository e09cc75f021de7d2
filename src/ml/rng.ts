/**
 * A small seeded pseudo-random generator (xoshiro128**, Blackman and Vigna) whose whole
 * state is four uint32 words, so samplers and trainers can save it and resume a run at
 * exactly the same draw. The seed is expanded into the state with splitmix32.
 */

export type RngState = readonly [number, number, number, number]

export interface Rng {
  /** Uniform float in [0, 1) with 32 bits of resolution. */
  readonly next: () => number
  /** Uniform 32-bit unsigned integer. */
  readonly nextUint32: () => number
  /** Uniform integer in [min, max] (both inclusive). */
  readonly int: (min: number, max: number) => number
  /** Uniform float in [min, max). */
  readonly uniform: (min: number, max: number) => number
  /** True with probability `p`. */
  readonly bernoulli: (p: number) => boolean
  readonly getState: () => RngState
  readonly setState: (state: RngState) => void
}

const rotl = (value: number, shift: number): number => ((value << shift) | (value >>> (32 - shift))) >>> 0

/** Expands a seed into four non-zero state words (splitmix32). */
export const seedState = (seed: number): RngState => {
  let z = seed >>> 0
  const words: Array<number> = []
  for (let i = 0; i < 4; i++) {
    z = (z + 0x9e3779b9) >>> 0
    let t = z
    t = Math.imul(t ^ (t >>> 16), 0x85ebca6b) >>> 0
    t = Math.imul(t ^ (t >>> 13), 0xc2b2ae35) >>> 0
    words.push((t ^ (t >>> 16)) >>> 0)
  }
  if (words[0] === 0 && words[1] === 0 && words[2] === 0 && words[3] === 0) words[0] = 1
  return [words[0], words[1], words[2], words[3]]
}

/** Creates a generator from a numeric seed or from a state saved by `getState`. */
export const makeRng = (seedOrState: number | RngState): Rng => {
  const initial = typeof seedOrState === "number" ? seedState(seedOrState) : seedOrState
  const s = Uint32Array.from(initial)

  const nextUint32 = (): number => {
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0
    const t = (s[1] << 9) >>> 0
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl(s[3], 11)
    return result
  }
  const next = (): number => nextUint32() / 4294967296

  return {
    next,
    nextUint32,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    uniform: (min, max) => min + next() * (max - min),
    bernoulli: (p) => next() < p,
    getState: () => [s[0], s[1], s[2], s[3]],
    setState: (state) => {
      if (state.length !== 4 || state.every((word) => word === 0)) {
        throw new RangeError(`invalid RNG state [${state.join(", ")}]: expected four uint32 words, not all zero`)
      }
      s.set(state)
    }
  }
}
