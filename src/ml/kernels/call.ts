/**
 * Helpers for composing the wasm backend's registered kernels inside our own kernels.
 *
 * A kernel function may not run ops through the engine, so it calls the other kernels'
 * functions directly and frees every intermediate it made with `release`.
 */
import * as tf from "@tensorflow/tfjs-core"

export type TensorInfo = tf.TensorInfo
export type Backend = tf.KernelBackend

/** Runs the registered wasm kernel `kernelName` on `inputs` with `attrs`. */
export function callWasmKernel(
  kernelName: string,
  backend: Backend,
  inputs: Record<string, TensorInfo>,
  attrs: Record<string, unknown> = {}
): TensorInfo {
  const config = tf.getKernel(kernelName, "wasm")
  if (config === undefined) throw new Error(`The wasm backend has no ${kernelName} kernel registered.`)
  const result = config.kernelFunc({ inputs, backend, attrs: attrs as tf.NamedAttrMap })
  if (Array.isArray(result)) throw new Error(`The wasm kernel ${kernelName} returned several tensors, expected one.`)
  return result
}

/** Frees intermediates created with `callWasmKernel` (reshapes share data and count references). */
export function release(backend: Backend, ...infos: ReadonlyArray<TensorInfo>): void {
  for (const info of infos) backend.disposeData(info.dataId)
}

export function transpose(backend: Backend, x: TensorInfo, perm: ReadonlyArray<number>): TensorInfo {
  return callWasmKernel("Transpose", backend, { x }, { perm })
}

export function reshape(backend: Backend, x: TensorInfo, shape: ReadonlyArray<number>): TensorInfo {
  return callWasmKernel("Reshape", backend, { x }, { shape })
}

/** Slices `size` elements from `begin` on every axis. */
export function slice(
  backend: Backend,
  x: TensorInfo,
  begin: ReadonlyArray<number>,
  size: ReadonlyArray<number>
): TensorInfo {
  return callWasmKernel("Slice", backend, { x }, { begin, size })
}

export function pad(backend: Backend, x: TensorInfo, paddings: ReadonlyArray<readonly [number, number]>): TensorInfo {
  return callWasmKernel("PadV2", backend, { x }, { paddings, constantValue: 0 })
}

/**
 * Pads (positive amounts) or crops (negative amounts) axes 1 and 2 of an NHWC tensor, so
 * that callers can express a convolution whose implicit padding would be negative.
 */
export function padOrCropHW(
  backend: Backend,
  x: TensorInfo,
  top: number,
  bottom: number,
  left: number,
  right: number
): TensorInfo {
  const [n, h, w, c] = x.shape as [number, number, number, number]
  const cropTop = Math.max(0, -top)
  const cropBottom = Math.max(0, -bottom)
  const cropLeft = Math.max(0, -left)
  const cropRight = Math.max(0, -right)
  let current = x
  if (cropTop + cropBottom + cropLeft + cropRight > 0) {
    current = slice(backend, x, [0, cropTop, cropLeft, 0], [n, h - cropTop - cropBottom, w - cropLeft - cropRight, c])
  }
  const padTop = Math.max(0, top)
  const padBottom = Math.max(0, bottom)
  const padLeft = Math.max(0, left)
  const padRight = Math.max(0, right)
  if (padTop + padBottom + padLeft + padRight === 0) {
    return current === x ? callWasmKernel("Identity", backend, { x }) : current
  }
  const padded = pad(backend, current, [
    [0, 0],
    [padTop, padBottom],
    [padLeft, padRight],
    [0, 0]
  ])
  if (current !== x) release(backend, current)
  return padded
}

/**
 * Splits a pad-or-crop of axes 1 and 2 into its crop, applied here, and its padding,
 * returned as explicit Conv2D padding. The convolution then pads implicitly and no padded
 * copy of `x` is made.
 */
export function cropForConvPadding(
  backend: Backend,
  x: TensorInfo,
  top: number,
  bottom: number,
  left: number,
  right: number
): { readonly input: TensorInfo; readonly pad: tf.backend_util.ExplicitPadding } {
  const input = padOrCropHW(backend, x, Math.min(0, top), Math.min(0, bottom), Math.min(0, left), Math.min(0, right))
  const pad: tf.backend_util.ExplicitPadding = [
    [0, 0],
    [Math.max(0, top), Math.max(0, bottom)],
    [Math.max(0, left), Math.max(0, right)],
    [0, 0]
  ]
  return { input, pad }
}
