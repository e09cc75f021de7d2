/**
 * Identity for the wasm backend that shares the input's memory instead of copying it, as
 * the cpu backend's Identity and the wasm backend's own Reshape do. tfjs-core clones every
 * tensor that a gradient saves for the backward pass (tf.profile counted 298 Identity calls
 * in one training step of the cpu-config U-Net), and tfjs-backend-wasm 4.22 copies each one. Sharing is safe because wasm kernels write
 * only into outputs they allocate, and the backend frees the memory when the last tensor
 * that refers to it is disposed. String tensors go to the package's kernel.
 */
import * as tf from "@tensorflow/tfjs-core"
import { callOriginalKernel } from "./original.ts"

function identity(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo
  if (x.dtype === "string") return callOriginalKernel(tf.Identity, "wasm", args) as tf.TensorInfo
  args.backend.incRef(x.dataId)
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype }
}

/** Cast to the tensor's own dtype shares memory like Identity; other casts convert as the package does. */
function cast(args: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap }): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo
  if ((args.attrs as { dtype?: tf.DataType }).dtype === x.dtype) return identity(args)
  return callOriginalKernel(tf.Cast, "wasm", args) as tf.TensorInfo
}

export const castConfig: tf.KernelConfig = {
  kernelName: tf.Cast,
  backendName: "wasm",
  kernelFunc: cast as unknown as tf.KernelFunc
}

export const identityConfig: tf.KernelConfig = {
  kernelName: tf.Identity,
  backendName: "wasm",
  kernelFunc: identity as unknown as tf.KernelFunc
}
