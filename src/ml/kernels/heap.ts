/**
 * Access to wasm backend tensors as typed arrays over the module's heap, for kernels
 * written as plain loops. Views are taken after every allocation, because allocating can
 * grow (and so replace) the heap buffer.
 */
import type * as tf from "@tensorflow/tfjs-core"

export interface WasmBackendHeap {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array
}

export function asHeapBackend(backend: tf.KernelBackend): WasmBackendHeap {
  return backend as unknown as WasmBackendHeap
}

export function float32View(backend: WasmBackendHeap, info: tf.TensorInfo): Float32Array {
  if (info.dtype !== "float32") throw new Error(`Expected a float32 tensor, got ${info.dtype}.`)
  return backend.typedArrayFromHeap(info) as Float32Array
}
