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
import { centreCropOffsets, planUnet, type Size, type UnetConfig, validateConfig } from "./unet-shape.ts"

export * from "./unet-shape.ts"

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
