/**
 * The U-Net's configuration and the spatial size of every block, without TensorFlow.js, so
 * parameter checks can reject a patch size that the network cannot take before any stage
 * runs. src/ml/unet.ts builds the network from the same plan.
 */
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

export interface Size {
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
