/**
 * Seeded pseudo-random numbers for the phantom generator (mulberry32, 32-bit state).
 * The same seed gives the same sequence on every platform, because the generator uses
 * only 32-bit integer arithmetic (`Math.imul`, shifts).
 */

export interface Random {
  /** Returns a float in [0, 1). */
  next(): number
  /** Returns an integer in [0, 2^32), the generator's raw output. */
  nextUint32(): number
  /** Returns a float in [min, max). */
  uniform(min: number, max: number): number
  /** Returns an integer in [min, maxExclusive). */
  int(min: number, maxExclusive: number): number
}

export const makeRandom = (seed: number): Random => {
  let state = seed >>> 0
  const nextUint32 = (): number => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
  const next = (): number => nextUint32() / 4294967296
  return {
    next,
    nextUint32,
    uniform: (min, max) => min + (max - min) * next(),
    int: (min, maxExclusive) => min + Math.floor((maxExclusive - min) * next())
  }
}

/** Derives a 32-bit seed from a base seed and a text key (FNV-1a over the key's UTF-16 units). */
export const deriveSeed = (seed: number, key: string): number => {
  let hash = (0x811c9dc5 ^ (seed >>> 0)) >>> 0
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash
}
