/**
 * The segmentation U-Net as a tfjs-layers functional model (built-in layers only, so the
 * saved model.json loads anywhere tfjs-layers runs).
 *
 * Tensors are NHWC: [batch, height (depth, y), width (A-scans, x), channels]. The input has
 * 3 channels (B-scans z-1, z, z+1); the output is per-pixel class probabilities from a
 * softmax over the last axis. Architecture, for widths f, 2f, 4f, 8f at depth 4:
 * - encoder block i: [7x7 same conv + ReLU, first block only], 3x3 valid conv + ReLU,
 *   3x3 valid conv, batch norm, ReLU; a 2x2 max pool (floor) between blocks;
 * - decoder block j: 2x2 stride-2 transposed conv, spatial dropout on it and on the
 *   centre-cropped skip, concatenation, then an encoder-style block without the 7x7 conv;
 * - multiscale fusion: the bottleneck and every decoder output but the last are upsampled
 *   (nearest) to the last decoder's scale, centre-cropped to its size and concatenated with
 *   it. A 3x3 same conv then maps the fused features to the classes.
 * Valid convolutions make the output smaller than the input: see `outputSize`.
 */
import * as tf from "@tensorflow/tfjs-core"
import * as tfl from "@tensorflow/tfjs-layers"
import * as Data from "effect/Data"

export interface UnetConfig {
  /** Filters of the first encoder block; block i has baseFilters * 2^i. */
  readonly baseFilters: number
  /** Encoder blocks, counting the bottleneck; decoder blocks are depth - 1. */
  readonly depth: number
  /** 4 for the RETOUCH scheme (background, IRF, SRF, PED), 2 for binary fluid. */
  readonly numClasses: number
  /** Patch height and width in pixels that the model is built for. */
  readonly patchHeight: number
  readonly patchWidth: number
  /** Spatial dropout rate of each decoder block, from the deepest; length depth - 1. */
  readonly dropoutRates: ReadonlyArray<number>
  readonly firstKernelSize: number
  /** Batch-norm moving-average momentum (Keras convention: new = m * old + (1 - m) * batch). */
  readonly batchNormMomentum: number
  /** Seed of the weight initialisers; layer k uses seed + k. */
  readonly seed: number
}

/** The method's full-size network: 256 x 128 patches, 64 to 512 filters. */
export const paperConfig: UnetConfig = {
  baseFilters: 64,
  depth: 4,
  numClasses: 4,
  patchHeight: 256,
  patchWidth: 128,
  dropoutRates: [0.25, 0.25, 0.5],
  firstKernelSize: 7,
  // 0.9 is PyTorch's default (its momentum 0.1); Keras' 0.99 leaves the moving statistics
  // far from the batch statistics during short runs, so validation loss lags badly.
  batchNormMomentum: 0.9,
  seed: 1
}

/**
 * A narrow network for training on two CPU cores: 3 encoder blocks of 8, 16 and 32 filters
 * on 128 x 64 patches (output 88 x 24). Depth 4 would need patches at least 92 pixels wide
 * and returns only 4 output columns at 96; see bench/train.bench.ts for steps per second.
 */
export const cpuConfig: UnetConfig = {
  ...paperConfig,
  baseFilters: 8,
  depth: 3,
  patchHeight: 128,
  patchWidth: 64,
  dropoutRates: [0.25, 0.5]
}

export class UnetShapeError extends Data.TaggedError("UnetShapeError")<{
  readonly inputHeight: number
  readonly inputWidth: number
  readonly stage: string
  readonly height: number
  readonly width: number
}> {
  override get message() {
    return (
      `A ${this.inputHeight} x ${this.inputWidth} input is too small for this U-Net: ` +
      `${this.stage} would be ${this.height} x ${this.width}. Use a larger patch or a smaller depth.`
    )
  }
}

export class UnetConfigError extends Data.TaggedError("UnetConfigError")<{
  readonly field: string
  readonly expected: string
  readonly actual: unknown
}> {
  override get message() {
    return `Invalid U-Net config: ${this.field} must be ${this.expected}, got ${JSON.stringify(this.actual)}.`
  }
}

interface Size {
  readonly height: number
  readonly width: number
}

/** Every spatial size in the network, computed once so the model and `outputSize` agree. */
export interface UnetPlan {
  /** Encoder block outputs, shallowest first. */
  readonly encoder: ReadonlyArray<Size>
  /** Decoder block outputs, deepest first; the last one is the network's output size. */
  readonly decoder: ReadonlyArray<Size>
  readonly output: Size
}

const afterBlock = (size: Size, shrink: number): Size => ({ height: size.height - shrink, width: size.width - shrink })

export function validateConfig(config: UnetConfig): void {
  const checkInteger = (field: keyof UnetConfig, min: number) => {
    const value = config[field]
    if (typeof value !== "number" || !Number.isInteger(value) || value < min) {
      throw new UnetConfigError({ field, expected: `an integer >= ${min}`, actual: value })
    }
  }
  checkInteger("baseFilters", 1)
  checkInteger("depth", 2)
  checkInteger("numClasses", 2)
  checkInteger("patchHeight", 1)
  checkInteger("patchWidth", 1)
  checkInteger("firstKernelSize", 1)
  if (config.firstKernelSize % 2 !== 1) {
    throw new UnetConfigError({ field: "firstKernelSize", expected: "odd", actual: config.firstKernelSize })
  }
  if (!(config.batchNormMomentum >= 0 && config.batchNormMomentum < 1)) {
    throw new UnetConfigError({ field: "batchNormMomentum", expected: "a number in [0, 1)", actual: config.batchNormMomentum })
  }
  if (config.dropoutRates.length !== config.depth - 1 || config.dropoutRates.some((r) => !(r >= 0 && r < 1))) {
    throw new UnetConfigError({
      field: "dropoutRates",
      expected: `${config.depth - 1} rates in [0, 1)`,
      actual: config.dropoutRates
    })
  }
}

/** Computes every block's output size for an input of inputHeight x inputWidth. */
export function planUnet(config: UnetConfig, inputHeight: number, inputWidth: number): UnetPlan {
  const check = (stage: string, size: Size): Size => {
    if (size.height < 1 || size.width < 1) {
      throw new UnetShapeError({ inputHeight, inputWidth, stage, height: size.height, width: size.width })
    }
    return size
  }
  const encoder: Array<Size> = []
  let size: Size = { height: inputHeight, width: inputWidth }
  for (let level = 0; level < config.depth; level++) {
    if (level > 0) size = check(`pooling before block ${level + 1}`, { height: Math.floor(size.height / 2), width: Math.floor(size.width / 2) })
    size = check(`encoder block ${level + 1}`, afterBlock(size, 4))
    encoder.push(size)
  }
  const decoder: Array<Size> = []
  for (let level = config.depth - 2; level >= 0; level--) {
    const up = { height: size.height * 2, width: size.width * 2 }
    const skip = encoder[level]!
    if (skip.height < up.height || skip.width < up.width) {
      throw new UnetShapeError({ inputHeight, inputWidth, stage: `skip of decoder level ${level + 1}`, height: skip.height, width: skip.width })
    }
    size = check(`decoder block ${config.depth - 1 - level}`, afterBlock(up, 4))
    decoder.push(size)
  }
  return { encoder, decoder, output: size }
}

/**
 * Returns the output height and width for an input of inputHeight x inputWidth, the size
 * labels are centre-cropped to. `paperConfig` gives 164 x 36 for 256 x 128.
 */
export function outputSize(config: UnetConfig, inputHeight: number, inputWidth: number): { height: number; width: number } {
  const { output } = planUnet(config, inputHeight, inputWidth)
  return { height: output.height, width: output.width }
}

/** Rows and columns to drop from the top-left of a `from`-sized map for a centred `to`. */
export function centreCropOffsets(from: Size, to: Size): [[number, number], [number, number]] {
  const top = Math.floor((from.height - to.height) / 2)
  const left = Math.floor((from.width - to.width) / 2)
  return [
    [top, from.height - to.height - top],
    [left, from.width - to.width - left]
  ]
}

class LayerFactory {
  private index = 0
  constructor(private readonly seed: number) {}

  private nextSeed(): number {
    this.index += 1
    return this.seed + this.index
  }

  conv(filters: number, kernelSize: number, padding: "valid" | "same", name: string, activation: "relu" | "linear" = "relu") {
    return tfl.layers.conv2d({
      filters,
      kernelSize,
      padding,
      activation,
      name,
      kernelInitializer: tfl.initializers.glorotUniform({ seed: this.nextSeed() }),
      biasInitializer: "zeros"
    })
  }

  upConv(filters: number, name: string) {
    return tfl.layers.conv2dTranspose({
      filters,
      kernelSize: 2,
      strides: 2,
      padding: "valid",
      name,
      kernelInitializer: tfl.initializers.glorotUniform({ seed: this.nextSeed() })
    })
  }

  /** Drops whole channels per sample (noise shape [batch, 1, 1, channels]). */
  spatialDropout(rate: number, name: string) {
    return tfl.layers.dropout({ rate, noiseShape: [null, 1, 1, null] as unknown as number[], seed: this.nextSeed(), name })
  }
}

function block(
  input: tfl.SymbolicTensor,
  filters: number,
  name: string,
  layers: LayerFactory,
  momentum: number,
  firstKernelSize?: number
): tfl.SymbolicTensor {
  let x = input
  if (firstKernelSize !== undefined) x = layers.conv(filters, firstKernelSize, "same", `${name}_conv0`).apply(x) as tfl.SymbolicTensor
  x = layers.conv(filters, 3, "valid", `${name}_conv1`).apply(x) as tfl.SymbolicTensor
  x = layers.conv(filters, 3, "valid", `${name}_conv2`, "linear").apply(x) as tfl.SymbolicTensor
  x = tfl.layers.batchNormalization({ axis: -1, momentum, name: `${name}_bn` }).apply(x) as tfl.SymbolicTensor
  return tfl.layers.reLU({ name: `${name}_relu` }).apply(x) as tfl.SymbolicTensor
}

function crop(x: tfl.SymbolicTensor, from: Size, to: Size, name: string): tfl.SymbolicTensor {
  if (from.height === to.height && from.width === to.width) return x
  return tfl.layers.cropping2D({ cropping: centreCropOffsets(from, to), name }).apply(x) as tfl.SymbolicTensor
}

/** Builds the U-Net for inputs of config.patchHeight x config.patchWidth x 3. */
export function buildUnet(config: UnetConfig): tfl.LayersModel {
  validateConfig(config)
  const plan = planUnet(config, config.patchHeight, config.patchWidth)
  const layers = new LayerFactory(config.seed)
  const input = tfl.input({ shape: [config.patchHeight, config.patchWidth, 3], name: "image" })

  const skips: Array<tfl.SymbolicTensor> = []
  let x = input
  for (let level = 0; level < config.depth; level++) {
    if (level > 0) x = tfl.layers.maxPooling2d({ poolSize: 2, strides: 2, name: `pool${level}` }).apply(x) as tfl.SymbolicTensor
    const filters = config.baseFilters * 2 ** level
    const firstKernel = level === 0 ? config.firstKernelSize : undefined
    x = block(x, filters, `enc${level + 1}`, layers, config.batchNormMomentum, firstKernel)
    skips.push(x)
  }

  const scales: Array<{ tensor: tfl.SymbolicTensor; size: Size }> = [{ tensor: x, size: plan.encoder[config.depth - 1]! }]
  let size = plan.encoder[config.depth - 1]!
  for (let step = 0; step < config.depth - 1; step++) {
    const level = config.depth - 2 - step
    const filters = config.baseFilters * 2 ** level
    const name = `dec${step + 1}`
    const rate = config.dropoutRates[step]!
    const upSize = { height: size.height * 2, width: size.width * 2 }
    let up = layers.upConv(filters, `${name}_up`).apply(x) as tfl.SymbolicTensor
    up = layers.spatialDropout(rate, `${name}_drop_up`).apply(up) as tfl.SymbolicTensor
    let skip = crop(skips[level]!, plan.encoder[level]!, upSize, `${name}_crop_skip`)
    skip = layers.spatialDropout(rate, `${name}_drop_skip`).apply(skip) as tfl.SymbolicTensor
    const merged = tfl.layers.concatenate({ axis: -1, name: `${name}_concat` }).apply([up, skip]) as tfl.SymbolicTensor
    x = block(merged, filters, name, layers, config.batchNormMomentum)
    size = plan.decoder[step]!
    scales.push({ tensor: x, size })
  }

  const fused: Array<tfl.SymbolicTensor> = []
  for (const [index, scale] of scales.entries()) {
    const factor = 2 ** (scales.length - 1 - index)
    if (factor === 1) {
      fused.push(scale.tensor)
      continue
    }
    const upsampled = tfl.layers
      .upSampling2d({ size: [factor, factor], interpolation: "nearest", name: `fuse${index + 1}_up` })
      .apply(scale.tensor) as tfl.SymbolicTensor
    const upsampledSize = { height: scale.size.height * factor, width: scale.size.width * factor }
    fused.push(crop(upsampled, upsampledSize, plan.output, `fuse${index + 1}_crop`))
  }
  const features = tfl.layers.concatenate({ axis: -1, name: "fuse_concat" }).apply(fused) as tfl.SymbolicTensor
  const logits = layers.conv(config.numClasses, 3, "same", "logits", "linear").apply(features) as tfl.SymbolicTensor
  const probabilities = tfl.layers.softmax({ axis: -1, name: "probabilities" }).apply(logits) as tfl.SymbolicTensor
  return tfl.model({ inputs: input, outputs: probabilities, name: "unet" })
}

/**
 * Builds the U-Net for inputs of inputHeight x inputWidth with the weights of `trained` (a
 * model of the same config at any input size), for inference on whole B-scans: convolution
 * weights do not depend on the spatial size. For inputs where (size - patch size) is a
 * multiple of 2^(depth - 1), every crop matches the patch model's. The output then equals
 * patch-wise predictions away from each patch's border. Near the border it differs,
 * because the same-padded first and last convolutions see zeros at a patch's edge.
 */
export function buildUnetForInput(
  config: UnetConfig,
  trained: tfl.LayersModel,
  inputHeight: number,
  inputWidth: number
): tfl.LayersModel {
  const model = buildUnet({ ...config, patchHeight: inputHeight, patchWidth: inputWidth })
  const weights = trained.getWeights()
  model.setWeights(weights)
  return model
}

/** Returns the model's Dropout layers, whose seeds the trainer sets before every step. */
export function dropoutLayers(model: tfl.LayersModel): ReadonlyArray<tfl.layers.Layer> {
  return model.layers.filter((layer) => layer.getClassName() === "Dropout")
}

/** Runs the model in inference mode on NHWC float input and returns NHWC probabilities. */
export function predictProbabilities(model: tfl.LayersModel, x: tf.Tensor4D): tf.Tensor4D {
  return model.predict(x) as tf.Tensor4D
}
