/**
 * MaxPoolGrad for the wasm backend. tfjs-backend-wasm 4.22's own kernel drops gradient
 * entries: pooling a 4 x 4 input 2 x 2, it lost one of the four maxima. This one routes
 * each dy value to the first maximum of its window, as the cpu backend does.
 *
 * Shapes (NHWC): input x [n, h, w, c], dy [n, outH, outW, c], result dx like x:
 *   dx[b, y, x, c] = sum of dy[b, p, q, c] over windows (p, q) whose first maximum is (y, x).
 * Windows start at (p * strideH - padTop, q * strideW - padLeft); positions outside the
 * input are skipped, the same as padding with -infinity.
 */
import * as tf from "@tensorflow/tfjs-core"
import { asHeapBackend, float32View } from "./heap.ts"

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
  const dx = float32View(backend, out)
  const x = float32View(backend, input)
  const dy = float32View(backend, dyInfo)
  dx.fill(0)

  const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth } = info
  const { strideHeight, strideWidth, filterHeight, filterWidth } = info
  const { top, left } = info.padInfo
  const rowStride = inWidth * channels
  for (let b = 0; b < batchSize; b++) {
    const inputBase = b * inHeight * rowStride
    for (let p = 0; p < outHeight; p++) {
      const yStart = Math.max(0, p * strideHeight - top)
      const yEnd = Math.min(inHeight, p * strideHeight - top + filterHeight)
      for (let q = 0; q < outWidth; q++) {
        const xStart = Math.max(0, q * strideWidth - left)
        const xEnd = Math.min(inWidth, q * strideWidth - left + filterWidth)
        const dyBase = ((b * outHeight + p) * outWidth + q) * channels
        for (let c = 0; c < channels; c++) {
          let maxValue = Number.NEGATIVE_INFINITY
          let maxIndex = -1
          for (let y = yStart; y < yEnd; y++) {
            for (let xIndex = xStart; xIndex < xEnd; xIndex++) {
              const index = inputBase + y * rowStride + xIndex * channels + c
              if (x[index]! > maxValue) {
                maxValue = x[index]!
                maxIndex = index
              }
            }
          }
          if (maxIndex >= 0) dx[maxIndex]! += dy[dyBase + c]!
        }
      }
    }
  }
  return out
}

export const maxPoolGradConfig: tf.KernelConfig = {
  kernelName: tf.MaxPoolGrad,
  backendName: "wasm",
  kernelFunc: maxPoolGrad as unknown as tf.KernelFunc
}
