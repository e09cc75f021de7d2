/**
 * Steps 3 and 4 of preprocess: the z-median across neighbouring B-scans and the 3x3 median
 * within a B-scan, on 8-bit slices stored row by row (x fastest, then y).
 */
import { checkGeometry } from "./errors.ts"

// Branch-free min and max of small integers: `d >> 31` is -1 when d < 0 and 0 otherwise.
// Noisy B-scans make a compare-and-branch unpredictable, and this runs about twice as fast.
const min2 = (a: number, b: number): number => {
  const d = a - b
  return b + (d & (d >> 31))
}
const max2 = (a: number, b: number): number => {
  const d = a - b
  return a - (d & (d >> 31))
}
const min3 = (a: number, b: number, c: number): number => min2(min2(a, b), c)
const max3 = (a: number, b: number, c: number): number => max2(max2(a, b), c)
const median3 = (a: number, b: number, c: number): number => max2(min2(a, b), min2(max2(a, b), c))

const HIGH_BITS = 0x80808080 | 0
const LOW_BITS = 0x7f7f7f7f

/**
 * Returns, for four packed unsigned bytes, 0xff in each byte where `a >= b` and 0x00 elsewhere.
 * `(a | 0x80) - (b & 0x7f)` per byte never borrows across bytes, and its top bit compares the
 * low seven bits. Where the top bits of a and b differ, they decide instead.
 */
const greaterOrEqualMask = (a: number, b: number): number => {
  const lowCompare = ((a | HIGH_BITS) - (b & LOW_BITS)) | 0
  const topBits = ((a & ~b) | (~(a ^ b) & lowCompare)) & HIGH_BITS
  return Math.imul(topBits >>> 7, 0xff)
}

/** Median of three for four packed unsigned bytes at once. */
const median3Packed = (a: number, b: number, c: number): number => {
  const abMask = greaterOrEqualMask(a, b)
  const larger = (a & abMask) | (b & ~abMask)
  const smaller = (b & abMask) | (a & ~abMask)
  const cMask = greaterOrEqualMask(larger, c)
  const middleOrSmaller = (c & cMask) | (larger & ~cMask)
  const finalMask = greaterOrEqualMask(smaller, middleOrSmaller)
  return (smaller & finalMask) | (middleOrSmaller & ~finalMask)
}

const identityLut = Uint8Array.from({ length: 256 }, (_, value) => value)

const isWordAligned = (array: Uint8Array): boolean => array.byteOffset % 4 === 0

/**
 * Writes the voxel-wise median of three equally sized slices into `output`. When all four
 * arrays start on a 4-byte boundary, four voxels are processed per 32-bit word.
 */
export const zMedianSlice = (previous: Uint8Array, current: Uint8Array, next: Uint8Array, output: Uint8Array): void => {
  let start = 0
  if ([previous, current, next, output].every(isWordAligned)) {
    const words = output.length >> 2
    const previousWords = new Uint32Array(previous.buffer, previous.byteOffset, words)
    const currentWords = new Uint32Array(current.buffer, current.byteOffset, words)
    const nextWords = new Uint32Array(next.buffer, next.byteOffset, words)
    const outputWords = new Uint32Array(output.buffer, output.byteOffset, words)
    for (let i = 0; i < words; i++) outputWords[i] = median3Packed(previousWords[i], currentWords[i], nextWords[i])
    start = words << 2
  }
  for (let i = start; i < output.length; i++) output[i] = median3(previous[i], current[i], next[i])
}

/**
 * Writes the 3x3 median of `input` (width x height, row-major) into `output`, with edge
 * pixels replicated past the border, as Pillow 9.4.0 `ImageFilter.MedianFilter(3)` does:
 * it pads by edge replication and takes the 5th of the 9 sorted values.
 *
 * Each column triple (rows y-1, y, y+1) is sorted once per row. The median of the nine is
 * then `median(max of the three minima, median of the three middles, min of the three maxima)`.
 * With `outputLut`, each median m is written as `outputLut[m]`, which saves a separate pass
 * when the caller maps intensities afterwards.
 */
export const median3x3 = (
  input: Uint8Array,
  output: Uint8Array,
  width: number,
  height: number,
  outputLut: Uint8Array = identityLut
): void => {
  checkGeometry("median input", input.length, width, height)
  checkGeometry("median output", output.length, width, height)
  const lows = new Uint8Array(width)
  const middles = new Uint8Array(width)
  const highs = new Uint8Array(width)
  const clampedMedian = (x: number): number => {
    const left = x > 0 ? x - 1 : 0
    const right = x < width - 1 ? x + 1 : width - 1
    const maxOfLows = max3(lows[left], lows[x], lows[right])
    const medianOfMiddles = median3(middles[left], middles[x], middles[right])
    const minOfHighs = min3(highs[left], highs[x], highs[right])
    return median3(maxOfLows, medianOfMiddles, minOfHighs)
  }
  for (let y = 0; y < height; y++) {
    // Border rows: the row above the first and below the last are replicas of those rows.
    const above = Math.max(y - 1, 0) * width
    const row = y * width
    const below = Math.min(y + 1, height - 1) * width
    for (let x = 0; x < width; x++) {
      const c = input[below + x]
      const smaller = min2(input[above + x], input[row + x])
      const larger = max2(input[above + x], input[row + x])
      lows[x] = min2(smaller, c)
      middles[x] = max2(smaller, min2(larger, c))
      highs[x] = max2(larger, c)
    }
    // Interior pixels in pairs (x, x + 1): both windows contain columns x and x + 1, so
    // the max of their lows and the min of their highs are computed once for the pair.
    let x = 1
    for (; x + 2 < width; x += 2) {
      const sharedLow = max2(lows[x], lows[x + 1])
      const sharedHigh = min2(highs[x], highs[x + 1])
      const firstMedian = median3(max2(lows[x - 1], sharedLow), median3(middles[x - 1], middles[x], middles[x + 1]), min2(highs[x - 1], sharedHigh))
      const secondMedian = median3(max2(sharedLow, lows[x + 2]), median3(middles[x], middles[x + 1], middles[x + 2]), min2(sharedHigh, highs[x + 2]))
      output[row + x] = outputLut[firstMedian]
      output[row + x + 1] = outputLut[secondMedian]
    }
    // The first and last columns (border columns are replicated as border rows are), and
    // the interior column left over when the interior count is odd.
    output[row] = outputLut[clampedMedian(0)]
    if (x < width - 1) output[row + x] = outputLut[clampedMedian(x)]
    if (width > 1) output[row + width - 1] = outputLut[clampedMedian(width - 1)]
  }
}
