/**
 * Conv2D and FusedConv2D for the wasm backend on this project's SIMD matrix kernels
 * (conv-gemm.ts). tfjs-backend-wasm 4.22 runs both through XNNPACK, which builds and packs
 * a new operator whenever the filter tensor changes, as it does after every training step.
 * Cases the SIMD kernels do not cover (NCHW, PReLU and leaky ReLU, a bias that is not 1-D)
 * go to the package's kernels.
 */
import * as tf from "@tensorflow/tfjs-core"
import { conv2dGemm } from "./conv-gemm.ts"
import { callOriginalKernel } from "./original.ts"

interface ConvAttrs {
  readonly strides: [number, number] | number
  readonly pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding
  readonly dataFormat: "NHWC" | "NCHW"
  readonly dilations: [number, number] | number
  readonly dimRoundingMode?: "floor" | "round" | "ceil"
  readonly activation?: string
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }

function convInfo(x: tf.TensorInfo, filter: tf.TensorInfo, attrs: ConvAttrs): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    attrs.strides,
    attrs.dilations,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    attrs.dataFormat === "NCHW" ? "channelsFirst" : "channelsLast"
  )
}

function conv2d(args: KernelArgs): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo
  const filter = args.inputs.filter as tf.TensorInfo
  const info = convInfo(x, filter, args.attrs as unknown as ConvAttrs)
  return conv2dGemm(args.backend, x, filter, info) ?? (callOriginalKernel(tf.Conv2D, "wasm", args) as tf.TensorInfo)
}

function fusedConv2d(args: KernelArgs): tf.TensorInfo {
  const { x, filter, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>
  const attrs = args.attrs as unknown as ConvAttrs
  if (preluActivationWeights === undefined || preluActivationWeights === null) {
    const info = convInfo(x!, filter!, attrs)
    const result = conv2dGemm(args.backend, x!, filter!, info, bias ?? undefined, attrs.activation ?? "linear")
    if (result !== undefined) return result
  }
  return callOriginalKernel(tf.FusedConv2D, "wasm", args) as tf.TensorInfo
}

export const conv2dConfig: tf.KernelConfig = {
  kernelName: tf.Conv2D,
  backendName: "wasm",
  kernelFunc: conv2d as unknown as tf.KernelFunc
}

export const fusedConv2dConfig: tf.KernelConfig = {
  kernelName: tf.FusedConv2D,
  backendName: "wasm",
  kernelFunc: fusedConv2d as unknown as tf.KernelFunc
}
