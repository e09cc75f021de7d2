/**
 * MaxPoolGrad for the wasm backend. tfjs-backend-wasm 4.22's own kernel drops gradient
 * entries: pooling a 4 x 4 input 2 x 2, it lost one of the four maxima. This one routes
 * each dy value to the first maximum of its window, as the cpu backend does (max_pool_grad
 * in src/ml/wasm/kernels.c).
 *
 * Shapes (NHWC): input x [n, h, w, c], dy [n, outH, outW, c], result dx like x:
 *   dx[b, y, x, c] = sum of dy[b, p, q, c] over windows (p, q) whose first maximum is (y, x).
 * Windows start at (p * strideH - padTop, q * strideW - padLeft); positions outside the
 * input are skipped, the same as padding with -infinity.
 */
import * as tf from "@tensorflow/tfjs-core"
import { addressOf, simdKernelsFor } from "../wasm/module.ts"
import { asHeapBackend } from "./heap.ts"

interface MaxPoolGradAttrs {
  readonly filterSize: [number, number] | number
  readonly strides: [number, number] | number
  readonly pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding
  readonly dimRoundingMode?: "floor" | "round" | "ceil"
}

function maxPoolGrad(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }): tf.TensorInfo {
  const backend = asHeapBackend(args.backend)
  const attrs = args.attrs as unknown as MaxPoolGradAttrs
  const input = args.inputs.input as tf.TensorInfo
  const dyInfo = args.inputs.dy as tf.TensorInfo
  const info = tf.backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    attrs.filterSize,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode
  )
  const out = backend.makeOutput([...input.shape], "float32")
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth } = info
  const { strideHeight, strideWidth, filterHeight, filterWidth } = info
  simdKernelsFor(args.backend).max_pool_grad(
    addressOf(args.backend, input),
    addressOf(args.backend, dyInfo),
    addressOf(args.backend, out),
    batchSize,
    inHeight,
    inWidth,
    inChannels,
    outHeight,
    outWidth,
    filterHeight,
    filterWidth,
    strideHeight,
    strideWidth,
    info.padInfo.top,
    info.padInfo.left
  )
  return out
}

export const maxPoolGradConfig: tf.KernelConfig = {
  kernelName: tf.MaxPoolGrad,
  backendName: "wasm",
  kernelFunc: maxPoolGrad as unknown as tf.KernelFunc
}
