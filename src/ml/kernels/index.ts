/**
 * Registers this project's gradient kernels for the wasm backend (tfjs-backend-wasm 4.22
 * has no Conv2DBackpropFilter, and its Conv2DBackpropInput is a slow direct loop).
 * Must run before the wasm backend is first used; calling it again does nothing.
 */
import * as tf from "@tensorflow/tfjs-core"
import { conv2dBackpropFilterConfig } from "./conv2d_backprop_filter.ts"
import { conv2dBackpropInputConfig } from "./conv2d_backprop_input.ts"

export const wasmGradientKernels: ReadonlyArray<tf.KernelConfig> = [conv2dBackpropFilterConfig, conv2dBackpropInputConfig]

export function registerWasmGradientKernels(): void {
  for (const config of wasmGradientKernels) {
    const existing = tf.getKernel(config.kernelName, "wasm")
    if (existing?.kernelFunc === config.kernelFunc) continue
    // Replaces the package's own kernel where it has one.
    if (existing !== undefined) tf.unregisterKernel(config.kernelName, "wasm")
    tf.registerKernel(config)
  }
}
