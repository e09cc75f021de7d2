/**
 * The roi stage's per-B-scan computation: a mask (0/1) of the retina region that training
 * patches are drawn from. B-scans are row-major 8-bit images (x fastest, then y = depth).
 *
 * 1. `x = v / 128 - 1` in float32, then to uint8 as scikit-image 0.19.3 converts floats for
 *    rank filters: `clip(rint(x * 255), 0, 255)`, round half to even. Every v < 128 gives 0.
 * 2. Local entropy over a disk of `entropyRadius` (see entropy.ts), divided by
 *    (slice maximum + 1e-16), thresholded without computing every exact value (see
 *    entropy-threshold.ts).
 * 3. Mask = normalised entropy > `threshold`, OR the slice's fluid (label > 0, except
 *    UNLABELLED = 255).
 * 4. Binary closing with a disk of `closingRadius` (see morphology.ts); it never removes a pixel.
 * 5. In every column, every pixel from the first to the last mask pixel is set.
 */
import type { Volume } from "../volume/volume.ts"
import { thresholdEntropy } from "./entropy-threshold.ts"
import { checkGeometry, InvalidParameterError, InvalidShapeError } from "./errors.ts"
import { closeDisk } from "./morphology.ts"
import { ScratchArrays } from "./scratch.ts"

/** Label value of every voxel of a B-scan that has no reference. */
const UNLABELLED = 255

export interface RoiParams {
  /** Radius in pixels of the entropy disk. */
  readonly entropyRadius: number
  /** Normalised entropy must exceed this (strictly) for a pixel to enter the mask. */
  readonly threshold: number
  /** Radius in pixels of the closing disk. */
  readonly closingRadius: number
}

export const defaultRoiParams: RoiParams = { entropyRadius: 15, threshold: 0.01, closingRadius: 55 }

/** Round half to even, as numpy `rint` does. */
const roundHalfToEven = (value: number): number => {
  const floor = Math.floor(value)
  const fraction = value - floor
  if (fraction > 0.5) return floor + 1
  if (fraction < 0.5) return floor
  return floor % 2 === 0 ? floor : floor + 1
}

/** Step 1 as a lookup table over the 256 input values, with all arithmetic in float32. */
export const rankInputLut: Uint8Array = (() => {
  const lut = new Uint8Array(256)
  for (let v = 0; v < 256; v++) {
    const x = Math.fround(Math.fround(v / 128) - 1)
    const scaled = Math.fround(x * 255)
    lut[v] = Math.min(255, Math.max(0, roundHalfToEven(scaled)))
  }
  return lut
})()

const checkParams = (params: RoiParams): void => {
  for (const name of ["entropyRadius", "closingRadius"] as const) {
    const radius = params[name]
    if (!Number.isInteger(radius) || radius < 0) {
      throw new InvalidParameterError({ parameter: name, expected: "an integer >= 0", actual: String(radius) })
    }
  }
  if (!Number.isFinite(params.threshold)) {
    throw new InvalidParameterError({ parameter: "threshold", expected: "a finite number", actual: String(params.threshold) })
  }
}

/**
 * Computes the ROI mask of one B-scan. `fluid`, when given, is the B-scan's label slice in
 * the same layout, and its voxels with 0 < label < 255 are always in the mask.
 */
export const roiSlice = (
  pixels: Uint8Array,
  width: number,
  height: number,
  fluid?: Uint8Array,
  params: RoiParams = defaultRoiParams
): Uint8Array => computeRoi(pixels, width, height, fluid, params, new Uint8Array(pixels.length), new ScratchArrays())

const computeRoi = (
  pixels: Uint8Array,
  width: number,
  height: number,
  fluid: Uint8Array | undefined,
  params: RoiParams,
  out: Uint8Array,
  scratch: ScratchArrays
): Uint8Array => {
  checkGeometry("roi pixels", pixels.length, width, height)
  if (fluid !== undefined) checkGeometry("roi fluid labels", fluid.length, width, height)
  checkParams(params)

  const rankInput = scratch.uint8("rank input", pixels.length)
  for (let i = 0; i < pixels.length; i++) rankInput[i] = rankInputLut[pixels[i]]
  const mask = scratch.uint8("thresholded", pixels.length)
  thresholdEntropy(rankInput, width, height, params.entropyRadius, params.threshold, mask, scratch)
  if (fluid !== undefined) {
    for (let i = 0; i < mask.length; i++) {
      const label = fluid[i]
      if (label > 0 && label !== UNLABELLED) mask[i] = 1
    }
  }

  const closed = closeDisk(mask, width, height, params.closingRadius, out, scratch)
  fillColumns(closed, width, height)
  return closed
}

/** Sets, in every column, each pixel between the column's first and last set pixel. */
export const fillColumns = (mask: Uint8Array, width: number, height: number): void => {
  for (let x = 0; x < width; x++) {
    let first = -1
    let last = -1
    for (let y = 0; y < height; y++) {
      if (mask[y * width + x] !== 0) {
        if (first < 0) first = y
        last = y
      }
    }
    for (let y = first + 1; y < last; y++) mask[y * width + x] = 1
  }
}

/**
 * Computes the ROI mask of every B-scan of a preprocessed uint8 volume. `labels`, when
 * given, must have the same dims. Returns a uint8 (0/1) volume with the input's spacing.
 */
export const roiVolume = (
  volume: Volume<Uint8Array>,
  labels?: Volume<Uint8Array>,
  params: RoiParams = defaultRoiParams
): Volume<Uint8Array> => {
  const [width, height, slices] = volume.dims
  checkGeometry("roi volume", volume.data.length, width, height, slices)
  if (labels !== undefined && labels.dims.join("x") !== volume.dims.join("x")) {
    throw new InvalidShapeError({
      argument: "roi labels",
      expected: `dims ${volume.dims.join(" x ")} (the volume's)`,
      actual: `dims ${labels.dims.join(" x ")}`
    })
  }
  const sliceVoxels = width * height
  const out = new Uint8Array(volume.data.length)
  // One set of temporaries serves every B-scan, so memory does not grow with garbage.
  const scratch = new ScratchArrays()
  for (let z = 0; z < slices; z++) {
    const start = z * sliceVoxels
    const end = start + sliceVoxels
    computeRoi(volume.data.subarray(start, end), width, height, labels?.data.subarray(start, end), params, out.subarray(start, end), scratch)
  }
  return { dims: volume.dims, spacingMm: volume.spacingMm, dtype: "uint8", data: out }
}
