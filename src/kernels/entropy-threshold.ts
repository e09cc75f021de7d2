/**
 * Thresholded local entropy: the mask `entropy / (slice maximum + 1e-16) > threshold` that
 * the roi stage needs, equal pixel for pixel to thresholding the exact values of
 * `localEntropy` (entropy.ts), at a fraction of its cost.
 *
 * Images are row-major (x fastest, then y), values 0..255, and the footprint is the disk of
 * entropy.ts. Exact entropy sums a float64 term per occupied bin at every pixel. This module
 * instead slides a cheap estimate `H = log2(pop) - S / pop`, with `S = sum over bins of
 * c * log2(c)` kept as an integer multiple of 2^-scaleBits. Each count change moves S by a
 * table difference of two integers, which float64 adds exactly, so S has no drift along a
 * row. The estimate lies within `errorBound` (below) of the exact value. The exact entropy
 * is then recomputed only where the estimate cannot decide:
 *
 * 1. at pixels whose estimate is within 3 bounds of the estimated maximum, which gives the
 *    exact maximum M;
 * 2. at pixels where `(H - 2 bound) / D` and `(H + 2 bound) / D`, with `D = M + 1e-16`, lie
 *    on different sides of the threshold. Float64 division is monotone, so elsewhere the
 *    exact value's quotient is on the same side as both.
 *
 * A pixel whose disk holds one value has exact entropy 0 (the term of p = 1 is 0), so it is
 * marked as exact without any recomputation.
 */
import { countNonzero, diskHalfWidths, EntropyTerms, processTerms, sumOccupied } from "./entropy.ts"
import { checkGeometry } from "./errors.ts"
import { ScratchArrays } from "./scratch.ts"

/** Fixed-point tables of `c * log2(c)` for the counts of one disk size. */
interface ScaledTerms {
  /** `increase[c]`: change of the scaled S when a count goes from c to c + 1. */
  readonly increase: Float64Array
  /** `decrease[c]`: change of the scaled S when a count goes from c to c - 1. */
  readonly decrease: Float64Array
  /** Scaled S of a disk whose pop pixels all hold one value, `pop * log2(pop)`, per pop. */
  readonly singleValueSum: Float64Array
  /** `log2(pop)` per pop. */
  readonly log2Pop: Float64Array
  /** `1 / (pop * 2^scaleBits)` per pop. */
  readonly inverseScaledPop: Float64Array
  /** Maximum distance between the estimate and the exact entropy, in bits. */
  readonly errorBound: number
}

const buildScaledTerms = (halfWidths: Int32Array): ScaledTerms => {
  let maxPop = 0
  for (const halfWidth of halfWidths) maxPop += 2 * halfWidth + 1
  const maxTerm = maxPop * Math.log2(maxPop + 1)
  // S * 2^scaleBits must stay below 2^52 so every sum of table entries is an exact integer.
  const scaleBits = Math.min(32, Math.floor(Math.log2(2 ** 52 / (maxTerm + 1))))
  const scale = 2 ** scaleBits
  const scaled = new Float64Array(maxPop + 2)
  for (let count = 2; count <= maxPop + 1; count++) scaled[count] = Math.round(count * Math.log2(count) * scale)
  const increase = new Float64Array(maxPop + 1)
  const decrease = new Float64Array(maxPop + 1)
  for (let count = 0; count <= maxPop; count++) {
    increase[count] = scaled[count + 1] - scaled[count]
    if (count > 0) decrease[count] = scaled[count - 1] - scaled[count]
  }
  const log2Pop = new Float64Array(maxPop + 1)
  const inverseScaledPop = new Float64Array(maxPop + 1)
  for (let pop = 1; pop <= maxPop; pop++) {
    log2Pop[pop] = Math.log2(pop)
    inverseScaledPop[pop] = 1 / (pop * scale)
  }
  // At most min(256, maxPop) bins are occupied. Each scaled table entry is off by at most
  // half a unit (2^-scaleBits / 2) plus the float64 error of `count * log2(count)` (a few
  // ulps, bounded by 2^-50 of maxTerm), and dividing by pop >= 1 does not enlarge that.
  // The exact sum and the estimate's own float64 steps each add a few ulps of their
  // magnitude (below log2(maxPop) + 1) per bin, bounded by 2^-46 per bin. The factor 4
  // leaves room for anything this count misses.
  const bins = Math.min(256, maxPop)
  const tableError = bins * (0.5 / scale + 2 ** -50 * maxTerm)
  const roundingError = bins * 2 ** -46 * (Math.log2(maxPop) + 1)
  const errorBound = 4 * (tableError + roundingError) + 1e-12
  const singleValueSum = scaled.subarray(0, maxPop + 1)
  return { singleValueSum, increase, decrease, log2Pop, inverseScaledPop, errorBound }
}

/** Exact entropy at single pixels, bit for bit as `localEntropy` computes it. */
class ExactEntropy {
  private readonly counts = new Int32Array(256)
  private readonly occupied = new Int32Array(8)
  recomputed = 0

  constructor(
    private readonly image: Uint8Array,
    private readonly width: number,
    private readonly height: number,
    private readonly halfWidths: Int32Array,
    private readonly terms: EntropyTerms
  ) {}

  at(x: number, y: number): number {
    const { image, width, height, halfWidths, counts, occupied } = this
    const radius = (halfWidths.length - 1) >> 1
    let pop = 0
    const firstRow = Math.max(-radius, -y)
    const lastRow = Math.min(radius, height - 1 - y)
    for (let dy = firstRow; dy <= lastRow; dy++) {
      const halfWidth = halfWidths[dy + radius]
      const rowStart = (y + dy) * width
      const last = Math.min(width - 1, x + halfWidth)
      for (let column = Math.max(0, x - halfWidth); column <= last; column++) {
        const value = image[rowStart + column]
        counts[value]++
        occupied[value >> 5] |= 1 << (value & 31)
        pop++
      }
    }
    const entropy = sumOccupied(counts, occupied, this.terms.forPop(pop))
    counts.fill(0)
    occupied.fill(0)
    this.recomputed++
    return entropy
  }
}

/** Counts of the work done by the last `thresholdEntropy` call, for benchmarks and tests. */
export interface ThresholdStats {
  /** Pixels whose exact entropy was recomputed. */
  recomputed: number
  /** The exact slice maximum M. */
  maximum: number
}

/**
 * Writes into `out` 1 where the exact local entropy of `image` over the disk of `radius`,
 * divided by (its maximum over the image + 1e-16) in float64, exceeds `threshold`, and 0
 * elsewhere. Returns `out` and the work counts.
 */
export const thresholdEntropy = (
  image: Uint8Array,
  width: number,
  height: number,
  radius: number,
  threshold: number,
  out: Uint8Array = new Uint8Array(width * height),
  scratch: ScratchArrays = new ScratchArrays()
): { mask: Uint8Array; stats: ThresholdStats } => {
  checkGeometry("entropy image", image.length, width, height)
  checkGeometry("entropy mask", out.length, width, height)
  const halfWidths = diskHalfWidths(radius)
  const tables = scratch.object(`scaled entropy terms ${radius}`, () => buildScaledTerms(halfWidths))
  const estimate = scratch.float64("entropy estimate", width * height)
  const exactKnown = scratch.uint8("entropy exact", width * height)
  const estimatedMaximum = estimateEntropy(image, width, height, halfWidths, tables, scratch, estimate, exactKnown)

  const terms = scratch.object("entropy terms", () => new EntropyTerms(Infinity, processTerms))
  const exact = new ExactEntropy(image, width, height, halfWidths, terms)
  const bound = tables.errorBound

  // Step 1: every pixel whose exact value can be the maximum has an estimate within two
  // bounds of the estimated maximum, and three bounds cover the rounding of this subtraction.
  const candidateFloor = estimatedMaximum - 3 * bound
  let maximum = -Infinity
  for (let i = 0; i < estimate.length; i++) {
    if (exactKnown[i] === 0) {
      if (estimate[i] < candidateFloor) continue
      estimate[i] = exact.at(i % width, (i - (i % width)) / width)
      exactKnown[i] = 1
    }
    if (estimate[i] > maximum) maximum = estimate[i]
  }

  // Step 2: threshold, recomputing only where the bracket straddles the threshold.
  const divisor = maximum + 1e-16
  const margin = 2 * bound
  for (let i = 0; i < estimate.length; i++) {
    const value = estimate[i]
    if (exactKnown[i] !== 0) {
      out[i] = value / divisor > threshold ? 1 : 0
    } else if ((value - margin) / divisor > threshold) {
      out[i] = 1
    } else if (!((value + margin) / divisor > threshold)) {
      out[i] = 0
    } else {
      const x = i % width
      out[i] = exact.at(x, (i - x) / width) / divisor > threshold ? 1 : 0
    }
  }
  return { mask: out, stats: { recomputed: exact.recomputed, maximum } }
}

/**
 * Writes the estimate of every pixel into `estimate`, with `exactKnown` 1 where it is the
 * exact value (a single occupied bin, entropy 0) and 0 elsewhere. Returns the largest estimate.
 *
 * Bin 0 holds most pixels of a roi input (every intensity below 128 maps to 0), so its count
 * is not slid. The sweep keeps S over bins 1..255 and the number of nonzero pixels in the
 * disk, and adds bin 0's term `scaled(pop - nonzero)` per pixel. A step where 0 leaves and
 * enters then costs two loads and a compare.
 */
const estimateEntropy = (
  image: Uint8Array,
  width: number,
  height: number,
  halfWidths: Int32Array,
  tables: ScaledTerms,
  scratch: ScratchArrays,
  estimate: Float64Array,
  exactKnown: Uint8Array
): number => {
  const radius = (halfWidths.length - 1) >> 1
  const { increase, decrease, singleValueSum, log2Pop, inverseScaledPop } = tables
  const counts = scratch.int32("estimate counts", 256 + 2 * (2 * radius + 1))
  counts.fill(0)
  const rowStartCounts = scratch.int32("estimate row start counts", 256)
  rowStartCounts.fill(0)
  // Per disk row (index dy + radius): where the left edge pixel leaves and the right edge
  // pixel enters, as offsets to which the step's x is added.
  const leavingOffsets = scratch.int32("estimate leaving offsets", 2 * radius + 1)
  const enteringOffsets = scratch.int32("estimate entering offsets", 2 * radius + 1)
  const nonzeroBelow = countNonzero(image, width, height, scratch.int32("estimate nonzero table", (width + 1) * (height + 1)))
  const firstInteriorX = radius + 1
  const lastInteriorX = width - 1 - radius

  // The disk at (0, y): counts of bins 1..255, their scaled S, the nonzero pixel count and
  // the pop. It slides down from row to row and covers columns 0..radius only.
  const rowStart = { sum: 0, nonzero: 0, pop: 0 }
  const lastColumn = Math.min(radius, width - 1)
  const addToRowStart = (value: number): void => {
    rowStart.pop++
    if (value === 0) return
    const count = rowStartCounts[value]
    rowStart.sum += increase[count]
    rowStartCounts[value] = count + 1
    rowStart.nonzero++
  }
  const removeFromRowStart = (value: number): void => {
    rowStart.pop--
    if (value === 0) return
    const count = rowStartCounts[value]
    rowStart.sum += decrease[count]
    rowStartCounts[value] = count - 1
    rowStart.nonzero--
  }
  for (let dx = 0; dx <= lastColumn; dx++) {
    const halfHeight = halfWidths[dx + radius]
    for (let y = 0; y <= Math.min(halfHeight, height - 1); y++) addToRowStart(image[y * width + dx])
  }

  let estimatedMaximum = 0
  for (let y = 0; y < height; y++) {
    if (y > 0) {
      for (let dx = 0; dx <= lastColumn; dx++) {
        const halfHeight = halfWidths[dx + radius]
        const leavingRow = y - 1 - halfHeight
        if (leavingRow >= 0) removeFromRowStart(image[leavingRow * width + dx])
        const enteringRow = y + halfHeight
        if (enteringRow < height) addToRowStart(image[enteringRow * width + dx])
      }
    }
    counts.set(rowStartCounts)
    counts[0] = 0
    let sum = rowStart.sum
    let nonzero = rowStart.nonzero
    let pop = rowStart.pop
    const firstRow = Math.max(-radius, -y) + radius
    const lastRow = Math.min(radius, height - 1 - y) + radius
    for (let row = firstRow; row <= lastRow; row++) {
      const start = (y + row - radius) * width
      const halfWidth = halfWidths[row]
      leavingOffsets[row] = start - 1 - halfWidth
      enteringOffsets[row] = start + halfWidth
    }
    const top = (y + firstRow - radius) * (width + 1)
    const bottom = (y + lastRow - radius + 1) * (width + 1)
    const rowOffset = y * width

    for (let x = 0; x < width; x++) {
      if (x === 0) {
        // The row start histogram is already in place.
      } else if (x >= firstInteriorX && x <= lastInteriorX) {
        // When every pixel of the columns the edges move through is zero, nothing changes.
        const left = x - 1 - radius
        const right = x + radius + 1
        const nonzeroInColumns =
          nonzeroBelow[bottom + right] - nonzeroBelow[bottom + left] - nonzeroBelow[top + right] + nonzeroBelow[top + left]
        if (nonzeroInColumns !== 0) {
          // Branch free, since mixed values make branches unpredictable. A zero pixel is
          // counted in a dummy bin of its own disk row (256 + 2 row for leaving, + 1 for
          // entering) whose count stays 0, and the table steps from count 0 are 0. When the
          // same value leaves and enters, the two steps cancel exactly.
          let leavingSum = 0
          let enteringSum = 0
          for (let row = firstRow; row <= lastRow; row++) {
            const leaving = image[leavingOffsets[row] + x]
            const leavingIsNonzero = (leaving + 255) >> 8
            const leavingBin = leaving | ((leavingIsNonzero ^ 1) * (256 + 2 * row))
            const leavingCount = counts[leavingBin]
            counts[leavingBin] = leavingCount - leavingIsNonzero
            leavingSum += decrease[leavingCount]
            const entering = image[enteringOffsets[row] + x]
            const enteringIsNonzero = (entering + 255) >> 8
            const enteringBin = entering | ((enteringIsNonzero ^ 1) * (257 + 2 * row))
            const enteringCount = counts[enteringBin]
            counts[enteringBin] = enteringCount + enteringIsNonzero
            enteringSum += increase[enteringCount]
            nonzero += enteringIsNonzero - leavingIsNonzero
          }
          sum += leavingSum + enteringSum
        }
      } else {
        // Near the left or right border only the edge pixels inside the image move.
        for (let row = firstRow; row <= lastRow; row++) {
          const halfWidth = halfWidths[row]
          if (x - 1 - halfWidth >= 0) {
            pop--
            const leaving = image[leavingOffsets[row] + x]
            if (leaving !== 0) {
              const count = counts[leaving]
              sum += decrease[count]
              counts[leaving] = count - 1
              nonzero--
            }
          }
          if (x + halfWidth < width) {
            pop++
            const entering = image[enteringOffsets[row] + x]
            if (entering !== 0) {
              const count = counts[entering]
              sum += increase[count]
              counts[entering] = count + 1
              nonzero++
            }
          }
        }
      }
      // Bin 0's term completes S. Both are exact integers below 2^52.
      const total = sum + singleValueSum[pop - nonzero]
      // S equals pop * log2(pop) only for a single value: with two or more, the true S is
      // lower by pop * entropy >= 1, far beyond the tables' rounding.
      if (total === singleValueSum[pop]) {
        estimate[rowOffset + x] = 0
        exactKnown[rowOffset + x] = 1
      } else {
        const value = log2Pop[pop] - total * inverseScaledPop[pop]
        estimate[rowOffset + x] = value
        exactKnown[rowOffset + x] = 0
        if (value > estimatedMaximum) estimatedMaximum = value
      }
    }
  }
  return estimatedMaximum
}
