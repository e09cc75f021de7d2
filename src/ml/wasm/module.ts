/**
 * The compiled kernels.c module, instantiated on the linear memory of a tfjs wasm
 * backend, so its functions work on tensors in place. Addresses are byte offsets into
 * that memory (a tensor's `memoryOffset`). One instance is made per backend memory and
 * reused; the memory may grow between calls, which the instance sees.
 */
import type * as tf from "@tensorflow/tfjs-core"
import { wasmApi, type WasmMemory } from "./api.ts"
import { kernelsWasmBase64 } from "./kernels-wasm.ts"

/** The exports of kernels.c; see the comment above each function there for its contract. */
export interface SimdKernels {
  pack_panels(src: number, dst: number, rows: number, cols: number, rowStride: number, colStride: number): void
  pack_flipped_transposed(w: number, dst: number, fh: number, fw: number, c: number, k: number): void
  copy_window(
    src: number,
    dst: number,
    n: number,
    srcH: number,
    srcW: number,
    c: number,
    dstH: number,
    dstW: number,
    top: number,
    left: number
  ): void
  scatter_blocks(tmp: number, dst: number, n: number, h: number, w: number, fh: number, fw: number, c: number, dstH: number, dstW: number): void
  conv2d(
    x: number,
    packed: number,
    bias: number,
    y: number,
    n: number,
    inH: number,
    inW: number,
    inC: number,
    outH: number,
    outW: number,
    outC: number,
    fh: number,
    fw: number,
    strideH: number,
    strideW: number,
    dilationH: number,
    dilationW: number,
    relu: number
  ): void
  conv2d_backprop_filter(
    x: number,
    dy: number,
    dw: number,
    n: number,
    inH: number,
    inW: number,
    inC: number,
    outH: number,
    outW: number,
    outC: number,
    fh: number,
    fw: number,
    strideH: number,
    strideW: number,
    dilationH: number,
    dilationW: number
  ): void
  copy_runs32(src: number, srcStride: number, dst: number, dstStride: number, length: number, count: number): void
  sum_rows(x: number, out: number, rows: number, cols: number): void
  max_pool_grad(
    x: number,
    dy: number,
    dx: number,
    n: number,
    inH: number,
    inW: number,
    c: number,
    outH: number,
    outW: number,
    fh: number,
    fw: number,
    strideH: number,
    strideW: number,
    padTop: number,
    padLeft: number
  ): void
  resize_nearest_grad(dy: number, dx: number, rows: number, cols: number, n: number, inH: number, inW: number, c: number, outH: number, outW: number): void
  adam_update(
    w: number,
    m: number,
    v: number,
    g: number,
    count: number,
    beta1: number,
    oneMinusBeta1: number,
    beta2: number,
    oneMinusBeta2: number,
    oneMinusAccBeta1: number,
    oneMinusAccBeta2: number,
    epsilon: number,
    negativeLearningRate: number
  ): void
}

interface EmscriptenBackend {
  readonly wasm: { readonly asm: { readonly memory: WasmMemory } }
  readonly dataIdMap: { get(dataId: object): { readonly memoryOffset: number } | undefined }
}

let compiled: object | undefined
const instances = new WeakMap<WasmMemory, SimdKernels>()

/** Returns the kernels module bound to `memory`, instantiating it on first use. */
export function simdKernelsForMemory(memory: WasmMemory): SimdKernels {
  const existing = instances.get(memory)
  if (existing !== undefined) return existing
  compiled ??= new wasmApi.Module(Buffer.from(kernelsWasmBase64, "base64"))
  const instance = new wasmApi.Instance(compiled, { env: { memory } })
  const kernels = instance.exports as unknown as SimdKernels
  instances.set(memory, kernels)
  return kernels
}

/** Returns the kernels module bound to a tfjs wasm backend's heap. */
export function simdKernelsFor(backend: tf.KernelBackend): SimdKernels {
  return simdKernelsForMemory((backend as unknown as EmscriptenBackend).wasm.asm.memory)
}

/** Returns the heap address (byte offset) of a wasm backend tensor's data. */
export function addressOf(backend: tf.KernelBackend, info: tf.TensorInfo): number {
  const entry = (backend as unknown as EmscriptenBackend).dataIdMap.get(info.dataId)
  if (entry === undefined) throw new Error(`Tensor data ${String(info.dataId)} is not in the wasm backend (disposed?).`)
  return entry.memoryOffset
}
