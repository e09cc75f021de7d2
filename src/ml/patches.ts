/**
 * Training patch sampler: cuts 3-slice image patches and their label patches out of
 * preprocessed OCT volumes, inside the ROI, and serves them as stratified batches.
 *
 * Layout: a batch image `x` is Float32Array [batch, height, width, 3] (channels fastest),
 * channel k holding B-scan z - 1 + k normalised as (v - 128) / 128, with the centre slice
 * repeated past either end of the volume. Labels `y` are Uint8Array [batch, height, width]
 * at the patch (model input) size, taken from the centre B-scan. `centerCrop` cuts them to
 * the model output size.
 *
 * Sampling, per labelled B-scan: `centredPerSlice` patches are centred on the vertical
 * middle of the ROI in random ROI columns. Their centre row is jittered by up to `jitterPx`
 * and kept inside the column's ROI run. Then round(centredPerSlice x randomFraction) more
 * are centred on uniformly random ROI pixels. A patch covers patchHeight x heightScale source rows and
 * patchWidth source columns, where heightScale = REFERENCE_AXIAL_SPACING_MM / axial
 * spacing, so every patch spans the same depth in mm. It is resampled to the patch size
 * with nearest neighbour through the augmentation (flip, rotation), reading the source
 * slice directly, so rotated corners hold real image content. Source pixels beyond the
 * image edge repeat the edge pixel (replicated border).
 *
 * A B-scan is labelled when none of its label voxels is 255; other B-scans are never
 * patch centres and never supply labels, but may still appear as the side channels.
 */
import * as Data from "effect/Data"
import { UNLABELLED } from "../volume/labels.ts"
import type { Volume } from "../volume/volume.ts"
import { type AugmentOptions, defaultAugmentOptions, drawAugmentation, offsetCoefficients } from "./augment.ts"
import { makeRng, type Rng, type RngState } from "./rng.ts"

/** Axial spacing (mm per pixel along y) at which a patch is cut with no height scaling. */
export const REFERENCE_AXIAL_SPACING_MM = 0.0039

/** Source rows per patch row: REFERENCE_AXIAL_SPACING_MM / axialSpacingMm. */
export const heightScaleOf = (axialSpacingMm: number): number => REFERENCE_AXIAL_SPACING_MM / axialSpacingMm

export class SamplerShapeMismatchError extends Data.TaggedError("SamplerShapeMismatchError")<{
  readonly caseId: string
  readonly volume: "roi" | "labels"
  readonly expected: readonly [number, number, number]
  readonly actual: readonly [number, number, number]
}> {
  override get message(): string {
    return (
      `case ${this.caseId}: ${this.volume} volume has dims [${this.actual.join(", ")}] but the image has ` +
      `[${this.expected.join(", ")}]; pass the ${this.volume} volume computed from this image`
    )
  }
}

export class SamplerDtypeError extends Data.TaggedError("SamplerDtypeError")<{
  readonly caseId: string
  readonly volume: "image" | "roi" | "labels"
  readonly expected: "uint8"
  readonly actual: string
}> {
  override get message(): string {
    return (
      `case ${this.caseId}: ${this.volume} volume has element type ${this.actual}, expected ${this.expected}; ` +
      `run the preprocess and roi stages first, which write uint8 volumes`
    )
  }
}

export class InvalidAxialSpacingError extends Data.TaggedError("InvalidAxialSpacingError")<{
  readonly caseId: string
  readonly actual: number
}> {
  override get message(): string {
    return (
      `case ${this.caseId}: axial spacing ${this.actual} mm is invalid, expected a finite value > 0; ` +
      `fix ElementSpacing (second value) in the volume header`
    )
  }
}

export class NoSampleableSlicesError extends Data.TaggedError("NoSampleableSlicesError")<{
  readonly caseIds: ReadonlyArray<string>
  readonly reason: string
}> {
  override get message(): string {
    return (
      `no patches can be sampled from cases [${this.caseIds.join(", ")}]: ${this.reason}; ` +
      `check that the label volumes have labelled B-scans (not 255) and the ROI masks are not empty`
    )
  }
}

export class SamplerLabelError extends Data.TaggedError("SamplerLabelError")<{
  readonly caseId: string
  readonly z: number
  readonly expected: string
  readonly actual: number
}> {
  override get message(): string {
    return (
      `case ${this.caseId}: B-scan ${this.z} has label ${this.actual}, expected ${this.expected}; ` +
      `check the label volume and the sampler's classCount (4 for RETOUCH labels, 2 for binary)`
    )
  }
}

export class InvalidPatchOptionError extends Data.TaggedError("InvalidPatchOptionError")<{
  readonly option: string
  readonly expected: string
  readonly actual: unknown
}> {
  override get message(): string {
    return `patch sampler option ${this.option} = ${String(this.actual)} is invalid, expected ${this.expected}`
  }
}

export class InvalidSamplerStateError extends Data.TaggedError("InvalidSamplerStateError")<{
  readonly field: string
  readonly expected: string
  readonly actual: unknown
}> {
  override get message(): string {
    return (
      `sampler state field ${this.field} is ${JSON.stringify(this.actual)}, expected ${this.expected}; ` +
      `resume only with a state saved by a sampler built from the same cases and options`
    )
  }
}

/** One training case; all three volumes share dims, and the sampler reads only uint8 data. */
export interface SamplerCase {
  readonly id: string
  readonly vendor: string
  /** Preprocessed intensities 0..255. */
  readonly image: Volume
  /** ROI mask, non-zero inside. */
  readonly roi: Volume
  /** Labels 0..3 (RETOUCH) or 0/1 (binary); 255 marks a B-scan without reference. */
  readonly labels: Volume
}

export type Stratification = "alternate" | "none"

export interface PatchSamplerOptions {
  readonly seed: number
  readonly batchSize: number
  /** Classes of the label scheme, background included: labels of labelled B-scans are below it. */
  readonly classCount: number
  readonly patchHeight: number
  readonly patchWidth: number
  /**
   * Size of the centre region the loss is computed on (the model output). A patch counts
   * as fluid when that region contains a label > 0. Defaults to the patch size.
   */
  readonly outputHeight?: number
  readonly outputWidth?: number
  readonly centredPerSlice: number
  readonly randomFraction: number
  readonly jitterPx: number
  readonly augment: AugmentOptions
  /** Probability that a patch without fluid is discarded. */
  readonly emptyDropProbability: number
  /**
   * "alternate": even batch slots take a fluid patch and odd slots a fluid-free one. When a
   * full pass over the slices supplies no patch of a kind, the other kind fills its slots.
   * "none": patches in the order they were drawn.
   */
  readonly stratify: Stratification
  /** Queued patches per kind beyond which new ones of that kind are discarded. */
  readonly maxPendingPerKind: number
}

export const defaultPatchSamplerOptions: PatchSamplerOptions = {
  seed: 0,
  batchSize: 8,
  classCount: 4,
  patchHeight: 256,
  patchWidth: 128,
  centredPerSlice: 12,
  randomFraction: 0.2,
  jitterPx: 10,
  augment: defaultAugmentOptions,
  emptyDropProbability: 0.75,
  stratify: "alternate",
  maxPendingPerKind: 1024
}

/** Origin and augmentation of one patch, small and JSON-serialisable. */
export interface PatchDescriptor {
  readonly caseIndex: number
  /** B-scan index of the centre slice. */
  readonly z: number
  /** Centre pixel row (depth) and column in the source B-scan; always an ROI pixel. */
  readonly y: number
  readonly x: number
  readonly flip: boolean
  readonly angleDeg: number
  readonly hasFluid: boolean
  /** Draw order, used by the "none" stratification. */
  readonly serial: number
}

export interface PatchBatch {
  readonly batchSize: number
  readonly height: number
  readonly width: number
  /** [batchSize, height, width, 3], normalised (v - 128) / 128. */
  readonly x: Float32Array
  /** [batchSize, height, width] labels at the patch size. */
  readonly y: Uint8Array
  /** [batchSize]: 1 when the patch's output region contains fluid, else 0. */
  readonly presence: Uint8Array
  readonly descriptors: ReadonlyArray<PatchDescriptor>
}

/** Everything needed to resume sampling at the same draw; plain JSON. */
export interface PatchSamplerState {
  readonly version: 1
  readonly seed: number
  readonly sliceCount: number
  readonly epoch: number
  readonly cursor: number
  readonly serial: number
  readonly rng: RngState
  readonly pendingFluid: ReadonlyArray<PatchDescriptor>
  readonly pendingEmpty: ReadonlyArray<PatchDescriptor>
  /** Kinds that a full pass over the slices did not supply; stratification stops asking for them. */
  readonly fluidUnavailable: boolean
  readonly emptyUnavailable: boolean
}

export interface PatchSampler {
  readonly nextBatch: () => PatchBatch
  readonly getState: () => PatchSamplerState
  /** Restores a state from `getState`, typically parsed from JSON, after checking its shape. */
  readonly setState: (state: unknown) => void
  /** Labelled B-scans with a non-empty ROI, over all cases. */
  readonly sliceCount: number
  /** Expected patches drawn per pass over the slices, before dropping fluid-free ones. */
  readonly drawsPerEpoch: number
  readonly epoch: () => number
}

/** Per-column ROI runs of one B-scan: first and last ROI row, and ROI pixel count. */
interface SliceRoi {
  readonly caseIndex: number
  readonly z: number
  readonly columns: Int32Array
  readonly first: Int32Array
  readonly last: Int32Array
  readonly counts: Int32Array
  readonly total: number
}

/**
 * Cuts `labels` [n, h, w] to the centred [n, outH, outW] window, with the top-left corner
 * at (floor((h - outH) / 2), floor((w - outW) / 2)), the crop a valid-convolution network
 * applies to its input.
 */
export const centerCrop = (labels: Uint8Array, h: number, w: number, outH: number, outW: number): Uint8Array => {
  if (outH > h || outW > w || labels.length % (h * w) !== 0) {
    throw new InvalidPatchOptionError({
      option: "centerCrop size",
      expected: `outH <= ${h}, outW <= ${w} and a length that is a multiple of ${h * w}`,
      actual: `${outH} x ${outW} from length ${labels.length}`
    })
  }
  const count = labels.length / (h * w)
  const top = Math.floor((h - outH) / 2)
  const left = Math.floor((w - outW) / 2)
  const cropped = new Uint8Array(count * outH * outW)
  for (let n = 0; n < count; n++) {
    for (let r = 0; r < outH; r++) {
      const source = n * h * w + (top + r) * w + left
      cropped.set(labels.subarray(source, source + outW), (n * outH + r) * outW)
    }
  }
  return cropped
}

const validateOptions = (options: PatchSamplerOptions): void => {
  const positiveIntegers = ["batchSize", "classCount", "patchHeight", "patchWidth", "maxPendingPerKind"] as const
  for (const name of positiveIntegers) {
    const value = options[name]
    if (!Number.isInteger(value) || value < 1) {
      throw new InvalidPatchOptionError({ option: name, expected: "an integer >= 1", actual: value })
    }
  }
  if (!Number.isInteger(options.centredPerSlice) || options.centredPerSlice < 0) {
    throw new InvalidPatchOptionError({
      option: "centredPerSlice",
      expected: "an integer >= 0",
      actual: options.centredPerSlice
    })
  }
  const probabilities = {
    randomFraction: options.randomFraction,
    emptyDropProbability: options.emptyDropProbability,
    "augment.flipProbability": options.augment.flipProbability,
    "augment.rotateProbability": options.augment.rotateProbability
  }
  for (const [name, value] of Object.entries(probabilities)) {
    if (!(value >= 0 && value <= 1)) {
      throw new InvalidPatchOptionError({ option: name, expected: "a number in [0, 1]", actual: value })
    }
  }
  if (!(options.jitterPx >= 0) || !Number.isInteger(options.jitterPx)) {
    throw new InvalidPatchOptionError({ option: "jitterPx", expected: "an integer >= 0", actual: options.jitterPx })
  }
  const outputHeight = options.outputHeight ?? options.patchHeight
  const outputWidth = options.outputWidth ?? options.patchWidth
  if (outputHeight > options.patchHeight || outputWidth > options.patchWidth || outputHeight < 1 || outputWidth < 1) {
    throw new InvalidPatchOptionError({
      option: "outputHeight x outputWidth",
      expected: `between 1 x 1 and the patch size ${options.patchHeight} x ${options.patchWidth}`,
      actual: `${outputHeight} x ${outputWidth}`
    })
  }
  if (options.stratify !== "alternate" && options.stratify !== "none") {
    throw new InvalidPatchOptionError({ option: "stratify", expected: '"alternate" or "none"', actual: options.stratify })
  }
}

const validateCase = (sample: SamplerCase): void => {
  for (const name of ["image", "roi", "labels"] as const) {
    if (sample[name].dtype !== "uint8") {
      throw new SamplerDtypeError({ caseId: sample.id, volume: name, expected: "uint8", actual: sample[name].dtype })
    }
  }
  for (const name of ["roi", "labels"] as const) {
    const dims = sample[name].dims
    if (dims.some((size, axis) => size !== sample.image.dims[axis])) {
      throw new SamplerShapeMismatchError({ caseId: sample.id, volume: name, expected: sample.image.dims, actual: dims })
    }
  }
  const axial = sample.image.spacingMm[1]
  if (!Number.isFinite(axial) || axial <= 0) throw new InvalidAxialSpacingError({ caseId: sample.id, actual: axial })
}

/** True when no voxel of B-scan `z` is UNLABELLED. */
export const isLabelledSlice = (labels: Volume, z: number): boolean => {
  const size = labels.dims[0] * labels.dims[1]
  const data = labels.data
  for (let i = z * size; i < (z + 1) * size; i++) if (data[i] === UNLABELLED) return false
  return true
}

/** Raises SamplerLabelError when a label of labelled B-scan `z` is not below `classCount`. */
const checkSliceLabels = (sample: SamplerCase, z: number, classCount: number): void => {
  const size = sample.labels.dims[0] * sample.labels.dims[1]
  const data = sample.labels.data
  for (let i = z * size; i < (z + 1) * size; i++) {
    if (data[i] >= classCount) {
      throw new SamplerLabelError({ caseId: sample.id, z, expected: `0..${classCount - 1}`, actual: data[i] })
    }
  }
}

const sliceRoiOf = (sample: SamplerCase, caseIndex: number, z: number): SliceRoi | undefined => {
  const [width, height] = sample.roi.dims
  const roi = sample.roi.data
  const first = new Int32Array(width).fill(-1)
  const last = new Int32Array(width).fill(-1)
  const counts = new Int32Array(width)
  const sliceOffset = z * width * height
  for (let y = 0; y < height; y++) {
    const rowOffset = sliceOffset + y * width
    for (let x = 0; x < width; x++) {
      if (roi[rowOffset + x] === 0) continue
      if (first[x] < 0) first[x] = y
      last[x] = y
      counts[x] += 1
    }
  }
  const columns: Array<number> = []
  let total = 0
  for (let x = 0; x < width; x++) {
    if (counts[x] > 0) columns.push(x)
    total += counts[x]
  }
  if (total === 0) return undefined
  return { caseIndex, z, columns: Int32Array.from(columns), first, last, counts, total }
}

/** Picks the k-th ROI pixel (row-major within each column, columns in order) of a slice. */
const roiPixelAt = (sample: SamplerCase, slice: SliceRoi, k: number): readonly [number, number] => {
  const [width, height] = sample.roi.dims
  let remaining = k
  for (const x of slice.columns) {
    if (remaining >= slice.counts[x]) {
      remaining -= slice.counts[x]
      continue
    }
    for (let y = slice.first[x]; y <= slice.last[x]; y++) {
      if (sample.roi.data[slice.z * width * height + y * width + x] === 0) continue
      if (remaining === 0) return [y, x]
      remaining -= 1
    }
  }
  throw new RangeError(`ROI pixel ${k} is out of range for a slice with ${slice.total} ROI pixels`)
}

/**
 * Computes, for every patch pixel, the index (y * width + x) of the source pixel it copies
 * from a B-scan of `width` x `height`, with rows and columns clamped to the image.
 */
export const patchSourceIndices = (
  descriptor: Pick<PatchDescriptor, "y" | "x" | "flip" | "angleDeg">,
  image: { readonly width: number; readonly height: number; readonly heightScale: number },
  patchHeight: number,
  patchWidth: number
): Int32Array => {
  const k = offsetCoefficients(patchHeight, patchWidth, descriptor)
  const indices = new Int32Array(patchHeight * patchWidth)
  // The patch centre (between the two middle rows of an even height) sits on the top-left
  // corner of the centre pixel, so the unscaled window is rows [y - h / 2, y + h / 2).
  const scale = image.heightScale
  for (let r = 0; r < patchHeight; r++) {
    for (let c = 0; c < patchWidth; c++) {
      const dy = k.rowFromR * r + k.rowFromC * c + k.row0
      const dx = k.columnFromR * r + k.columnFromC * c + k.column0
      // Replicated border: clamp to the first and last row and column.
      const y = Math.min(image.height - 1, Math.max(0, Math.floor(descriptor.y + dy * scale)))
      const x = Math.min(image.width - 1, Math.max(0, Math.floor(descriptor.x + dx)))
      indices[r * patchWidth + c] = y * image.width + x
    }
  }
  return indices
}

/** Writes the patch of `descriptor` into `x` and `y` at batch slot `slot`. */
const renderPatch = (
  sample: SamplerCase,
  descriptor: PatchDescriptor,
  options: PatchSamplerOptions,
  x: Float32Array | undefined,
  y: Uint8Array,
  slot: number
): void => {
  const [width, height, depth] = sample.image.dims
  const sliceSize = width * height
  const pixels = options.patchHeight * options.patchWidth
  const indices = patchSourceIndices(
    descriptor,
    { width, height, heightScale: heightScaleOf(sample.image.spacingMm[1]) },
    options.patchHeight,
    options.patchWidth
  )
  const labelOffset = descriptor.z * sliceSize
  for (let p = 0; p < pixels; p++) y[slot * pixels + p] = sample.labels.data[labelOffset + indices[p]]
  if (x === undefined) return

  for (let k = 0; k < 3; k++) {
    // The centre slice replaces a neighbour beyond either end of the volume.
    const neighbour = descriptor.z - 1 + k
    const z = neighbour < 0 || neighbour >= depth ? descriptor.z : neighbour
    const offset = z * sliceSize
    for (let p = 0; p < pixels; p++) {
      x[(slot * pixels + p) * 3 + k] = (sample.image.data[offset + indices[p]] - 128) / 128
    }
  }
}

const hasFluidInOutput = (labels: Uint8Array, options: PatchSamplerOptions): boolean => {
  const outputHeight = options.outputHeight ?? options.patchHeight
  const outputWidth = options.outputWidth ?? options.patchWidth
  const cropped = centerCrop(labels, options.patchHeight, options.patchWidth, outputHeight, outputWidth)
  return cropped.some((label) => label > 0)
}

const isDescriptor = (value: unknown): value is PatchDescriptor => {
  if (typeof value !== "object" || value === null) return false
  const record = value as Record<string, unknown>
  const integers = ["caseIndex", "z", "y", "x", "serial"].every((key) => Number.isInteger(record[key]))
  return integers && typeof record.flip === "boolean" && typeof record.hasFluid === "boolean" && Number.isFinite(record.angleDeg)
}

/** Checks that `input` has the fields and types of a `PatchSamplerState`. */
const parseState = (input: unknown): PatchSamplerState => {
  if (typeof input !== "object" || input === null) {
    throw new InvalidSamplerStateError({ field: "(state)", expected: "an object from getState()", actual: input })
  }
  const record = input as Record<string, unknown>
  const rng = record.rng
  const validRng = Array.isArray(rng) && rng.length === 4 && rng.every((word) => Number.isInteger(word) && word >= 0 && word < 2 ** 32)
  if (!validRng) throw new InvalidSamplerStateError({ field: "rng", expected: "four uint32 words", actual: rng })
  for (const field of ["pendingFluid", "pendingEmpty"] as const) {
    const queue = record[field]
    if (!Array.isArray(queue) || !queue.every(isDescriptor)) {
      throw new InvalidSamplerStateError({ field, expected: "an array of patch descriptors", actual: queue })
    }
  }
  if (!Number.isInteger(record.serial)) {
    throw new InvalidSamplerStateError({ field: "serial", expected: "an integer", actual: record.serial })
  }
  return input as PatchSamplerState
}

/** Shuffles 0..count-1 with a generator seeded from the sampler seed and the epoch. */
const epochOrder = (seed: number, epoch: number, count: number): Int32Array => {
  const rng = makeRng((seed ^ Math.imul(epoch + 1, 0x9e3779b9)) >>> 0)
  const order = new Int32Array(count)
  for (let i = 0; i < count; i++) order[i] = i
  for (let i = count - 1; i > 0; i--) {
    const j = rng.int(0, i)
    const swap = order[i]
    order[i] = order[j]
    order[j] = swap
  }
  return order
}

/** Draws the patch centres of one slice: centred ones first, then random ROI pixels. */
const drawCentres = (
  sample: SamplerCase,
  slice: SliceRoi,
  options: PatchSamplerOptions,
  rng: Rng
): Array<readonly [number, number]> => {
  const centres: Array<readonly [number, number]> = []
  for (let i = 0; i < options.centredPerSlice; i++) {
    const x = slice.columns[rng.int(0, slice.columns.length - 1)]
    const middle = Math.round((slice.first[x] + slice.last[x]) / 2)
    const jittered = middle + rng.int(-options.jitterPx, options.jitterPx)
    let y = Math.min(slice.last[x], Math.max(slice.first[x], jittered))
    // A column's ROI may have gaps; move to the nearest ROI row at or above the jittered one.
    const base = slice.z * sample.roi.dims[0] * sample.roi.dims[1]
    while (sample.roi.data[base + y * sample.roi.dims[0] + x] === 0) y -= 1
    centres.push([y, x])
  }
  const randomCount = Math.round(options.centredPerSlice * options.randomFraction)
  for (let i = 0; i < randomCount; i++) centres.push(roiPixelAt(sample, slice, rng.int(0, slice.total - 1)))
  return centres
}

/**
 * Builds a sampler over `cases`. Scans every ROI and label volume once, up front, to find
 * the labelled B-scans with ROI pixels.
 */
export const makePatchSampler = (
  cases: ReadonlyArray<SamplerCase>,
  overrides: Partial<PatchSamplerOptions> = {}
): PatchSampler => {
  const options: PatchSamplerOptions = { ...defaultPatchSamplerOptions, ...overrides }
  validateOptions(options)
  cases.forEach(validateCase)

  const slices: Array<SliceRoi> = []
  cases.forEach((sample, caseIndex) => {
    for (let z = 0; z < sample.image.dims[2]; z++) {
      if (!isLabelledSlice(sample.labels, z)) continue
      checkSliceLabels(sample, z, options.classCount)
      const slice = sliceRoiOf(sample, caseIndex, z)
      if (slice !== undefined) slices.push(slice)
    }
  })
  if (slices.length === 0) {
    throw new NoSampleableSlicesError({
      caseIds: cases.map((sample) => sample.id),
      reason: "no labelled B-scan has an ROI pixel"
    })
  }

  const rng = makeRng(options.seed)
  let epoch = 0
  let cursor = 0
  let serial = 0
  let order = epochOrder(options.seed, epoch, slices.length)
  let pendingFluid: Array<PatchDescriptor> = []
  let pendingEmpty: Array<PatchDescriptor> = []
  let fluidUnavailable = false
  let emptyUnavailable = false
  const labelScratch = new Uint8Array(options.patchHeight * options.patchWidth)

  /** Draws the patches of the next slice in the epoch order into the queues. */
  const drawNextSlice = (): void => {
    const slice = slices[order[cursor]]
    const sample = cases[slice.caseIndex]
    for (const [y, x] of drawCentres(sample, slice, options, rng)) {
      const augmentation = drawAugmentation(rng, options.augment)
      const draft = { caseIndex: slice.caseIndex, z: slice.z, y, x, ...augmentation, hasFluid: false, serial }
      renderPatch(sample, draft, options, undefined, labelScratch, 0)
      const hasFluid = hasFluidInOutput(labelScratch, options)
      // One draw per patch whatever its kind, so the sequence does not depend on the labels.
      const dropped = rng.bernoulli(options.emptyDropProbability)
      if (!hasFluid && dropped) continue
      const queue = hasFluid ? pendingFluid : pendingEmpty
      if (queue.length >= options.maxPendingPerKind) continue
      queue.push({ ...draft, hasFluid })
      serial += 1
    }
    cursor += 1
    if (cursor === slices.length) {
      epoch += 1
      cursor = 0
      order = epochOrder(options.seed, epoch, slices.length)
    }
  }

  /** Draws slices until `queue()` is non-empty or `limit` slices were drawn; returns success. */
  const fill = (queue: () => Array<PatchDescriptor>, limit: number): boolean => {
    for (let drawn = 0; queue().length === 0 && drawn < limit; drawn++) drawNextSlice()
    return queue().length > 0
  }

  const takeAny = (): PatchDescriptor => {
    const either = () => (pendingFluid.length > 0 ? pendingFluid : pendingEmpty)
    // Fluid patches are never dropped and fluid-free ones survive with 1 - emptyDropProbability,
    // so only a drop probability of (nearly) 1 on fluid-free data can exhaust these passes.
    const passes = options.emptyDropProbability >= 1 ? 10 : 1000
    if (!fill(either, passes * slices.length)) {
      throw new NoSampleableSlicesError({
        caseIds: cases.map((sample) => sample.id),
        reason:
          `${passes} passes over the slices kept no patch: none held fluid in the output region ` +
          `and emptyDropProbability ${options.emptyDropProbability} dropped every other one`
      })
    }
    if (pendingFluid.length === 0) return pendingEmpty.shift()!
    if (pendingEmpty.length === 0) return pendingFluid.shift()!
    return pendingFluid[0].serial < pendingEmpty[0].serial ? pendingFluid.shift()! : pendingEmpty.shift()!
  }

  const takeKind = (wantFluid: boolean): PatchDescriptor => {
    const wanted = () => (wantFluid ? pendingFluid : pendingEmpty)
    const unavailable = wantFluid ? fluidUnavailable : emptyUnavailable
    if (!unavailable && fill(wanted, slices.length)) return wanted().shift()!
    if (wanted().length > 0) return wanted().shift()!
    if (wantFluid) fluidUnavailable = true
    else emptyUnavailable = true
    return takeAny()
  }

  const nextBatch = (): PatchBatch => {
    const { batchSize, patchHeight, patchWidth } = options
    const pixels = patchHeight * patchWidth
    const x = new Float32Array(batchSize * pixels * 3)
    const y = new Uint8Array(batchSize * pixels)
    const presence = new Uint8Array(batchSize)
    const descriptors: Array<PatchDescriptor> = []
    for (let slot = 0; slot < batchSize; slot++) {
      const descriptor = options.stratify === "alternate" ? takeKind(slot % 2 === 0) : takeAny()
      renderPatch(cases[descriptor.caseIndex], descriptor, options, x, y, slot)
      presence[slot] = descriptor.hasFluid ? 1 : 0
      descriptors.push(descriptor)
    }
    return { batchSize, height: patchHeight, width: patchWidth, x, y, presence, descriptors }
  }

  const getState = (): PatchSamplerState => ({
    version: 1,
    seed: options.seed,
    sliceCount: slices.length,
    epoch,
    cursor,
    serial,
    rng: rng.getState(),
    pendingFluid: pendingFluid.map((descriptor) => ({ ...descriptor })),
    pendingEmpty: pendingEmpty.map((descriptor) => ({ ...descriptor })),
    fluidUnavailable,
    emptyUnavailable
  })

  const setState = (input: unknown): void => {
    const state = parseState(input)
    const checks: ReadonlyArray<readonly [string, boolean, string]> = [
      ["version", state.version === 1, "1"],
      ["seed", state.seed === options.seed, String(options.seed)],
      ["sliceCount", state.sliceCount === slices.length, String(slices.length)],
      ["epoch", Number.isInteger(state.epoch) && state.epoch >= 0, "an integer >= 0"],
      ["cursor", Number.isInteger(state.cursor) && state.cursor >= 0 && state.cursor < slices.length, `0..${slices.length - 1}`]
    ]
    for (const [field, valid, expected] of checks) {
      if (!valid) throw new InvalidSamplerStateError({ field, expected, actual: state[field as keyof PatchSamplerState] })
    }

    for (const descriptor of [...state.pendingFluid, ...state.pendingEmpty]) {
      const sample = cases[descriptor.caseIndex]
      if (sample === undefined || descriptor.z < 0 || descriptor.z >= sample.image.dims[2]) {
        throw new InvalidSamplerStateError({
          field: "pending",
          expected: `descriptors of cases 0..${cases.length - 1}`,
          actual: descriptor
        })
      }
    }

    rng.setState(state.rng)
    epoch = state.epoch
    cursor = state.cursor
    serial = state.serial
    order = epochOrder(options.seed, epoch, slices.length)
    pendingFluid = state.pendingFluid.map((descriptor) => ({ ...descriptor }))
    pendingEmpty = state.pendingEmpty.map((descriptor) => ({ ...descriptor }))
    fluidUnavailable = state.fluidUnavailable === true
    emptyUnavailable = state.emptyUnavailable === true
  }

  const randomCount = Math.round(options.centredPerSlice * options.randomFraction)
  return {
    nextBatch,
    getState,
    setState,
    sliceCount: slices.length,
    drawsPerEpoch: slices.length * (options.centredPerSlice + randomCount),
    epoch: () => epoch
  }
}
