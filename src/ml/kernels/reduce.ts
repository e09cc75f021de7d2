/**
 * Sum and Mean over every axis but the last, for the wasm backend: the per-channel
 * reductions of bias gradients and batch normalisation on NHWC tensors. tfjs-backend-wasm
 * 4.22 first transposes the input so the reduced axes come last, a full copy of the
 * tensor; sum_rows (src/ml/wasm/kernels.c) adds rows in place. Mean divides each sum by
 * the number of rows. Other axes and dtypes go to the package's kernels.
 */
import * as tf from "@tensorflow/tfjs-core"
import { addressOf, simdKernelsFor } from "../wasm/module.ts"
import { asHeapBackend } from "./heap.ts"
import { callOriginalKernel } from "./original.ts"

interface ReduceAttrs {
  readonly axis: number | Array<number>
  readonly keepDims: boolean
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }

/** Rows and columns when the reduced axes are exactly the leading ones, else undefined. */
function leadingAxesReduction(x: tf.TensorInfo, attrs: ReduceAttrs): { rows: number; cols: number } | undefined {
  if (x.dtype !== "float32" || x.shape.length < 2) return undefined
  const axes = [...new Set(tf.util.parseAxisParam(attrs.axis, x.shape))].sort((a, b) => a - b)
  const rank = x.shape.length
  if (axes.length !== rank - 1 || axes.some((axis, index) => axis !== index)) return undefined
  const cols = x.shape[rank - 1]!
  const rows = x.shape.slice(0, rank - 1).reduce((a, b) => a * b, 1)
  return rows > 0 && cols > 0 ? { rows, cols } : undefined
}

function outShape(x: tf.TensorInfo, keepDims: boolean): Array<number> {
  const cols = x.shape[x.shape.length - 1]!
  return keepDims ? [...x.shape.slice(0, -1).map(() => 1), cols] : [cols]
}

function reduceRows(args: KernelArgs, mean: boolean): tf.TensorInfo | undefined {
  const x = args.inputs.x as tf.TensorInfo
  const attrs = args.attrs as unknown as ReduceAttrs
  const shape = leadingAxesReduction(x, attrs)
  if (shape === undefined) return undefined
  const backend = asHeapBackend(args.backend)
  const out = backend.makeOutput(outShape(x, attrs.keepDims), "float32")
  simdKernelsFor(args.backend).sum_rows(addressOf(args.backend, x), addressOf(args.backend, out), shape.rows, shape.cols)
  if (mean) {
    const values = backend.typedArrayFromHeap(out) as Float32Array
    for (let j = 0; j < values.length; j++) values[j] = Math.fround(values[j]! / shape.rows)
  }
  return out
}

function sum(args: KernelArgs): tf.TensorInfo {
  return reduceRows(args, false) ?? (callOriginalKernel(tf.Sum, "wasm", args) as tf.TensorInfo)
}

function mean(args: KernelArgs): tf.TensorInfo {
  return reduceRows(args, true) ?? (callOriginalKernel(tf.Mean, "wasm", args) as tf.TensorInfo)
}

export const sumConfig: tf.KernelConfig = { kernelName: tf.Sum, backendName: "wasm", kernelFunc: sum as unknown as tf.KernelFunc }

export const meanConfig: tf.KernelConfig = { kernelName: tf.Mean, backendName: "wasm", kernelFunc: mean as unknown as tf.KernelFunc }
