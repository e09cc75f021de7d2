/**
 * Tiled inference over whole B-scans and volumes with any model that maps NHWC input
 * tiles to smaller NHWC softmax tiles (valid convolutions).
 *
 * Per B-scan z of a volume (x fastest, then y = depth, then z):
 * 1. The three channels are B-scans z - 1, z, z + 1 (the centre repeats past either end),
 *    normalised (v - 128) / 128, as in training.
 * 2. Rows are resampled with nearest neighbour to round(height / heightScale) rows, where
 *    heightScale = REFERENCE_AXIAL_SPACING_MM / axial spacing, so a tile covers the depth
 *    in mm that a training patch covered.
 * 3. Output tiles of outputHeight x outputWidth start every (output size - overlap) pixels,
 *    and the last tile is flush with the image edge, so every pixel gets a prediction. The
 *    input tile around an output tile extends by the network's margin, which is
 *    floor((input - output) / 2) on the top and left. Input pixels beyond the image repeat
 *    the edge pixel (replicated border, as in the patch sampler).
 * 4. Softmax probabilities are averaged where output tiles overlap, and the argmax is the
 *    label. Rows are resampled back to the input height with nearest neighbour.
 * The label volume has the input's dims and spacing. Per B-scan detection scores hold
 * the maximum probability of each class (column c) and, in column 0, the maximum of
 * 1 - p(background).
 */
import { mkdir } from "node:fs/promises"
import { dirname } from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import type * as tfl from "@tensorflow/tfjs-layers"
import * as Data from "effect/Data"
import { heightScaleOf } from "../ml/patches.ts"
import { writeMetaImage } from "../volume/metaimage.ts"
import { writeNifti } from "../volume/nifti.ts"
import type { Volume } from "../volume/volume.ts"
import type { SliceScores } from "./metrics.ts"

/** A segmentation model reduced to its tile sizes and a batch prediction function. */
export interface Predictor {
  readonly inputHeight: number
  readonly inputWidth: number
  readonly outputHeight: number
  readonly outputWidth: number
  /** Softmax channels, background first (4 for RETOUCH labels, 2 for binary). */
  readonly classCount: number
  /** Maps x [n, inputHeight, inputWidth, 3] to probabilities [n, outputHeight, outputWidth, classCount]. */
  readonly predictBatch: (x: Float32Array) => Promise<Float32Array>
  /** predictBatch calls that can run at once (threads behind it); inferVolume keeps this many B-scans in flight. Default 1. */
  readonly concurrency?: number
}

export interface InferenceOptions {
  /**
   * Pixels shared by neighbouring output tiles, in each direction, below the output size.
   * Defaults to min(8, floor(min(outputHeight, outputWidth) / 4)).
   */
  readonly overlap?: number
  /** Tiles per predictBatch call. */
  readonly batchSize: number
  /** Source rows per tile row; defaults to REFERENCE_AXIAL_SPACING_MM / the volume's axial spacing. */
  readonly heightScale?: number
  /** Called after each B-scan with the number done and the total. */
  readonly onProgress?: (done: number, total: number) => void
  /**
   * Region of interest with the image's dims: voxels where it is 0 are labelled background
   * and left out of the detection scores. The network is trained on ROI patches only, so
   * what it predicts outside (vitreous, choroid) is not meaningful.
   */
  readonly mask?: Volume
}

export const defaultInferenceOptions: InferenceOptions = { batchSize: 8 }

const defaultOverlap = (predictor: Predictor): number =>
  Math.min(8, Math.floor(Math.min(predictor.outputHeight, predictor.outputWidth) / 4))

export interface InferenceResult {
  /** Labels 0..classCount - 1, with the input volume's dims and spacing. */
  readonly labels: Volume<Uint8Array>
  readonly scores: SliceScores
}

export class PredictorShapeError extends Data.TaggedError("PredictorShapeError")<{
  readonly field: string
  readonly expected: string
  readonly actual: number
}> {
  override get message(): string {
    return `predictor ${this.field} is ${this.actual}, expected ${this.expected}; check the model's input and output shapes`
  }
}

export class MaskShapeError extends Data.TaggedError("MaskShapeError")<{
  readonly expected: readonly number[]
  readonly actual: readonly number[]
}> {
  override get message(): string {
    return (
      `the inference mask is ${this.actual.join(" x ")} voxels but the volume is ${this.expected.join(" x ")}; ` +
      `pass the ROI mask computed from this volume`
    )
  }
}

export class PredictorOutputError extends Data.TaggedError("PredictorOutputError")<{
  readonly expected: number
  readonly actual: number
}> {
  override get message(): string {
    return (
      `predictBatch returned ${this.actual} values, expected ${this.expected} ` +
      `(tiles x outputHeight x outputWidth x classCount); the predictor's declared output size does not match the model`
    )
  }
}

export class InferenceInputError extends Data.TaggedError("InferenceInputError")<{
  readonly field: string
  readonly expected: string
  readonly actual: string
}> {
  override get message(): string {
    return `inference input ${this.field} is ${this.actual}, expected ${this.expected}`
  }
}

const validatePredictor = (predictor: Predictor): void => {
  const positive = ["inputHeight", "inputWidth", "outputHeight", "outputWidth"] as const
  for (const field of positive) {
    if (!Number.isInteger(predictor[field]) || predictor[field] < 1) {
      throw new PredictorShapeError({ field, expected: "an integer >= 1", actual: predictor[field] })
    }
  }
  if (predictor.outputHeight > predictor.inputHeight) {
    throw new PredictorShapeError({
      field: "outputHeight",
      expected: `<= inputHeight ${predictor.inputHeight}`,
      actual: predictor.outputHeight
    })
  }
  if (predictor.outputWidth > predictor.inputWidth) {
    throw new PredictorShapeError({ field: "outputWidth", expected: `<= inputWidth ${predictor.inputWidth}`, actual: predictor.outputWidth })
  }
  if (!Number.isInteger(predictor.classCount) || predictor.classCount < 2 || predictor.classCount > 255) {
    throw new PredictorShapeError({ field: "classCount", expected: "an integer in 2..255", actual: predictor.classCount })
  }
}

/** Tile start positions along an axis of `size` pixels: every `step`, the last flush with the end. */
export const tileStarts = (size: number, tile: number, step: number): Array<number> => {
  const starts: Array<number> = []
  for (let start = 0; start + tile < size; start += step) starts.push(start)
  starts.push(Math.max(0, size - tile))
  return [...new Set(starts)]
}

/** Resamples rows of a B-scan with nearest neighbour: target row r reads source row floor((r + 0.5) x from / to). */
const nearestRow = (row: number, from: number, to: number): number => Math.min(from - 1, Math.floor(((row + 0.5) * from) / to))

/** Builds the normalised 3-channel B-scan [scaledHeight, width, 3] for slice z. */
const scaledSliceInput = (image: Volume, z: number, scaledHeight: number): Float32Array => {
  const [width, height, depth] = image.dims
  const input = new Float32Array(scaledHeight * width * 3)
  for (let k = 0; k < 3; k++) {
    const neighbour = z - 1 + k
    const source = neighbour < 0 || neighbour >= depth ? z : neighbour
    const sliceOffset = source * width * height
    for (let row = 0; row < scaledHeight; row++) {
      const rowOffset = sliceOffset + nearestRow(row, height, scaledHeight) * width
      for (let x = 0; x < width; x++) input[(row * width + x) * 3 + k] = (image.data[rowOffset + x] - 128) / 128
    }
  }
  return input
}

/** Probability sums and tile counts of one scaled B-scan. */
interface SliceAccumulator {
  readonly sums: Float32Array
  readonly counts: Uint16Array
}

/**
 * Predicts one scaled B-scan [height, width, 3] and returns the averaged probabilities
 * [height, width, classCount].
 */
export const predictScaledSlice = async (
  input: Float32Array,
  height: number,
  width: number,
  predictor: Predictor,
  options: InferenceOptions & { readonly overlap: number }
): Promise<Float32Array> => {
  const { inputHeight, inputWidth, outputHeight, outputWidth, classCount } = predictor
  const top = Math.floor((inputHeight - outputHeight) / 2)
  const left = Math.floor((inputWidth - outputWidth) / 2)
  const rows = tileStarts(height, outputHeight, outputHeight - options.overlap)
  const columns = tileStarts(width, outputWidth, outputWidth - options.overlap)
  const tiles = rows.flatMap((row) => columns.map((column) => [row, column] as const))
  const accumulator: SliceAccumulator = {
    sums: new Float32Array(height * width * classCount),
    counts: new Uint16Array(height * width)
  }
  const tilePixels = inputHeight * inputWidth

  for (let first = 0; first < tiles.length; first += options.batchSize) {
    const batch = tiles.slice(first, first + options.batchSize)
    const x = new Float32Array(batch.length * tilePixels * 3)
    batch.forEach(([row, column], n) => {
      for (let i = 0; i < inputHeight; i++) {
        // Replicated border: rows and columns outside the B-scan read the nearest edge pixel.
        const y = Math.min(height - 1, Math.max(0, row - top + i))
        for (let j = 0; j < inputWidth; j++) {
          const xs = Math.min(width - 1, Math.max(0, column - left + j))
          const target = (n * tilePixels + i * inputWidth + j) * 3
          const source = (y * width + xs) * 3
          x[target] = input[source]
          x[target + 1] = input[source + 1]
          x[target + 2] = input[source + 2]
        }
      }
    })

    const probabilities = await predictor.predictBatch(x)
    const expected = batch.length * outputHeight * outputWidth * classCount
    if (probabilities.length !== expected) throw new PredictorOutputError({ expected, actual: probabilities.length })

    batch.forEach(([row, column], n) => {
      for (let i = 0; i < outputHeight && row + i < height; i++) {
        for (let j = 0; j < outputWidth && column + j < width; j++) {
          const pixel = (row + i) * width + column + j
          const source = ((n * outputHeight + i) * outputWidth + j) * classCount
          for (let c = 0; c < classCount; c++) accumulator.sums[pixel * classCount + c] += probabilities[source + c]
          accumulator.counts[pixel] += 1
        }
      }
    })
  }

  for (let pixel = 0; pixel < height * width; pixel++) {
    const count = accumulator.counts[pixel]
    for (let c = 0; c < classCount; c++) accumulator.sums[pixel * classCount + c] /= count
  }
  return accumulator.sums
}

const validateInference = (
  image: Volume,
  options: InferenceOptions & { readonly overlap: number },
  predictor: Predictor
): number => {
  if (image.dtype !== "uint8") {
    throw new InferenceInputError({ field: "volume element type", expected: "uint8 (a preprocessed volume)", actual: image.dtype })
  }
  const overlapLimit = Math.min(predictor.outputHeight, predictor.outputWidth)
  if (!Number.isInteger(options.overlap) || options.overlap < 0 || options.overlap >= overlapLimit) {
    throw new InferenceInputError({
      field: "overlap",
      expected: `an integer in 0..${overlapLimit - 1} (below the output tile size)`,
      actual: String(options.overlap)
    })
  }
  if (!Number.isInteger(options.batchSize) || options.batchSize < 1) {
    throw new InferenceInputError({ field: "batchSize", expected: "an integer >= 1", actual: String(options.batchSize) })
  }
  const heightScale = options.heightScale ?? heightScaleOf(image.spacingMm[1])
  if (!Number.isFinite(heightScale) || heightScale <= 0) {
    throw new InferenceInputError({
      field: "height scale",
      expected: "a finite value > 0 (from a positive axial spacing in the header)",
      actual: `${heightScale} (axial spacing ${image.spacingMm[1]} mm)`
    })
  }
  return heightScale
}

/** Segments every B-scan of a preprocessed uint8 volume. */
export const inferVolume = async (
  image: Volume,
  predictor: Predictor,
  overrides: Partial<InferenceOptions> = {}
): Promise<InferenceResult> => {
  validatePredictor(predictor)
  const options = { ...defaultInferenceOptions, ...overrides, overlap: overrides.overlap ?? defaultOverlap(predictor) }
  const heightScale = validateInference(image, options, predictor)
  const [width, height, depth] = image.dims
  const scaledHeight = Math.max(1, Math.round(height / heightScale))
  const { classCount } = predictor
  const labels = new Uint8Array(width * height * depth)
  const scores = new Float32Array(depth * classCount)
  const mask = options.mask
  if (mask !== undefined && mask.dims.some((size, axis) => size !== image.dims[axis])) {
    throw new MaskShapeError({ expected: image.dims, actual: mask.dims })
  }
  // Source row of each scaled row, the centre of the rows it covers, for the mask lookup.
  const maskRow = Int32Array.from({ length: scaledHeight }, (_, row) =>
    Math.min(height - 1, Math.floor(((row + 0.5) * height) / scaledHeight))
  )

  const segmentSlice = async (z: number): Promise<void> => {
    const input = scaledSliceInput(image, z, scaledHeight)
    const probabilities = await predictScaledSlice(input, scaledHeight, width, predictor, options)
    const scaledLabels = new Uint8Array(scaledHeight * width)
    const sliceScores = scores.subarray(z * classCount, (z + 1) * classCount)

    const maskOffset = z * width * height
    for (let pixel = 0; pixel < scaledHeight * width; pixel++) {
      if (mask !== undefined) {
        const row = maskRow[Math.floor(pixel / width)]
        if (mask.data[maskOffset + row * width + (pixel % width)] === 0) continue
      }
      const offset = pixel * classCount
      let best = 0
      for (let c = 1; c < classCount; c++) {
        const probability = probabilities[offset + c]
        if (probability > probabilities[offset + best]) best = c
        if (probability > sliceScores[c]) sliceScores[c] = probability
      }
      scaledLabels[pixel] = best
      const fluid = 1 - probabilities[offset]
      if (fluid > sliceScores[0]) sliceScores[0] = fluid
    }

    const sliceOffset = z * width * height
    for (let y = 0; y < height; y++) {
      const scaledRow = nearestRow(y, scaledHeight, height)
      labels.set(scaledLabels.subarray(scaledRow * width, (scaledRow + 1) * width), sliceOffset + y * width)
    }
    if (mask !== undefined) {
      for (let i = sliceOffset; i < sliceOffset + width * height; i++) if (mask.data[i] === 0) labels[i] = 0
    }
  }

  // Slices write disjoint parts of labels and scores, so they may finish in any order.
  let next = 0
  let done = 0
  const lane = async (): Promise<void> => {
    while (next < depth) {
      const z = next++
      await segmentSlice(z)
      done += 1
      options.onProgress?.(done, depth)
    }
  }
  const lanes = Math.max(1, Math.min(depth, predictor.concurrency ?? 1))
  await Promise.all(Array.from({ length: lanes }, lane))

  return {
    labels: { dims: image.dims, spacingMm: image.spacingMm, dtype: "uint8", data: labels },
    scores: { classCount, values: scores }
  }
}

/** The size given to a model whose input height or width is not fixed (null in its shape). */
export interface ModelInputSize {
  readonly height: number
  readonly width: number
}

/**
 * Wraps a tfjs LayersModel with input [null, h, w, 3] and softmax output [null, oh, ow, C].
 * When the model's spatial input size is not fixed, `inputSize` gives it, and the output
 * size is found by running the model once on zeros.
 */
export const predictorFromModel = (model: tfl.LayersModel, inputSize?: ModelInputSize): Predictor => {
  const inputShape = model.inputs[0].shape
  const inputHeight = inputShape[1] ?? inputSize?.height
  const inputWidth = inputShape[2] ?? inputSize?.width
  if (inputHeight === undefined || inputWidth === undefined) {
    throw new PredictorShapeError({ field: "input size", expected: "fixed in the model or passed as inputSize", actual: NaN })
  }
  if (inputShape[3] !== 3) {
    throw new PredictorShapeError({ field: "input channels", expected: "3 (B-scans z - 1, z, z + 1)", actual: inputShape[3] ?? NaN })
  }

  let outputShape = model.outputs[0].shape
  if (outputShape.slice(1).some((size) => size === null)) {
    const probe = tf.tidy(() => model.predict(tf.zeros([1, inputHeight, inputWidth, 3])) as tf.Tensor)
    outputShape = probe.shape
    probe.dispose()
  }
  const [, outputHeight, outputWidth, classCount] = outputShape as ReadonlyArray<number>

  return {
    inputHeight,
    inputWidth,
    outputHeight,
    outputWidth,
    classCount,
    predictBatch: async (x) => {
      const count = x.length / (inputHeight * inputWidth * 3)
      const output = tf.tidy(() => model.predict(tf.tensor4d(x, [count, inputHeight, inputWidth, 3])) as tf.Tensor)
      try {
        return (await output.data()) as Float32Array
      } finally {
        output.dispose()
      }
    }
  }
}

/** Paths of the label files `writeLabelVolume` writes. */
export interface LabelVolumePaths {
  readonly metaImage: string
  readonly nifti: string
}

/**
 * Writes a label volume as `<basePath>.mha` (zlib-compressed MetaImage) and
 * `<basePath>.nii.gz` (NIfTI-1), creating the folder first.
 */
export const writeLabelVolume = async (labels: Volume<Uint8Array>, basePath: string): Promise<LabelVolumePaths> => {
  const paths = { metaImage: `${basePath}.mha`, nifti: `${basePath}.nii.gz` }
  await mkdir(dirname(basePath), { recursive: true })
  await writeMetaImage(paths.metaImage, labels, { compress: true })
  await writeNifti(paths.nifti, labels, { description: "octflow predicted labels" })
  return paths
}
