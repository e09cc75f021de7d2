/**
 * Concat for the wasm backend. tfjs-backend-wasm 4.22's kernel makes one subarray and one
 * `set` call per input per outer index, so concatenating NHWC tensors along channels costs
 * two small calls per pixel. This one copies inside the heap, with a plain loop for short
 * runs.
 *
 * Layout (row-major): with outer = product of the output extents before `axis` and
 * inner_i = product of input i's extents from `axis` on, output row b (of
 * rowLength = sum of inner_i elements) is input 0's row b, then input 1's row b, and so on.
 * Concatenating along axis 0 is then one block copy per input. String tensors, and inputs
 * of different dtypes, go to the package's kernel.
 */
import * as tf from "@tensorflow/tfjs-core"
import { copyRuns, heapElements, isHeapDtype } from "./copy.ts"
import { asHeapBackend } from "./heap.ts"
import { callOriginalKernel } from "./original.ts"

interface ConcatAttrs {
  readonly axis: number | Array<number>
}

function product(values: ReadonlyArray<number>): number {
  let result = 1
  for (const value of values) result *= value
  return result
}

function concat(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }): tf.TensorInfo {
  const inputs = Object.values(args.inputs) as Array<tf.TensorInfo>
  const dtype = inputs[0]!.dtype
  if (!isHeapDtype(dtype) || inputs.some((input) => input.dtype !== dtype)) {
    return callOriginalKernel(tf.Concat, "wasm", args) as tf.TensorInfo
  }
  const axis = tf.util.parseAxisParam((args.attrs as unknown as ConcatAttrs).axis, inputs[0]!.shape)[0]!
  const shapes = inputs.map((input) => input.shape)
  tf.backend_util.assertParamsConsistent(shapes, axis)
  const outShape = tf.backend_util.computeOutShape(shapes, axis)

  const backend = asHeapBackend(args.backend)
  const out = backend.makeOutput(outShape, dtype)
  const outer = product(outShape.slice(0, axis))
  const rowLength = product(outShape.slice(axis))
  if (outer * rowLength === 0) return out

  const { heap, offsetOf, kernels } = heapElements(backend, dtype, out)
  let target = offsetOf(out)
  for (const input of inputs) {
    const inner = product(input.shape.slice(axis))
    if (inner === 0) continue
    copyRuns(heap, offsetOf(input), inner, target, rowLength, inner, outer, kernels)
    target += inner
  }
  return out
}

export const concatConfig: tf.KernelConfig = {
  kernelName: tf.Concat,
  backendName: "wasm",
  kernelFunc: concat as unknown as tf.KernelFunc
}
