/**
 * Conv2DBackpropInput for the wasm backend. Stride-1 convolutions and filters that tile the
 * output without overlap run on this project's SIMD matrix kernels (conv-gemm.ts); other
 * strides run as one Conv2D (faster than the backend's own loop kernel), as follows.
 *
 * Shapes (NHWC): dy [n, outH, outW, k], filter W [fh, fw, c, k], result dx [n, h, w, c] with
 *   dx[b, y, x, c] = sum over p, q, i, j, k with p*s + i - padTop = y and q*t + j - padLeft = x
 *                    of dy[b, p, q, k] * W[i, j, c, k].
 * Dilate dy by the strides (s - 1 zeros between rows, t - 1 between columns), and flip W in
 * both spatial axes and transpose it to [fh, fw, k, c]. The sum is then a stride-1 valid
 * convolution of the dilated dy, padded by fh - 1 - padTop on top and fw - 1 - padLeft on
 * the left.
 */
import * as tf from "@tensorflow/tfjs-core"
import {
  type Backend,
  callWasmKernel,
  cropForConvPadding,
  pad,
  padOrCropHW,
  release,
  reshape,
  type TensorInfo,
  transpose
} from "./call.ts"
import { conv2dBackpropInputGemm } from "./conv-gemm.ts"

interface BackpropInputAttrs {
  readonly strides: [number, number] | number
  readonly pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding
  readonly dataFormat: "NHWC" | "NCHW"
  readonly dimRoundingMode?: "floor" | "round" | "ceil"
  readonly inputShape: [number, number, number, number]
}

/**
 * Inserts s - 1 zero rows after every row and t - 1 zero columns after every column, so the
 * result is [n, outH * s, outW * t, k]; the trailing zeros are cropped or used as padding.
 */
function dilateHW(backend: Backend, dy: TensorInfo, s: number, t: number): TensorInfo {
  if (s === 1 && t === 1) return callWasmKernel("Identity", backend, { x: dy })
  const [n, h, w, k] = dy.shape as [number, number, number, number]
  const sixD = reshape(backend, dy, [n, h, 1, w, 1, k])
  const spread = pad(backend, sixD, [
    [0, 0],
    [0, 0],
    [0, s - 1],
    [0, 0],
    [0, t - 1],
    [0, 0]
  ])
  const result = reshape(backend, spread, [n, h * s, w * t, k])
  release(backend, sixD, spread)
  return result
}

/**
 * Computes the non-overlapping case (filter size equal to the stride and no padding, as in
 * a 2x2 stride-2 transposed convolution). Each dy pixel writes its own fh x fw block:
 *   dx block (p, q) = dy[b, p, q, :] x W^T, with W^T = W transposed to [k, fh * fw * c],
 * so one matrix product and a transpose put every block in place. Rows and columns beyond
 * outH * fh (an odd input under floor rounding) get zero gradient.
 */
function blockwiseBackpropInput(backend: Backend, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize: n, inHeight, inWidth, inChannels: c, outHeight, outWidth, outChannels: k } = info
  const { filterHeight: fh, filterWidth: fw } = info
  const dyRows = reshape(backend, dy, [1, n * outHeight * outWidth, k])
  const filterByOutput = transpose(backend, filter, [3, 0, 1, 2])
  const filterRows = reshape(backend, filterByOutput, [1, k, fh * fw * c])
  const blocks = callWasmKernel("BatchMatMul", backend, { a: dyRows, b: filterRows }, { transposeA: false, transposeB: false })
  const blocksSixD = reshape(backend, blocks, [n, outHeight, outWidth, fh, fw, c])
  const placed = transpose(backend, blocksSixD, [0, 1, 3, 2, 4, 5])
  const image = reshape(backend, placed, [n, outHeight * fh, outWidth * fw, c])
  const result = padOrCropHW(backend, image, 0, inHeight - outHeight * fh, 0, inWidth - outWidth * fw)
  release(backend, dyRows, filterByOutput, filterRows, blocks, blocksSixD, placed, image)
  return result
}

function conv2dBackpropInput(args: { inputs: tf.NamedTensorInfoMap; backend: Backend; attrs: tf.NamedAttrMap }): TensorInfo {
  const { inputs, backend } = args
  const attrs = args.attrs as unknown as BackpropInputAttrs
  const dy = inputs.dy as TensorInfo
  const filter = inputs.filter as TensorInfo
  if (attrs.dataFormat !== "NHWC") {
    throw new Error(`Conv2DBackpropInput on wasm supports dataFormat NHWC only, got ${attrs.dataFormat}.`)
  }
  const info = tf.backend_util.computeConv2DInfo(
    attrs.inputShape,
    filter.shape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode
  )
  const fast = conv2dBackpropInputGemm(backend, dy, filter, info)
  if (fast !== undefined) return fast

  const { filterHeight, filterWidth, strideHeight, strideWidth, inHeight, inWidth, outHeight, outWidth } = info
  const { top, left } = info.padInfo
  if (filterHeight === strideHeight && filterWidth === strideWidth && top === 0 && left === 0) {
    return blockwiseBackpropInput(backend, dy, filter, info)
  }

  const dilated = dilateHW(backend, dy, strideHeight, strideWidth)
  // The convolution needs inHeight + fh - 1 rows; dilated has outH * s rows after `top` pad.
  const newTop = filterHeight - 1 - top
  const newLeft = filterWidth - 1 - left
  const newBottom = inHeight + filterHeight - 1 - newTop - outHeight * strideHeight
  const newRight = inWidth + filterWidth - 1 - newLeft - outWidth * strideWidth
  const cropped = cropForConvPadding(backend, dilated, newTop, newBottom, newLeft, newRight)

  const flipped = callWasmKernel("Reverse", backend, { x: filter }, { dims: [0, 1] })
  const flippedSwapped = transpose(backend, flipped, [0, 1, 3, 2])
  const result = callWasmKernel(
    "Conv2D",
    backend,
    { x: cropped.input, filter: flippedSwapped },
    { strides: [1, 1], pad: cropped.pad, dataFormat: "NHWC", dilations: [1, 1] }
  )
  release(backend, dilated, cropped.input, flipped, flippedSwapped)
  return result
}

export const conv2dBackpropInputConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropInput,
  backendName: "wasm",
  kernelFunc: conv2dBackpropInput as unknown as tf.KernelFunc
}
