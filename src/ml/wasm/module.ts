/**
 * The compiled kernels.c module, instantiated on the linear memory of a tfjs wasm
 * backend, so its functions work on tensors in place. Addresses are byte offsets into
 * that memory (a tensor's `memoryOffset`). One instance is made per backend memory and
 * reused. The memory may grow between calls, and the instance then uses the grown memory.
 *
 * The relaxed-SIMD build is used where the engine accepts it, unless
 * OCTFLOW_SIMD_KERNELS=simd asks for the plain SIMD build. Its fused multiply-adds round
 * differently, so the variant is part of the train and evaluate fingerprints.
 */
import { setFlagsFromString } from "node:v8"
import type * as tf from "@tensorflow/tfjs-core"
import { wasmApi, type WasmMemory } from "./api.ts"
import { kernelsRelaxedWasmBase64, kernelsWasmBase64 } from "./kernels-wasm.ts"

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
  resize_nearest(x: number, y: number, rows: number, cols: number, n: number, inH: number, inW: number, c: number, outH: number, outW: number): void
  resize_nearest_grad(dy: number, dx: number, rows: number, cols: number, n: number, inH: number, inW: number, c: number, outH: number, outW: number): void
  madd_probe(a: number, b: number, c: number): number
  batch_norm_inference(
    x: number,
    mean: number,
    variance: number,
    gamma: number,
    beta: number,
    y: number,
    scratch: number,
    rows: number,
    cols: number,
    epsilon: number
  ): void
  batch_norm_training(
    x: number,
    gamma: number,
    beta: number,
    y: number,
    mean: number,
    variance: number,
    scratch: number,
    rows: number,
    cols: number,
    epsilon: number
  ): void
  batch_norm_training_grad(
    dy: number,
    x: number,
    gamma: number,
    mean: number,
    variance: number,
    dx: number,
    dgamma: number,
    dbeta: number,
    scratch: number,
    rows: number,
    cols: number,
    epsilon: number
  ): void
  conv2d_backprop_filter_packed(
    x: number,
    dy: number,
    dw: number,
    scratch: number,
    blockPixels: number,
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

/**
 * Build of kernels.c in use: "relaxed-fma" (relaxed SIMD, multiply-adds fused), "relaxed"
 * (relaxed SIMD, rounded twice) or "simd" (plain SIMD).
 */
export type SimdKernelVariant = "relaxed-fma" | "relaxed" | "simd"

export class InvalidSimdKernelsError extends Error {
  readonly _tag = "InvalidSimdKernelsError"
  constructor(readonly value: string) {
    super(`OCTFLOW_SIMD_KERNELS is "${value}"; expected "simd" (plain SIMD kernels), or unset to use relaxed SIMD where available`)
  }
}

function relaxedSimdAccepted(bytes: Uint8Array): boolean {
  if (wasmApi.validate(bytes)) return true
  // NOTE: Node 20 (V8 11.3) ships relaxed SIMD behind this flag; V8 11.4 and later enable it
  // by default. The flag applies to modules compiled after it is set, in every thread.
  setFlagsFromString("--experimental-wasm-relaxed-simd")
  return wasmApi.validate(bytes)
}

let compiled: { readonly module: object; readonly variant: SimdKernelVariant } | undefined

function compiledKernels(): { readonly module: object; readonly variant: SimdKernelVariant } {
  if (compiled !== undefined) return compiled
  const requested = process.env.OCTFLOW_SIMD_KERNELS
  if (requested !== undefined && requested !== "" && requested !== "simd") throw new InvalidSimdKernelsError(requested)
  const relaxed = Buffer.from(kernelsRelaxedWasmBase64, "base64")
  if (requested !== "simd" && relaxedSimdAccepted(relaxed)) {
    const module = new wasmApi.Module(relaxed)
    const probe = new wasmApi.Instance(module, { env: { memory: new wasmApi.Memory({ initial: 1 }) } }).exports as SimdKernels
    const fused = probe.madd_probe(1 + 2 ** -12, 1 + 2 ** -12, -(1 + 2 ** -11)) !== 0
    compiled = { module, variant: fused ? "relaxed-fma" : "relaxed" }
  } else {
    compiled = { module: new wasmApi.Module(Buffer.from(kernelsWasmBase64, "base64")), variant: "simd" }
  }
  return compiled
}

/** Returns the build of kernels.c that this process uses, compiling it on first use; see SimdKernelVariant. */
export function simdKernelVariant(): SimdKernelVariant {
  return compiledKernels().variant
}

const instances = new WeakMap<WasmMemory, SimdKernels>()

/** Returns the kernels module bound to `memory`, instantiating it on first use. */
export function simdKernelsForMemory(memory: WasmMemory): SimdKernels {
  const existing = instances.get(memory)
  if (existing !== undefined) return existing
  const instance = new wasmApi.Instance(compiledKernels().module, { env: { memory } })
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
