/**
 * Registers this project's kernels.
 * - Forward, for wasm: Slice, SplitV, Concat and PadV2 that copy inside the heap in long
 *   runs (tfjs-backend-wasm 4.22's Slice and Concat copy one pixel's channels per call),
 *   an Identity (and a Cast to the same dtype) that shares memory instead of copying, Conv2D and FusedConv2D on this
 *   project's SIMD matrix kernels (src/ml/wasm), Sum and Mean over every axis but the
 *   last without a transposed copy, FusedBatchNorm with per-channel statistics, and
 *   ResizeNearestNeighbor.
 * - Gradients, for wasm: tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter, its
 *   Conv2DBackpropInput is a slow direct loop, and its MaxPoolGrad drops gradient entries.
 * - For cpu and wasm alike: ResizeNearestNeighborGrad, whose cpu version is wrong for
 *   batches of more than one.
 * - For all backends: a FusedBatchNorm gradient with fewer full-size temporaries, and a
 *   Mean gradient without a full-size array of ones.
 * - For cpu and wasm: batch normalisation in training as one kernel and one gradient
 *   kernel, which tfjs-layers' BatchNormalization then uses (batch_norm.ts).
 * Registering again does nothing.
 */
import * as tf from "@tensorflow/tfjs-core"
import { fusedBatchNormConfig, useFusedBatchNormInTraining } from "./batch_norm.ts"
import { concatConfig } from "./concat.ts"
import { conv2dConfig, fusedConv2dConfig } from "./conv2d.ts"
import { conv2dBackpropFilterConfig } from "./conv2d_backprop_filter.ts"
import { conv2dBackpropInputConfig } from "./conv2d_backprop_input.ts"
import { registerFusedBatchNormGradient } from "./fused_batch_norm_grad.ts"
import { castConfig, identityConfig } from "./identity.ts"
import { maxPoolGradConfig } from "./max_pool_grad.ts"
import { registerMeanGradient } from "./mean_grad.ts"
import { rememberOriginalKernel } from "./original.ts"
import { padV2Config } from "./pad.ts"
import { meanConfig, sumConfig } from "./reduce.ts"
import {
  resizeNearestNeighborConfig,
  resizeNearestNeighborGradConfig,
  resizeNearestNeighborGradCpuConfig
} from "./resize_nearest_neighbor_grad.ts"
import { sliceConfig, splitVConfig } from "./slice.ts"

export const wasmForwardKernels: ReadonlyArray<tf.KernelConfig> = [
  sliceConfig,
  splitVConfig,
  concatConfig,
  padV2Config,
  identityConfig,
  castConfig,
  conv2dConfig,
  fusedConv2dConfig,
  sumConfig,
  meanConfig,
  fusedBatchNormConfig,
  resizeNearestNeighborConfig
]

export const wasmGradientKernels: ReadonlyArray<tf.KernelConfig> = [
  conv2dBackpropFilterConfig,
  conv2dBackpropInputConfig,
  maxPoolGradConfig,
  resizeNearestNeighborGradConfig
]

export const cpuGradientKernels: ReadonlyArray<tf.KernelConfig> = [resizeNearestNeighborGradCpuConfig]

/** Registers the forward and gradient kernels for wasm. */
export function registerWasmKernels(): void {
  registerAll(wasmForwardKernels)
  registerAll(wasmGradientKernels)
  registerFusedBatchNormGradient()
  registerMeanGradient()
  useFusedBatchNormInTraining()
}

export function registerCpuGradientKernels(): void {
  registerAll(cpuGradientKernels)
  registerFusedBatchNormGradient()
  registerMeanGradient()
  useFusedBatchNormInTraining()
}

function registerAll(configs: ReadonlyArray<tf.KernelConfig>): void {
  for (const config of configs) {
    const existing = tf.getKernel(config.kernelName, config.backendName)
    if (existing?.kernelFunc === config.kernelFunc) continue
    // Replaces the package's own kernel where it has one, keeping it for fallbacks.
    if (existing === undefined) {
      tf.registerKernel(config)
      continue
    }
    rememberOriginalKernel(config.kernelName, config.backendName, existing.kernelFunc)
    tf.unregisterKernel(config.kernelName, config.backendName)
    // The original's setup (such as binding its wasm function) must still run for fallbacks.
    const setupFunc = config.setupFunc ?? existing.setupFunc
    tf.registerKernel(setupFunc === undefined ? config : { ...config, setupFunc })
  }
}
