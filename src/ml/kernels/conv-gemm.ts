/**
 * Convolutions and their gradients on this project's SIMD module (src/ml/wasm/kernels.c),
 * which computes them as register-tiled matrix products straight from the NHWC tensors.
 * Each function returns undefined for a case it does not cover, and the calling kernel
 * then falls back to its XNNPACK-based path.
 *
 * Padding becomes an explicit zero-filled copy (copy_window) before a valid convolution.
 * The input gradient of a stride-1 convolution is the valid convolution of the zero-padded
 * dy with the spatially flipped, in/out-swapped filter. The input gradient of a convolution
 * whose filter equals its stride and has no padding (a 2x2 stride-2 transposed
 * convolution's forward pass) is one matrix product dy x W^T, scattered into blocks.
 */
import type * as tf from "@tensorflow/tfjs-core"
import { addressOf, simdKernelsFor } from "../wasm/module.ts"

type Backend = tf.KernelBackend
type TensorInfo = tf.TensorInfo

interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo
  disposeData(dataId: object): boolean
}

const heapBackend = (backend: Backend) => backend as unknown as HeapBackend

function temporary(backend: Backend, floats: number): TensorInfo {
  return heapBackend(backend).makeOutput([floats], "float32")
}

function release(backend: Backend, ...infos: ReadonlyArray<TensorInfo | undefined>): void {
  for (const info of infos) if (info !== undefined) backend.disposeData(info.dataId)
}

/**
 * Returns x zero-padded by `top` rows and `left` columns to height x width, or x itself
 * when nothing needs adding (rows and columns past what the convolution reads may stay).
 */
function padForValidConv(backend: Backend, x: TensorInfo, top: number, left: number, height: number, width: number): TensorInfo {
  const [n, inH, inW, c] = x.shape as [number, number, number, number]
  if (top === 0 && left === 0 && height <= inH && width <= inW) return x
  const padded = heapBackend(backend).makeOutput([n, height, width, c], "float32")
  simdKernelsFor(backend).copy_window(addressOf(backend, x), addressOf(backend, padded), n, inH, inW, c, height, width, top, left)
  return padded
}

function supported(info: tf.backend_util.Conv2DInfo, ...tensors: ReadonlyArray<TensorInfo>): boolean {
  return info.dataFormat === "channelsLast" && tensors.every((t) => t.dtype === "float32")
}

/** Rows and columns of input that a valid convolution with `info`'s output size reads. */
function readExtent(info: tf.backend_util.Conv2DInfo): { height: number; width: number } {
  return {
    height: (info.outHeight - 1) * info.strideHeight + (info.filterHeight - 1) * info.dilationHeight + 1,
    width: (info.outWidth - 1) * info.strideWidth + (info.filterWidth - 1) * info.dilationWidth + 1
  }
}

/**
 * Computes Conv2D and FusedConv2D (bias and ReLU only): y = act(conv(x, filter) + bias).
 * Returns undefined for other activations, a bias that is not 1-D, or NCHW data.
 */
export function conv2dGemm(
  backend: Backend,
  x: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
  bias?: TensorInfo,
  activation: string = "linear"
): TensorInfo | undefined {
  if (!supported(info, x, filter)) return undefined
  if (activation !== "linear" && activation !== "relu") return undefined
  if (bias !== undefined && (bias.dtype !== "float32" || bias.shape.length !== 1 || bias.shape[0] !== info.outChannels)) return undefined
  const kernels = simdKernelsFor(backend)
  const extent = readExtent(info)
  const input = padForValidConv(backend, x, info.padInfo.top, info.padInfo.left, extent.height, extent.width)
  const [, paddedH, paddedW] = input.shape as [number, number, number, number]
  const depth = info.filterHeight * info.filterWidth * info.inChannels
  const packed = temporary(backend, Math.ceil(info.outChannels / 8) * 8 * depth)
  kernels.pack_panels(addressOf(backend, filter), addressOf(backend, packed), depth, info.outChannels, info.outChannels, 1)

  const out = heapBackend(backend).makeOutput([...info.outShape], "float32")
  kernels.conv2d(
    addressOf(backend, input),
    addressOf(backend, packed),
    bias === undefined ? 0 : addressOf(backend, bias),
    addressOf(backend, out),
    info.batchSize,
    paddedH,
    paddedW,
    info.inChannels,
    info.outHeight,
    info.outWidth,
    info.outChannels,
    info.filterHeight,
    info.filterWidth,
    info.strideHeight,
    info.strideWidth,
    info.dilationHeight,
    info.dilationWidth,
    activation === "relu" ? 1 : 0
  )
  release(backend, packed, input === x ? undefined : input)
  return out
}

/**
 * Output channels from which the filter gradient packs dy and x blocks first. On one core
 * of the development machine (AMD EPYC, Node 20.20) the packed kernel ran 3x3 filter
 * gradients of 128 to 512 channels at 47-50 GFLOP/s against 28-43 unpacked, and 64
 * channels at 42 against 47.
 */
const packedFilterGradientMinChannels = 128

/** Computes Conv2DBackpropFilter, dW [fh, fw, c, k] from x and dy. Needs k (output channels) to be a multiple of 4. */
export function conv2dBackpropFilterGemm(backend: Backend, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo | undefined {
  if (!supported(info, x, dy) || info.outChannels % 4 !== 0) return undefined
  const kernels = simdKernelsFor(backend)
  const extent = readExtent(info)
  const input = padForValidConv(backend, x, info.padInfo.top, info.padInfo.left, extent.height, extent.width)
  const [, paddedH, paddedW] = input.shape as [number, number, number, number]
  const out = heapBackend(backend).makeOutput([info.filterHeight, info.filterWidth, info.inChannels, info.outChannels], "float32")
  const shape = [
    info.batchSize,
    paddedH,
    paddedW,
    info.inChannels,
    info.outHeight,
    info.outWidth,
    info.outChannels,
    info.filterHeight,
    info.filterWidth,
    info.strideHeight,
    info.strideWidth,
    info.dilationHeight,
    info.dilationWidth
  ] as const
  if (info.outChannels >= packedFilterGradientMinChannels && info.outChannels % 8 === 0) {
    // About 256 KiB of packed dy per block, and at least 64 pixels.
    const blockPixels = Math.max(64, Math.floor(65536 / info.outChannels))
    const scratch = temporary(backend, blockPixels * (info.outChannels + 4))
    kernels.conv2d_backprop_filter_packed(
      addressOf(backend, input),
      addressOf(backend, dy),
      addressOf(backend, out),
      addressOf(backend, scratch),
      blockPixels,
      ...shape
    )
    release(backend, scratch)
  } else {
    kernels.conv2d_backprop_filter(addressOf(backend, input), addressOf(backend, dy), addressOf(backend, out), ...shape)
  }
  release(backend, input === x ? undefined : input)
  return out
}

/**
 * Computes Conv2DBackpropInput, dx [n, h, w, c] from dy and the filter [fh, fw, c, k], for
 * stride 1 (any dilation and padding) and for a filter equal to its stride without padding.
 */
export function conv2dBackpropInputGemm(backend: Backend, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo | undefined {
  if (!supported(info, dy, filter)) return undefined
  const { strideHeight, strideWidth, filterHeight, filterWidth, dilationHeight, dilationWidth } = info
  if (strideHeight === 1 && strideWidth === 1) return stride1BackpropInput(backend, dy, filter, info)
  const blockwise =
    filterHeight === strideHeight &&
    filterWidth === strideWidth &&
    dilationHeight === 1 &&
    dilationWidth === 1 &&
    info.padInfo.top === 0 &&
    info.padInfo.left === 0
  return blockwise ? blockwiseBackpropInput(backend, dy, filter, info) : undefined
}

function stride1BackpropInput(backend: Backend, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info
  const { filterHeight, filterWidth, dilationHeight, dilationWidth } = info
  const kernels = simdKernelsFor(backend)
  const spanH = (filterHeight - 1) * dilationHeight
  const spanW = (filterWidth - 1) * dilationWidth
  const paddedH = inHeight + spanH
  const paddedW = inWidth + spanW
  const padded = heapBackend(backend).makeOutput([batchSize, paddedH, paddedW, outChannels], "float32")
  kernels.copy_window(
    addressOf(backend, dy),
    addressOf(backend, padded),
    batchSize,
    outHeight,
    outWidth,
    outChannels,
    paddedH,
    paddedW,
    spanH - info.padInfo.top,
    spanW - info.padInfo.left
  )

  const depth = filterHeight * filterWidth * outChannels
  const packed = temporary(backend, Math.ceil(inChannels / 8) * 8 * depth)
  kernels.pack_flipped_transposed(addressOf(backend, filter), addressOf(backend, packed), filterHeight, filterWidth, inChannels, outChannels)

  const out = heapBackend(backend).makeOutput([batchSize, inHeight, inWidth, inChannels], "float32")
  kernels.conv2d(
    addressOf(backend, padded),
    addressOf(backend, packed),
    0,
    addressOf(backend, out),
    batchSize,
    paddedH,
    paddedW,
    outChannels,
    inHeight,
    inWidth,
    inChannels,
    filterHeight,
    filterWidth,
    1,
    1,
    dilationHeight,
    dilationWidth,
    0
  )
  release(backend, padded, packed)
  return out
}

function blockwiseBackpropInput(backend: Backend, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth } = info
  const kernels = simdKernelsFor(backend)
  const blockFloats = filterHeight * filterWidth * inChannels
  // B[kk][(i, j, cc)] = W[i][j][cc][kk]: rows step 1 through W, columns step k.
  const packed = temporary(backend, Math.ceil(blockFloats / 8) * 8 * outChannels)
  kernels.pack_panels(addressOf(backend, filter), addressOf(backend, packed), outChannels, blockFloats, 1, outChannels)

  const blocks = temporary(backend, batchSize * outHeight * outWidth * blockFloats)
  kernels.conv2d(
    addressOf(backend, dy),
    addressOf(backend, packed),
    0,
    addressOf(backend, blocks),
    batchSize,
    outHeight,
    outWidth,
    outChannels,
    outHeight,
    outWidth,
    blockFloats,
    1,
    1,
    1,
    1,
    1,
    1,
    0
  )

  const out = heapBackend(backend).makeOutput([batchSize, inHeight, inWidth, inChannels], "float32")
  kernels.scatter_blocks(
    addressOf(backend, blocks),
    addressOf(backend, out),
    batchSize,
    outHeight,
    outWidth,
    filterHeight,
    filterWidth,
    inChannels,
    inHeight,
    inWidth
  )
  release(backend, packed, blocks)
  return out
}
