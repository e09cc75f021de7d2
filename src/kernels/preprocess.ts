/**
 * The preprocess stage's per-volume computation (8-bit conversion, histogram matching,
 * z-median, 3x3 median), as the original method defines it:
 *
 * 1. every vendor: intensities to 0..255 by element type (see intensity.ts);
 * 2. Cirrus and Topcon: whole-volume histogram matching to a Spectralis reference histogram,
 *    truncated to integers (see histogram.ts);
 * 3. vendors in `zMedianVendors` (Cirrus and Topcon by default): each interior B-scan z
 *    (0 < z < slices - 1) becomes the voxel-wise median of B-scans z - 1, z and z + 1 of the
 *    matched volume; the first and last B-scan are kept;
 * 4. Cirrus and Topcon: the 3x3 median of each B-scan with replicated borders (see median.ts).
 *
 * Spectralis gets step 1 only. The output is a uint8 volume of the input's dims and spacing.
 */
import { type Vendor, vendors } from "../volume/dataset.ts"
import { summarizeSlices, type LabelScheme, type SliceLabelSummary } from "../volume/labels.ts"
import type { Volume } from "../volume/volume.ts"
import { checkGeometry, InvalidParameterError } from "./errors.ts"
import { applyLut, histogram256, matchHistogramLut } from "./histogram.ts"
import { toUint8, toUint8Volume } from "./intensity.ts"
import { median3x3, zMedianSlice } from "./median.ts"

export type { Vendor } from "../volume/dataset.ts"

/** Vendors whose volumes are histogram-matched and median-filtered. */
const filteredVendors: readonly Vendor[] = ["Cirrus", "Topcon"]

export interface PreprocessParams {
  /**
   * 256-bin histogram of the Spectralis reference volume's 8-bit intensities (from
   * `histogram256`). Null skips histogram matching, as the original code did when it was
   * given no reference volume.
   */
  readonly referenceHistogram: ArrayLike<number> | null
  /**
   * Vendors that get the z-median, by default Cirrus and Topcon. `["Topcon"]` reproduces the
   * original code, whose if/if/else let only Topcon volumes keep it. Only Cirrus and Topcon
   * volumes are filtered, so listing Spectralis has no effect.
   */
  readonly zMedianVendors?: readonly Vendor[]
}

/** Checks that `lut` never decreases across the values whose count in `histogram` is nonzero. */
const isNonDecreasingOn = (lut: Uint8Array, histogram: ArrayLike<number>): boolean => {
  let previous = -1
  for (let value = 0; value < 256; value++) {
    if (histogram[value] === 0) continue
    if (lut[value] < previous) return false
    previous = lut[value]
  }
  return true
}

export const defaultZMedianVendors: readonly Vendor[] = ["Cirrus", "Topcon"]

const checkVendor = (vendor: string): Vendor => {
  if (!(vendors as readonly string[]).includes(vendor)) {
    throw new InvalidParameterError({ parameter: "vendor", expected: vendors.join(", "), actual: JSON.stringify(vendor) })
  }
  return vendor as Vendor
}

/** Preprocesses one volume of `vendor` into a new uint8 volume, leaving the input unchanged. */
export const preprocessVolume = (volume: Volume, vendor: Vendor, params: PreprocessParams): Volume<Uint8Array> => {
  checkVendor(vendor)
  checkGeometry("volume data", volume.data.length, ...volume.dims)
  for (const listed of params.zMedianVendors ?? []) checkVendor(listed)
  if (!filteredVendors.includes(vendor)) return toUint8Volume(volume)

  // uint8 input is read in place, since nothing below writes to the source.
  let source = volume.data instanceof Uint8Array ? volume.data : toUint8(volume.data, volume.dtype)
  let outputLut: Uint8Array | undefined
  if (params.referenceHistogram !== null) {
    const histogram = histogram256(source)
    const lut = matchHistogramLut(histogram, params.referenceHistogram)
    // Medians commute with a non-decreasing map (the median of mapped values is the mapped
    // median), so the lookup table is applied to the filtered output in the same pass.
    if (isNonDecreasingOn(lut, histogram)) {
      outputLut = lut
    } else {
      // NOTE: not reached in tests. Truncated CDF interpolation is non-decreasing, and this
      // branch only guards against a float rounding case that would break that.
      source = source === volume.data ? source.slice() : source
      applyLut(source, lut)
    }
  }

  const [width, height, slices] = volume.dims
  const sliceVoxels = width * height
  const useZMedian = (params.zMedianVendors ?? defaultZMedianVendors).includes(vendor)
  const output = new Uint8Array(source.length)
  const zMedian = new Uint8Array(sliceVoxels)
  const sliceAt = (z: number): Uint8Array => source.subarray(z * sliceVoxels, (z + 1) * sliceVoxels)
  for (let z = 0; z < slices; z++) {
    let slice = sliceAt(z)
    if (useZMedian && z > 0 && z < slices - 1) {
      zMedianSlice(sliceAt(z - 1), slice, sliceAt(z + 1), zMedian)
      slice = zMedian
    }
    median3x3(slice, output.subarray(z * sliceVoxels, (z + 1) * sliceVoxels), width, height, outputLut)
  }
  return { dims: volume.dims, spacingMm: volume.spacingMm, dtype: "uint8", data: output }
}

export type { SliceLabelSummary } from "../volume/labels.ts"

/**
 * Summarises each B-scan of a label volume for the per-slice metadata: whether it has a
 * reference, and which fluid classes it contains (IRF, SRF and PED, or fluid alone under the
 * binary scheme). The summary itself is the label module's `summarizeSlices`.
 */
export const slicePresence = (labels: Volume<Uint8Array>, scheme: LabelScheme): SliceLabelSummary[] =>
  summarizeSlices(labels, scheme)
