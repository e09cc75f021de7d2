/**
 * Slice and SplitV for the wasm backend. tfjs-backend-wasm 4.22's Slice copies the whole
 * input out of the heap (readSync) and then copies one innermost row at a time, which for
 * NHWC tensors is one `set` call per pixel of a few channels. This one first merges axes
 * so that each copied run is as long as possible, then copies runs inside the heap.
 *
 * Axis merging (row-major, last axis fastest): axes a and a + 1 merge into one axis of
 * extent dim[a] * dim[a + 1] when axis a + 1 is taken whole (begin 0, size = dim), with
 * begin[a] * dim[a + 1] and size[a] * dim[a + 1]; or when axis a has size 1, with
 * begin[a] * dim[a + 1] + begin[a + 1] and size[a + 1]. A centre crop of [n, h, w, c]
 * then copies runs of (cropped w) * c elements, one per output row. String tensors go to
 * the package's kernel.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { SimdKernels } from "../wasm/module.ts"
import { copyRuns, heapElements, isHeapDtype } from "./copy.ts"
import { asHeapBackend, type WasmBackendHeap } from "./heap.ts"
import { callOriginalKernel } from "./original.ts"

/** A slice after axis merging: extents of the input, begins and sizes, same length. */
export interface MergedSlice {
  readonly shape: ReadonlyArray<number>
  readonly begin: ReadonlyArray<number>
  readonly size: ReadonlyArray<number>
}

/** Merges adjacent axes of a slice where the merged axis still selects one contiguous range. */
export function mergeSliceAxes(shape: ReadonlyArray<number>, begin: ReadonlyArray<number>, size: ReadonlyArray<number>): MergedSlice {
  const mergedShape: Array<number> = []
  const mergedBegin: Array<number> = []
  const mergedSize: Array<number> = []
  for (let axis = 0; axis < shape.length; axis++) {
    const dim = shape[axis]!
    const start = begin[axis]!
    const extent = size[axis]!
    const last = mergedShape.length - 1
    if (last < 0) {
      mergedShape.push(dim)
      mergedBegin.push(start)
      mergedSize.push(extent)
    } else if (start === 0 && extent === dim) {
      mergedShape[last] = mergedShape[last]! * dim
      mergedBegin[last] = mergedBegin[last]! * dim
      mergedSize[last] = mergedSize[last]! * dim
    } else if (mergedSize[last] === 1) {
      mergedShape[last] = mergedShape[last]! * dim
      mergedBegin[last] = mergedBegin[last]! * dim + start
      mergedSize[last] = extent
    } else {
      mergedShape.push(dim)
      mergedBegin.push(start)
      mergedSize.push(extent)
    }
  }
  // A scalar is a one-element run.
  if (mergedShape.length === 0) return { shape: [1], begin: [0], size: [1] }
  return { shape: mergedShape, begin: mergedBegin, size: mergedSize }
}

/**
 * Copies x[begin : begin + size] into a new tensor. `begin` and `size` must be resolved
 * (no -1) and inside x, and x must not be a string tensor.
 */
export function sliceHeapTensor(
  backend: WasmBackendHeap,
  x: tf.TensorInfo,
  begin: ReadonlyArray<number>,
  size: ReadonlyArray<number>
): tf.TensorInfo {
  const out = backend.makeOutput([...size], x.dtype)
  if (size.some((extent) => extent === 0) || !isHeapDtype(x.dtype)) return out
  const { heap, offsetOf, kernels } = heapElements(backend, x.dtype, out)
  copyBox(heap, mergeSliceAxes(x.shape, begin, size), offsetOf(x), offsetOf(out), "gather", kernels)
  return out
}

/**
 * Copies between a box of a larger row-major tensor and a contiguous tensor of the box's
 * shape. The large tensor has extents `box.shape`, and the box starts at `box.begin` with
 * extents `box.size`. "gather" reads the box into the contiguous tensor (Slice), and
 * "scatter" writes the contiguous tensor into the box (Pad). Offsets are heap elements of
 * each tensor's first element.
 */
export function copyBox(
  heap: Int32Array | Uint8Array,
  box: MergedSlice,
  largeStart: number,
  contiguousStart: number,
  direction: "gather" | "scatter",
  kernels?: SimdKernels
): void {
  const rank = box.shape.length

  // Row-major strides of the large tensor; the last merged axis is the contiguous run.
  const strides = new Array<number>(rank)
  strides[rank - 1] = 1
  for (let axis = rank - 2; axis >= 0; axis--) strides[axis] = strides[axis + 1]! * box.shape[axis + 1]!
  let large = largeStart
  for (let axis = 0; axis < rank; axis++) large += box.begin[axis]! * strides[axis]!
  const runLength = box.size[rank - 1]!
  let contiguous = contiguousStart
  const copy = (rows: number, largeStride: number) => {
    if (direction === "gather") copyRuns(heap, large, largeStride, contiguous, runLength, runLength, rows, kernels)
    else copyRuns(heap, contiguous, runLength, large, largeStride, runLength, rows, kernels)
  }
  if (rank === 1) {
    copy(1, 0)
    return
  }

  // One copy call covers the second-to-last axis. An odometer walks the axes before it
  // and keeps `large` at the start of the current block.
  const rowAxis = rank - 2
  const rows = box.size[rowAxis]!
  const index = new Array<number>(rowAxis).fill(0)
  let blocks = 1
  for (let axis = 0; axis < rowAxis; axis++) blocks *= box.size[axis]!
  for (let block = 0; block < blocks; block++) {
    copy(rows, strides[rowAxis]!)
    contiguous += rows * runLength
    for (let axis = rowAxis - 1; axis >= 0; axis--) {
      index[axis]! += 1
      large += strides[axis]!
      if (index[axis]! < box.size[axis]!) break
      large -= box.size[axis]! * strides[axis]!
      index[axis] = 0
    }
  }
}

interface SliceAttrs {
  readonly begin: number | Array<number>
  readonly size: number | Array<number>
}

function slice(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo
  if (!isHeapDtype(x.dtype)) return callOriginalKernel(tf.Slice, "wasm", args) as tf.TensorInfo
  const attrs = args.attrs as unknown as SliceAttrs
  const [begin, size] = tf.slice_util.parseSliceParams(x, attrs.begin, attrs.size) as [Array<number>, Array<number>]
  tf.slice_util.assertParamsValid(x, begin, size)
  return sliceHeapTensor(asHeapBackend(args.backend), x, begin, size)
}

interface SplitVAttrs {
  readonly numOrSizeSplits: number | Array<number>
  readonly axis: number | Array<number>
}

function splitV(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }): Array<tf.TensorInfo> {
  const x = args.inputs.x as tf.TensorInfo
  if (!isHeapDtype(x.dtype)) return callOriginalKernel(tf.SplitV, "wasm", args) as Array<tf.TensorInfo>
  const attrs = args.attrs as unknown as SplitVAttrs
  const axis = tf.util.parseAxisParam(attrs.axis, x.shape)[0]!
  const splitSizes = tf.backend_util.prepareSplitSize(x, attrs.numOrSizeSplits, axis)
  const backend = asHeapBackend(args.backend)
  const begin = new Array<number>(x.shape.length).fill(0)
  return splitSizes.map((extent) => {
    const size = [...x.shape]
    size[axis] = extent
    const part = sliceHeapTensor(backend, x, begin, size)
    begin[axis]! += extent
    return part
  })
}

export const sliceConfig: tf.KernelConfig = {
  kernelName: tf.Slice,
  backendName: "wasm",
  kernelFunc: slice as unknown as tf.KernelFunc
}

export const splitVConfig: tf.KernelConfig = {
  kernelName: tf.SplitV,
  backendName: "wasm",
  kernelFunc: splitV as unknown as tf.KernelFunc
}
