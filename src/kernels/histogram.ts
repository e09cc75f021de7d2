/**
 * Step 2 of preprocess: whole-volume histogram matching of 8-bit intensities to a reference
 * histogram, by classic CDF interpolation.
 *
 * For each source value v that occurs, its quantile is `q(v) = (count of values <= v) / N`.
 * The reference's occurring values `r_j` get quantiles `Q_j` the same way. The matched value
 * is the piecewise-linear interpolation of `r` over `Q` at `q(v)`, clamped to the first and
 * last `r_j`, in float64 with the operation order of numpy 1.24 `interp`:
 * `slope = (r[j+1] - r[j]) / (Q[j+1] - Q[j])`, `slope * (q - Q[j]) + r[j]`, and exactly `r[j]`
 * when `q == Q[j]`. This is what scikit-image 0.19.3 `match_histograms` computes; the float
 * result is then truncated to an integer. Because source and reference are 8-bit, the whole
 * mapping is a 256-entry lookup table, so applying it costs one read per voxel.
 */
import type { Volume } from "../volume/volume.ts"
import { InvalidParameterError } from "./errors.ts"

export const BIN_COUNT = 256

/** Counts each 8-bit value (index = value), returned as float64 so sums of histograms stay exact past 2^32. */
export const histogram256 = (volume: Volume<Uint8Array> | Uint8Array): Float64Array => {
  const data = volume instanceof Uint8Array ? volume : volume.data
  // Uint32 counters are exact for up to 2^32 - 1 voxels, so one pass fits any single volume.
  if (data.length > 0xffffffff) {
    throw new InvalidParameterError({ parameter: "volume", expected: "fewer than 2^32 voxels", actual: String(data.length) })
  }
  // Four interleaved tables, so runs of equal values do not serialise on one counter's
  // read-modify-write. Each holds at most a quarter of the voxels.
  const counts = new Uint32Array(4 * BIN_COUNT)
  const quads = data.length - (data.length % 4)
  for (let i = 0; i < quads; i += 4) {
    counts[data[i] << 2]++
    counts[(data[i + 1] << 2) | 1]++
    counts[(data[i + 2] << 2) | 2]++
    counts[(data[i + 3] << 2) | 3]++
  }
  for (let i = quads; i < data.length; i++) counts[data[i] << 2]++
  const total = new Float64Array(BIN_COUNT)
  for (let value = 0; value < BIN_COUNT; value++) {
    const base = value << 2
    total[value] = counts[base] + counts[base + 1] + counts[base + 2] + counts[base + 3]
  }
  return total
}

const checkHistogram = (name: string, histogram: ArrayLike<number>): number => {
  if (histogram.length !== BIN_COUNT) {
    throw new InvalidParameterError({ parameter: name, expected: `${BIN_COUNT} bins`, actual: `${histogram.length} bins` })
  }
  let total = 0
  for (let value = 0; value < BIN_COUNT; value++) {
    const count = histogram[value]
    if (!(Number.isInteger(count) && count >= 0)) {
      throw new InvalidParameterError({
        parameter: `${name}[${value}]`,
        expected: "a non-negative integer count",
        actual: String(count)
      })
    }
    total += count
  }
  if (total === 0) {
    throw new InvalidParameterError({ parameter: name, expected: "at least one counted voxel", actual: "an empty histogram" })
  }
  return total
}

/** Returns the float64 matched value for every source value 0..255, with NaN for values that do not occur. */
export const matchHistogramValues = (source: ArrayLike<number>, reference: ArrayLike<number>): Float64Array => {
  const sourceTotal = checkHistogram("source histogram", source)
  const referenceTotal = checkHistogram("reference histogram", reference)

  // Reference knots: occurring values and their cumulative quantiles, strictly increasing.
  const knotQuantiles: number[] = []
  const knotValues: number[] = []
  let cumulative = 0
  for (let value = 0; value < BIN_COUNT; value++) {
    if (reference[value] === 0) continue
    cumulative += reference[value]
    knotQuantiles.push(cumulative / referenceTotal)
    knotValues.push(value)
  }

  const matched = new Float64Array(BIN_COUNT).fill(NaN)
  cumulative = 0
  let knot = 0
  for (let value = 0; value < BIN_COUNT; value++) {
    if (source[value] === 0) continue
    cumulative += source[value]
    const quantile = cumulative / sourceTotal
    // Quantiles rise with the value, so the knot index only moves forward.
    while (knot + 1 < knotQuantiles.length && knotQuantiles[knot + 1] <= quantile) knot++
    matched[value] = interpolate(quantile, knot, knotQuantiles, knotValues)
  }
  return matched
}

// `knot` is the last index with knotQuantiles[knot] <= quantile, or 0 when quantile lies below them all.
const interpolate = (quantile: number, knot: number, quantiles: number[], values: number[]): number => {
  const last = quantiles.length - 1
  if (quantile < quantiles[0]) return values[0]
  if (knot === last || quantile === quantiles[knot]) return values[knot]
  const slope = (values[knot + 1] - values[knot]) / (quantiles[knot + 1] - quantiles[knot])
  return slope * (quantile - quantiles[knot]) + values[knot]
}

/**
 * Returns the lookup table `lut[v] = trunc(matched(v))` for the source values that occur.
 * Values that do not occur map to 0, which no voxel reads.
 */
export const matchHistogramLut = (source: ArrayLike<number>, reference: ArrayLike<number>): Uint8Array => {
  const matched = matchHistogramValues(source, reference)
  const lut = new Uint8Array(BIN_COUNT)
  for (let value = 0; value < BIN_COUNT; value++) {
    const mapped = matched[value]
    lut[value] = Number.isNaN(mapped) ? 0 : Math.trunc(mapped)
  }
  return lut
}

/** Applies a 256-entry lookup table in place. */
export const applyLut = (data: Uint8Array, lut: Uint8Array): void => {
  for (let i = 0; i < data.length; i++) data[i] = lut[data[i]]
}
