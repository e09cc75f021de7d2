/**
 * Conv2DBackpropFilter for the wasm backend, which ships none. It runs on this project's
 * SIMD matrix kernel (conv-gemm.ts) when the output channels are a multiple of 4, and
 * otherwise as follows.
 *
 * Shapes (NHWC): x [n, h, w, c], dy [n, outH, outW, k], result dW [fh, fw, c, k] with
 *   dW[i, j, c, k] = sum over b, p, q of x[b, p*s + i - padTop, q*t + j - padLeft, c] * dy[b, p, q, k]
 * for strides (s, t). That sum is itself a stride-1 convolution once batch and channels
 * swap places: the input is x transposed to [c, h, w, n], the filter is dy transposed to
 * [outH, outW, n, k], and the forward stride becomes the dilation. One XNNPACK Conv2D call
 * then does the work.
 */
import * as tf from "@tensorflow/tfjs-core"
import { type Backend, callWasmKernel, cropForConvPadding, release, type TensorInfo, transpose } from "./call.ts"
import { conv2dBackpropFilterGemm } from "./conv-gemm.ts"

interface BackpropFilterAttrs {
  readonly strides: [number, number] | number
  readonly pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding
  readonly dataFormat: "NHWC" | "NCHW"
  readonly dimRoundingMode?: "floor" | "round" | "ceil"
  readonly filterShape: [number, number, number, number]
}

function conv2dBackpropFilter(args: { inputs: tf.NamedTensorInfoMap; backend: Backend; attrs: tf.NamedAttrMap }): TensorInfo {
  const { inputs, backend } = args
  const attrs = args.attrs as unknown as BackpropFilterAttrs
  const x = inputs.x as TensorInfo
  const dy = inputs.dy as TensorInfo
  if (attrs.dataFormat !== "NHWC") {
    throw new Error(`Conv2DBackpropFilter on wasm supports dataFormat NHWC only, got ${attrs.dataFormat}.`)
  }
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode
  )
  const fast = conv2dBackpropFilterGemm(backend, x, dy, info)
  if (fast !== undefined) return fast

  const { filterHeight, filterWidth, strideHeight, strideWidth, outHeight, outWidth } = info
  const { top, left } = info.padInfo

  // The stride-1 convolution below reads rows top-padded by padTop, and needs exactly
  // (outH - 1) * s + fh rows in all, so the bottom pad may be negative (a crop).
  const bottom = (outHeight - 1) * strideHeight + filterHeight - info.inHeight - top
  const right = (outWidth - 1) * strideWidth + filterWidth - info.inWidth - left

  const swappedX = transpose(backend, x, [3, 1, 2, 0])
  const cropped = cropForConvPadding(backend, swappedX, top, bottom, left, right)
  const dyAsFilter = transpose(backend, dy, [1, 2, 0, 3])
  const convolved = callWasmKernel(
    "Conv2D",
    backend,
    { x: cropped.input, filter: dyAsFilter },
    { strides: [1, 1], pad: cropped.pad, dataFormat: "NHWC", dilations: [strideHeight, strideWidth] }
  )
  // convolved is [c, fh, fw, k]; the filter gradient is [fh, fw, c, k].
  const result = transpose(backend, convolved, [1, 2, 0, 3])
  release(backend, swappedX, cropped.input, dyAsFilter, convolved)
  return result
}

export const conv2dBackpropFilterConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropFilter,
  backendName: "wasm",
  kernelFunc: conv2dBackpropFilter as unknown as tf.KernelFunc
}
