/**
 * ResizeNearestNeighborGrad for the cpu and wasm backends. tfjs-backend-cpu 4.22's kernel
 * offsets dy by the images' batch stride, so every batch entry after the first gets wrong
 * gradients, and it ignores half-pixel centres. This one scatters dy back through the
 * forward mapping of ResizeNearestNeighbor, on wasm too so both backends agree.
 *
 * Shapes (NHWC): images [n, h, w, c], dy [n, outH, outW, c], result like images. Output row r
 * reads input row min(h - 1, f(ratio * r')) with r' = r + 0.5 for half-pixel centres (else
 * r), f = round with alignCorners (else floor), and ratio = (h - 1) / (outH - 1) with
 * alignCorners and outH > 1 (else h / outH); columns likewise. On wasm the scatter runs
 * in resize_nearest_grad (src/ml/wasm/kernels.c), and the forward resize, through the same
 * mapping, in resize_nearest: the package's kernel computes the mapping per pixel.
 */
import * as tf from "@tensorflow/tfjs-core"
import { addressOf, simdKernelsFor } from "../wasm/module.ts"
import { asHeapBackend } from "./heap.ts"
import { callOriginalKernel } from "./original.ts"

interface ResizeGradAttrs {
  readonly alignCorners: boolean
  readonly halfPixelCenters: boolean
}

/** Input index that each output index reads, for one axis. */
function sourceIndices(inSize: number, outSize: number, attrs: ResizeGradAttrs): Int32Array {
  const aligned = attrs.alignCorners && outSize > 1
  const ratio = aligned ? (inSize - 1) / (outSize - 1) : inSize / outSize
  const indices = new Int32Array(outSize)
  for (let r = 0; r < outSize; r++) {
    const fraction = attrs.halfPixelCenters ? ratio * (r + 0.5) : ratio * r
    let source = Math.min(inSize - 1, attrs.alignCorners ? Math.round(fraction) : Math.floor(fraction))
    if (attrs.halfPixelCenters) source = Math.max(0, source)
    indices[r] = source
  }
  return indices
}

type ImageShape = readonly [number, number, number, number]

/** Adds every dy value into dx at the input pixel its output pixel was read from. */
function scatterGradient(dy: Float32Array, dyShape: ImageShape, dx: Float32Array, imagesShape: ImageShape, attrs: ResizeGradAttrs): void {
  const [batchSize, inHeight, inWidth, channels] = imagesShape
  const [, outHeight, outWidth] = dyShape
  const rows = sourceIndices(inHeight, outHeight, attrs)
  const cols = sourceIndices(inWidth, outWidth, attrs)
  dx.fill(0)
  for (let b = 0; b < batchSize; b++) {
    for (let r = 0; r < outHeight; r++) {
      const targetRow = (b * inHeight + rows[r]!) * inWidth
      const sourceRow = (b * outHeight + r) * outWidth
      for (let q = 0; q < outWidth; q++) {
        const target = (targetRow + cols[q]!) * channels
        const source = (sourceRow + q) * channels
        for (let c = 0; c < channels; c++) dx[target + c]! += dy[source + c]!
      }
    }
  }
}

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap
  backend: tf.KernelBackend
  attrs: tf.NamedAttrMap
}

/**
 * Runs `kernel` (resize_nearest or resize_nearest_grad of the SIMD module) from `source` into
 * `target` with the row and column index maps of an inH x inW image resized to outH x outW.
 */
function runWithIndexMaps(
  args: KernelArgs,
  kernel: "resize_nearest" | "resize_nearest_grad",
  source: tf.TensorInfo,
  target: tf.TensorInfo,
  shape: { readonly batchSize: number; readonly inHeight: number; readonly inWidth: number; readonly channels: number },
  outHeight: number,
  outWidth: number
): void {
  const backend = asHeapBackend(args.backend)
  const attrs = args.attrs as unknown as ResizeGradAttrs
  const indices = backend.makeOutput([outHeight + outWidth], "int32")
  const indexView = backend.typedArrayFromHeap(indices) as Int32Array
  indexView.set(sourceIndices(shape.inHeight, outHeight, attrs))
  indexView.set(sourceIndices(shape.inWidth, outWidth, attrs), outHeight)
  const indexAddress = addressOf(args.backend, indices)
  simdKernelsFor(args.backend)[kernel](
    addressOf(args.backend, source),
    addressOf(args.backend, target),
    indexAddress,
    indexAddress + 4 * outHeight,
    shape.batchSize,
    shape.inHeight,
    shape.inWidth,
    shape.channels,
    outHeight,
    outWidth
  )
  args.backend.disposeData(indices.dataId)
}

function resizeNearestNeighborGradWasm(args: KernelArgs): tf.TensorInfo {
  const images = args.inputs.images as tf.TensorInfo
  const dyInfo = args.inputs.dy as tf.TensorInfo
  const [batchSize, inHeight, inWidth, channels] = images.shape as unknown as ImageShape
  const [, outHeight, outWidth] = dyInfo.shape as unknown as ImageShape
  const out = asHeapBackend(args.backend).makeOutput([...images.shape], "float32")
  runWithIndexMaps(args, "resize_nearest_grad", dyInfo, out, { batchSize, inHeight, inWidth, channels }, outHeight, outWidth)
  return out
}

function resizeNearestNeighborGradCpu(args: KernelArgs): tf.TensorInfo {
  const images = args.inputs.images as tf.TensorInfo
  const dyInfo = args.inputs.dy as tf.TensorInfo
  const dy = args.backend.readSync(dyInfo.dataId) as Float32Array
  const dx = new Float32Array(images.shape.reduce((a, b) => a * b, 1))
  scatterGradient(dy, dyInfo.shape as unknown as ImageShape, dx, images.shape as unknown as ImageShape, args.attrs as unknown as ResizeGradAttrs)
  const backend = args.backend as unknown as { makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo }
  return backend.makeTensorInfo([...images.shape], "float32", dx)
}

/** The forward resize on wasm, through the same index mapping; dtypes other than float32 and int32 go to the package. */
function resizeNearestNeighborWasm(args: KernelArgs): tf.TensorInfo {
  const images = args.inputs.images as tf.TensorInfo
  if (images.dtype !== "float32" && images.dtype !== "int32") {
    return callOriginalKernel(tf.ResizeNearestNeighbor, "wasm", args) as tf.TensorInfo
  }
  const [batchSize, inHeight, inWidth, channels] = images.shape as unknown as ImageShape
  const [outHeight, outWidth] = (args.attrs as unknown as { readonly size: [number, number] }).size
  const out = asHeapBackend(args.backend).makeOutput([batchSize, outHeight, outWidth, channels], images.dtype)
  runWithIndexMaps(args, "resize_nearest", images, out, { batchSize, inHeight, inWidth, channels }, outHeight, outWidth)
  return out
}

export const resizeNearestNeighborConfig: tf.KernelConfig = {
  kernelName: tf.ResizeNearestNeighbor,
  backendName: "wasm",
  kernelFunc: resizeNearestNeighborWasm as unknown as tf.KernelFunc
}

export const resizeNearestNeighborGradConfig: tf.KernelConfig = {
  kernelName: tf.ResizeNearestNeighborGrad,
  backendName: "wasm",
  kernelFunc: resizeNearestNeighborGradWasm as unknown as tf.KernelFunc
}

export const resizeNearestNeighborGradCpuConfig: tf.KernelConfig = {
  kernelName: tf.ResizeNearestNeighborGrad,
  backendName: "cpu",
  kernelFunc: resizeNearestNeighborGradCpu as unknown as tf.KernelFunc
}
