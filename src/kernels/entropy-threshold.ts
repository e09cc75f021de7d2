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
 * A pixel whose disk contains a single value has exact entropy 0 (the term of p = 1 is 0), so it is
 * marked as exact without any recomputation.
 */
import { diskHalfWidths, EntropyTerms, processTerms, sumOccupied } from "./entropy.ts"
import { checkGeometry } from "./errors.ts"
import { ScratchArrays } from "./scratch.ts"

/** Fixed-point tables of `c * log2(c)` for the counts of one disk size. */
interface ScaledTerms {
  /** Change of the scaled S when a count goes from c to c + 1 (index 2 c + 1) or c - 1 (index 2 c). */
  readonly steps: Float64Array
  /** Scaled S of a disk whose pop pixels all have one value, `pop * log2(pop)`, per pop. */
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

  const steps = new Float64Array(2 * maxPop + 2)
  for (let count = 0; count <= maxPop; count++) {
    steps[2 * count + 1] = scaled[count + 1] - scaled[count]
    if (count > 0) steps[2 * count] = scaled[count - 1] - scaled[count]
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
  return { singleValueSum, steps, log2Pop, inverseScaledPop, errorBound }
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
 * Most pixels of a roi input are 0 (every intensity below 128 maps to 0), so the sweep
 * tracks only nonzero pixels, except in output rows dense with nonzero pixels, which
 * `slideDenseRow` slides over every edge pixel. Moving the disk one step right along row y, the pixel at
 * column px of disk row dy (half-width w) enters at x = px - w and leaves at x = px + w + 1.
 * Per output row these events are bucketed by x (a counting sort), then applied in x order
 * to the counts of bins 1..255, their scaled S and the nonzero count. Bin 0's count is
 * `pop - nonzero`, with pop from the disk's geometry, and its term is added per pixel.
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
  const { singleValueSum, log2Pop, inverseScaledPop } = tables
  const steps = tables.steps
  const counts = scratch.int32("estimate counts", 256)
  counts.fill(0)

  // The nonzero pixels of each image row: columns and values, rows [rowStarts[y], rowStarts[y + 1]).
  const rowStarts = scratch.int32("nonzero row starts", height + 1)
  const nonzeroColumns = scratch.int32("nonzero columns", image.length)
  const nonzeroValues = scratch.uint8("nonzero values", image.length)
  let next = 0
  for (let y = 0; y < height; y++) {
    rowStarts[y] = next
    const row = y * width
    for (let x = 0; x < width; x++) {
      const value = image[row + x]
      if (value !== 0) {
        nonzeroColumns[next] = x
        nonzeroValues[next] = value
        next++
      }
    }
  }
  rowStarts[height] = next

  // Events of one output row, bucketed by x. Each disk row has one pixel entering and one
  // leaving per step, so bucket x needs at most 2 (2 radius + 1) slots, from x * slots. An
  // event is `2 * value + 1` when the pixel enters and `2 * value` when it leaves.
  const slots = 2 * (2 * radius + 1)
  const bucketSizes = scratch.int32("event bucket sizes", width)
  const events = scratch.uint16("events", slots * width)
  // pop per x for the current range of disk rows inside the image, rebuilt when it changes.
  const popAt = scratch.int32("pop per x", width)
  let popFirstRow = -1
  let popLastRow = -1

  let estimatedMaximum = 0
  for (let y = 0; y < height; y++) {
    const firstRow = Math.max(-radius, -y) + radius
    const lastRow = Math.min(radius, height - 1 - y) + radius
    if (firstRow !== popFirstRow || lastRow !== popLastRow) {
      for (let x = 0; x < width; x++) {
        let pop = 0
        for (let row = firstRow; row <= lastRow; row++) {
          const halfWidth = halfWidths[row]
          pop += Math.min(width - 1, x + halfWidth) - Math.max(0, x - halfWidth) + 1
        }
        popAt[x] = pop
      }
      popFirstRow = firstRow
      popLastRow = lastRow
    }

    let rowNonzero = 0
    for (let row = firstRow; row <= lastRow; row++) {
      const imageRow = y + row - radius
      rowNonzero += rowStarts[imageRow + 1] - rowStarts[imageRow]
    }
    if (rowNonzero > DENSE_FRACTION * (lastRow - firstRow + 1) * width) {
      const rowMaximum = slideDenseRow(image, width, y, firstRow, lastRow, halfWidths, tables, popAt, counts, estimate, exactKnown)
      if (rowMaximum > estimatedMaximum) estimatedMaximum = rowMaximum
      counts.fill(0)
      continue
    }

    // Pixels already inside the disk at x = 0 go straight into the histogram, the rest
    // into their buckets.
    let sum = 0
    let nonzero = 0
    bucketSizes.fill(0)
    for (let row = firstRow; row <= lastRow; row++) {
      const halfWidth = halfWidths[row]
      const imageRow = y + row - radius
      for (let k = rowStarts[imageRow]; k < rowStarts[imageRow + 1]; k++) {
        const column = nonzeroColumns[k]
        const value = nonzeroValues[k]
        const enterX = column - halfWidth
        if (enterX <= 0) {
          const count = counts[value]
          sum += steps[2 * count + 1]
          counts[value] = count + 1
          nonzero++
        } else {
          events[enterX * slots + bucketSizes[enterX]++] = 2 * value + 1
        }
        const leaveX = column + halfWidth + 1
        if (leaveX < width) events[leaveX * slots + bucketSizes[leaveX]++] = 2 * value
      }
    }

    const rowOffset = y * width
    for (let x = 0; x < width; x++) {
      const end = x * slots + bucketSizes[x]
      // Branch free: steps[2 c + 1] is the change of S from count c to c + 1 and
      // steps[2 c] from c to c - 1. The parity of the event picks the direction. Events
      // alternate between two sums so the float64 additions form two shorter chains.
      let otherSum = 0
      let k = x * slots
      for (; k + 1 < end; k += 2) {
        const code = events[k]
        const bin = code >> 1
        const entering = code & 1
        const count = counts[bin]
        sum += steps[2 * count + entering]
        counts[bin] = count + 2 * entering - 1
        const nextCode = events[k + 1]
        const nextBin = nextCode >> 1
        const nextEntering = nextCode & 1
        const nextCount = counts[nextBin]
        otherSum += steps[2 * nextCount + nextEntering]
        counts[nextBin] = nextCount + 2 * nextEntering - 1
        nonzero += 2 * (entering + nextEntering) - 2
      }
      if (k < end) {
        const code = events[k]
        const bin = code >> 1
        const entering = code & 1
        const count = counts[bin]
        sum += steps[2 * count + entering]
        counts[bin] = count + 2 * entering - 1
        nonzero += 2 * entering - 1
      }
      sum += otherSum
      const pop = popAt[x]
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
    // The next row starts from an empty histogram.
    counts.fill(0)
  }
  return estimatedMaximum
}

// Output rows whose disk rows have more nonzero pixels than this fraction are slid densely,
// because reading both edge pixels per disk row then costs less than bucketing events. On
// 512 x 1024 synthetic and 768 x 496 Duke B-scans, fractions from 0.4 to 0.6 ran equally fast.
const DENSE_FRACTION = 0.5

/**
 * Writes the estimates of output row y by sliding its disk histogram along x, reading the
 * leaving and entering pixel of every disk row at each step. Returns the row's largest estimate.
 */
const slideDenseRow = (
  image: Uint8Array,
  width: number,
  y: number,
  firstRow: number,
  lastRow: number,
  halfWidths: Int32Array,
  tables: ScaledTerms,
  popAt: Int32Array,
  counts: Int32Array,
  estimate: Float64Array,
  exactKnown: Uint8Array
): number => {
  const radius = (halfWidths.length - 1) >> 1
  const { steps, singleValueSum, log2Pop, inverseScaledPop } = tables
  let sum = 0
  let nonzero = 0
  for (let row = firstRow; row <= lastRow; row++) {
    const rowStart = (y + row - radius) * width
    const last = Math.min(width - 1, halfWidths[row])
    for (let column = 0; column <= last; column++) {
      const value = image[rowStart + column]
      if (value === 0) continue
      const count = counts[value]
      sum += steps[2 * count + 1]
      counts[value] = count + 1
      nonzero++
    }
  }
  let rowMaximum = 0
  const rowOffset = y * width
  for (let x = 0; x < width; x++) {
    if (x > 0) {
      for (let row = firstRow; row <= lastRow; row++) {
        const rowStart = (y + row - radius) * width
        const halfWidth = halfWidths[row]
        const leavingColumn = x - 1 - halfWidth
        const enteringColumn = x + halfWidth
        const leaving = leavingColumn >= 0 ? image[rowStart + leavingColumn] : 0
        const entering = enteringColumn < width ? image[rowStart + enteringColumn] : 0
        // The same value leaving and entering leaves the histogram as it was.
        if (leaving === entering) continue
        if (leaving !== 0) {
          const count = counts[leaving]
          sum += steps[2 * count]
          counts[leaving] = count - 1
          nonzero--
        }
        if (entering !== 0) {
          const count = counts[entering]
          sum += steps[2 * count + 1]
          counts[entering] = count + 1
          nonzero++
        }
      }
    }
    const pop = popAt[x]
    const total = sum + singleValueSum[pop - nonzero]
    if (total === singleValueSum[pop]) {
      estimate[rowOffset + x] = 0
      exactKnown[rowOffset + x] = 1
    } else {
      const value = log2Pop[pop] - total * inverseScaledPop[pop]
      estimate[rowOffset + x] = value
      exactKnown[rowOffset + x] = 0
      if (value > rowMaximum) rowMaximum = value
    }
  }
  return rowMaximum
}
