/**
 * Element copies between wasm tensors for the data-movement kernels (Slice, SplitV,
 * Concat). Input and output tensors live in the same wasm heap, so a copy is a
 * `copyWithin` on one view of the heap: no intermediate arrays and no per-row view objects.
 * Offsets are in elements of the tensor's dtype, counted from the start of the heap.
 */
import type * as tf from "@tensorflow/tfjs-core"
import { type SimdKernels, simdKernelsFor } from "../wasm/module.ts"
import type { WasmBackendHeap } from "./heap.ts"

/** Dtypes whose data is in the wasm heap (strings are kept as JavaScript bytes). */
export type HeapDtype = "float32" | "int32" | "bool"

export function isHeapDtype(dtype: tf.DataType): dtype is HeapDtype {
  return dtype === "float32" || dtype === "int32" || dtype === "bool"
}

/**
 * A view of the whole heap with the element width of `dtype`. float32 data is copied
 * through an Int32Array view, so NaN payloads and signed zeros come through bit for bit.
 */
export interface HeapElements {
  readonly heap: Int32Array | Uint8Array
  /** Element offset of a tensor's first element in `heap`. */
  offsetOf(info: tf.TensorInfo): number
  /** The SIMD module on the same heap, which copies 32-bit runs. */
  readonly kernels: SimdKernels
}

/** Takes the heap view. Call it after the last makeOutput, because allocating may replace the heap. */
export function heapElements(backend: WasmBackendHeap, dtype: HeapDtype, anyTensor: tf.TensorInfo): HeapElements {
  const buffer = backend.typedArrayFromHeap(anyTensor).buffer
  const bytesPerElement = dtype === "bool" ? 1 : 4
  const heap = bytesPerElement === 1 ? new Uint8Array(buffer) : new Int32Array(buffer)
  return {
    heap,
    offsetOf: (info) => backend.typedArrayFromHeap(info).byteOffset / bytesPerElement,
    kernels: simdKernelsFor(backend as unknown as tf.KernelBackend)
  }
}

// Below this many elements a plain loop beats the call overhead of copyWithin: on Node
// 20.20 (AMD EPYC), a million 4-element runs took 13 ms by loop and 44 ms by copyWithin,
// and the two were even at 16 elements.
const loopCopyLimit = 16

/**
 * Copies `count` runs of `length` elements: run r goes from source + r * sourceStride to
 * target + r * targetStride. The ranges must not overlap, which is true for distinct tensors.
 * 32-bit elements are copied by copy_runs32 of `kernels` when given, in one call.
 */
export function copyRuns(
  heap: Int32Array | Uint8Array,
  source: number,
  sourceStride: number,
  target: number,
  targetStride: number,
  length: number,
  count: number,
  kernels?: SimdKernels
): void {
  if (kernels !== undefined && heap instanceof Int32Array) {
    kernels.copy_runs32(source * 4, sourceStride, target * 4, targetStride, length, count)
    return
  }
  if (length >= loopCopyLimit) {
    for (let run = 0; run < count; run++) {
      heap.copyWithin(target, source, source + length)
      source += sourceStride
      target += targetStride
    }
    return
  }
  for (let run = 0; run < count; run++) {
    for (let k = 0; k < length; k++) heap[target + k] = heap[source + k]!
    source += sourceStride
    target += targetStride
  }
}
