/**
 * Batch normalisation in training as one kernel with one gradient kernel, for the wasm and
 * cpu backends. tfjs-layers 4.22's BatchNormalization computes the batch statistics with
 * tf.moments (mean, subtract, square, mean) and normalises with FusedBatchNorm, and the
 * gradient runs back through all of those: about twenty full-size temporaries per layer
 * and step. Here the forward pass is one kernel that returns y and the statistics, and the
 * gradient is one kernel that returns dx (through the statistics too), dgamma and dbeta:
 *   y = (x - mean) * gamma * r + beta,  r = 1 / sqrt(variance + epsilon),
 *   dbeta = S1, dgamma = r * S2,  dx = gamma * r * (dy - S1 / N - (x - mean) * r^2 * S2 / N),
 * with S1 = sum of dy and S2 = sum of dy * (x - mean) per channel over the N other values,
 * and variance the population variance, as tf.moments computes it.
 *
 * FusedBatchNorm itself (inference) gets a wasm kernel on the same module too.
 *
 * `useFusedBatchNormInTraining` makes tfjs-layers' BatchNormalization use it when training
 * with channels last, centre and scale. Inference and other cases keep the layer's own code.
 * The layer's config and weights are unchanged, so saved models are as before.
 */
import * as tf from "@tensorflow/tfjs-core"
import * as tfl from "@tensorflow/tfjs-layers"
import { addressOf, simdKernelsFor } from "../wasm/module.ts"
import { callOriginalKernel } from "./original.ts"

export const BatchNormTraining = "OctflowBatchNormTraining"
export const BatchNormTrainingGrad = "OctflowBatchNormTrainingGrad"

interface BatchNormAttrs {
  readonly varianceEpsilon: number
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }

interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo
}

interface CpuBackend {
  readSync(dataId: object): Float32Array
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo
}

/** Rows (all axes but the last) and columns (channels) of a channels-last tensor. */
function matrixShape(x: tf.TensorInfo): { rows: number; cols: number } {
  const cols = x.shape[x.shape.length - 1]!
  return { rows: x.shape.reduce((a, b) => a * b, 1) / cols, cols }
}

function batchNormTrainingWasm(args: KernelArgs): Array<tf.TensorInfo> {
  const { x, scale, offset } = args.inputs as Record<string, tf.TensorInfo>
  const { varianceEpsilon } = args.attrs as unknown as BatchNormAttrs
  const backend = args.backend as unknown as HeapBackend
  const { rows, cols } = matrixShape(x!)
  const y = backend.makeOutput([...x!.shape], "float32")
  const mean = backend.makeOutput([cols], "float32")
  const variance = backend.makeOutput([cols], "float32")
  const scratch = backend.makeOutput([2 * cols], "float32")
  const at = (info: tf.TensorInfo) => addressOf(args.backend, info)
  simdKernelsFor(args.backend).batch_norm_training(
    at(x!),
    at(scale!),
    at(offset!),
    at(y),
    at(mean),
    at(variance),
    at(scratch),
    rows,
    cols,
    varianceEpsilon
  )
  args.backend.disposeData(scratch.dataId)
  return [y, mean, variance]
}

function batchNormTrainingGradWasm(args: KernelArgs): Array<tf.TensorInfo> {
  const { dy, x, scale, mean, variance } = args.inputs as Record<string, tf.TensorInfo>
  const { varianceEpsilon } = args.attrs as unknown as BatchNormAttrs
  const backend = args.backend as unknown as HeapBackend
  const { rows, cols } = matrixShape(x!)
  const dx = backend.makeOutput([...x!.shape], "float32")
  const dscale = backend.makeOutput([cols], "float32")
  const doffset = backend.makeOutput([cols], "float32")
  const scratch = backend.makeOutput([3 * cols], "float32")
  const at = (info: tf.TensorInfo) => addressOf(args.backend, info)
  simdKernelsFor(args.backend).batch_norm_training_grad(
    at(dy!),
    at(x!),
    at(scale!),
    at(mean!),
    at(variance!),
    at(dx),
    at(dscale),
    at(doffset),
    at(scratch),
    rows,
    cols,
    varianceEpsilon
  )
  args.backend.disposeData(scratch.dataId)
  return [dx, dscale, doffset]
}

/** Per-channel sums of f(row, column) over all rows, in float64. */
function columnSums(rows: number, cols: number, term: (index: number, column: number) => number): Float64Array {
  const sums = new Float64Array(cols)
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) sums[j] += term(i * cols + j, j)
  return sums
}

function batchNormTrainingCpu(args: KernelArgs): Array<tf.TensorInfo> {
  const backend = args.backend as unknown as CpuBackend
  const { x, scale, offset } = args.inputs as Record<string, tf.TensorInfo>
  const { varianceEpsilon } = args.attrs as unknown as BatchNormAttrs
  const values = backend.readSync(x!.dataId)
  const gamma = backend.readSync(scale!.dataId)
  const beta = backend.readSync(offset!.dataId)
  const { rows, cols } = matrixShape(x!)
  const mean = Float32Array.from(columnSums(rows, cols, (index) => values[index]!), (sum) => sum / rows)
  const variance = Float32Array.from(
    columnSums(rows, cols, (index, j) => (values[index]! - mean[j]!) ** 2),
    (sum) => sum / rows
  )
  const y = new Float32Array(values.length)
  for (let index = 0; index < values.length; index++) {
    const j = index % cols
    y[index] = ((values[index]! - mean[j]!) * gamma[j]!) / Math.sqrt(variance[j]! + varianceEpsilon) + beta[j]!
  }
  return [
    backend.makeTensorInfo([...x!.shape], "float32", y),
    backend.makeTensorInfo([cols], "float32", mean),
    backend.makeTensorInfo([cols], "float32", variance)
  ]
}

function batchNormTrainingGradCpu(args: KernelArgs): Array<tf.TensorInfo> {
  const backend = args.backend as unknown as CpuBackend
  const inputs = args.inputs as Record<string, tf.TensorInfo>
  const { varianceEpsilon } = args.attrs as unknown as BatchNormAttrs
  const [dy, x, gamma, mean, variance] = ["dy", "x", "scale", "mean", "variance"].map((name) => backend.readSync(inputs[name]!.dataId))
  const { rows, cols } = matrixShape(inputs.x!)
  const sumDy = columnSums(rows, cols, (index) => dy![index]!)
  const sumDyCentred = columnSums(rows, cols, (index, j) => dy![index]! * (x![index]! - mean![j]!))
  const inverseStd = Float64Array.from(variance!, (v) => 1 / Math.sqrt(v + varianceEpsilon))
  const dx = new Float32Array(x!.length)
  for (let index = 0; index < dx.length; index++) {
    const j = index % cols
    const r = inverseStd[j]!
    const centred = x![index]! - mean![j]!
    dx[index] = gamma![j]! * r * (dy![index]! - sumDy[j]! / rows - (centred * r * r * sumDyCentred[j]!) / rows)
  }
  return [
    backend.makeTensorInfo([...inputs.x!.shape], "float32", dx),
    backend.makeTensorInfo([cols], "float32", Float32Array.from(sumDyCentred, (sum, j) => sum * inverseStd[j]!)),
    backend.makeTensorInfo([cols], "float32", Float32Array.from(sumDy))
  ]
}

/**
 * FusedBatchNorm (given statistics, as in inference) on wasm for per-channel rank-1
 * statistics, as y = x * scale + shift with per-channel scale and shift; other shapes go to
 * the package's kernel.
 */
function fusedBatchNormWasm(args: KernelArgs): tf.TensorInfo {
  const { x, mean, variance, scale, offset } = args.inputs as Record<string, tf.TensorInfo | undefined>
  const cols = x!.shape[x!.shape.length - 1]!
  const perChannel = (info: tf.TensorInfo | undefined | null) =>
    info === undefined || info === null || (info.shape.length === 1 && info.shape[0] === cols && info.dtype === "float32")
  if (x!.dtype !== "float32" || mean === undefined || variance === undefined || ![mean, variance, scale, offset].every(perChannel)) {
    return callOriginalKernel(tf.FusedBatchNorm, "wasm", args) as tf.TensorInfo
  }
  const backend = args.backend as unknown as HeapBackend
  const { rows } = matrixShape(x!)
  const y = backend.makeOutput([...x!.shape], "float32")
  const scratch = backend.makeOutput([2 * cols], "float32")
  const at = (info: tf.TensorInfo | undefined | null) => (info === undefined || info === null ? 0 : addressOf(args.backend, info))
  const { varianceEpsilon } = args.attrs as unknown as BatchNormAttrs
  simdKernelsFor(args.backend).batch_norm_inference(at(x), at(mean), at(variance), at(scale), at(offset), at(y), at(scratch), rows, cols, varianceEpsilon)
  args.backend.disposeData(scratch.dataId)
  return y
}

export const fusedBatchNormConfig: tf.KernelConfig = {
  kernelName: tf.FusedBatchNorm,
  backendName: "wasm",
  kernelFunc: fusedBatchNormWasm as unknown as tf.KernelFunc
}

export const batchNormTrainingConfigs: ReadonlyArray<tf.KernelConfig> = [
  { kernelName: BatchNormTraining, backendName: "wasm", kernelFunc: batchNormTrainingWasm as unknown as tf.KernelFunc },
  { kernelName: BatchNormTrainingGrad, backendName: "wasm", kernelFunc: batchNormTrainingGradWasm as unknown as tf.KernelFunc },
  { kernelName: BatchNormTraining, backendName: "cpu", kernelFunc: batchNormTrainingCpu as unknown as tf.KernelFunc },
  { kernelName: BatchNormTrainingGrad, backendName: "cpu", kernelFunc: batchNormTrainingGradCpu as unknown as tf.KernelFunc }
]

const gradientConfig: tf.GradConfig = {
  kernelName: BatchNormTraining,
  inputsToSave: ["x", "scale"],
  outputsToSave: [false, true, true],
  gradFunc: (dys: tf.Tensor | Array<tf.Tensor>, saved: Array<tf.Tensor>, attrs: tf.NamedAttrMap) => {
    const dy = (Array.isArray(dys) ? dys[0] : dys)!
    const [x, scale, mean, variance] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]
    // One kernel computes all three gradients; each closure returns its own reference.
    const [dx, dscale, doffset] = tf.engine().runKernel(BatchNormTrainingGrad, { dy, x, scale, mean, variance }, attrs) as Array<tf.Tensor>
    return { x: () => tf.clone(dx!), scale: () => tf.clone(dscale!), offset: () => tf.clone(doffset!) }
  }
}

/** The parts of tfjs-layers' BatchNormalization that its training call uses. */
interface BatchNormalizationLayer {
  axis: number
  momentum: number
  epsilon: number
  center: boolean
  scale: boolean
  gamma: tfl.LayerVariable
  beta: tfl.LayerVariable
  movingMean: tfl.LayerVariable
  movingVariance: tfl.LayerVariable
  call(inputs: tf.Tensor | Array<tf.Tensor>, kwargs: Record<string, unknown>): tf.Tensor | Array<tf.Tensor>
}

let originalCall: BatchNormalizationLayer["call"] | undefined

/** tfjs-layers' moving-average update: value -= (value - batch) * (1 - momentum). */
function updateMovingAverage(variable: tfl.LayerVariable, batch: tf.Tensor, momentum: number): void {
  tf.tidy(() => {
    const current = variable.read()
    variable.write(tf.sub(current, tf.mul(tf.sub(current, batch), 1 - momentum)))
  })
}

function fusedCall(this: BatchNormalizationLayer, inputs: tf.Tensor | Array<tf.Tensor>, kwargs: Record<string, unknown>) {
  const input = Array.isArray(inputs) ? inputs[0]! : inputs
  const axis = this.axis >= 0 ? this.axis : this.axis + input.rank
  const fused =
    kwargs?.training === true &&
    axis === input.rank - 1 &&
    this.center &&
    this.scale &&
    input.dtype === "float32" &&
    tf.getKernel(BatchNormTraining, tf.getBackend()) !== undefined
  if (!fused) return originalCall!.call(this, inputs, kwargs)
  return tf.tidy(() => {
    const [y, mean, variance] = tf.engine().runKernel(
      BatchNormTraining,
      { x: input, scale: this.gamma.read(), offset: this.beta.read() },
      { varianceEpsilon: this.epsilon }
    ) as Array<tf.Tensor>
    updateMovingAverage(this.movingMean, mean!, this.momentum)
    updateMovingAverage(this.movingVariance, variance!, this.momentum)
    return y!
  })
}

/** Registers the kernels and their gradient, and routes BatchNormalization's training calls to them. Repeats do nothing. */
export function useFusedBatchNormInTraining(): void {
  for (const config of batchNormTrainingConfigs) {
    if (tf.getKernel(config.kernelName, config.backendName) === undefined) tf.registerKernel(config)
  }
  if (tf.getGradient(BatchNormTraining) === undefined) tf.registerGradient(gradientConfig)
  const prototype = Object.getPrototypeOf(tfl.layers.batchNormalization({})) as BatchNormalizationLayer
  if (prototype.call === fusedCall) return
  originalCall = prototype.call
  prototype.call = fusedCall
}
