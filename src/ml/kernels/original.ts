/**
 * The kernels that this project's wasm kernels replace, kept so that a replacement can
 * hand the cases it does not implement (string tensors, mixed dtypes) back to the package's
 * own kernel.
 */
import * as tf from "@tensorflow/tfjs-core"

const originals = new Map<string, tf.KernelFunc>()

function key(kernelName: string, backendName: string): string {
  return `${backendName}/${kernelName}`
}

/** Records `kernelFunc` as the original of kernelName on backendName unless one is recorded. */
export function rememberOriginalKernel(kernelName: string, backendName: string, kernelFunc: tf.KernelFunc): void {
  if (!originals.has(key(kernelName, backendName))) originals.set(key(kernelName, backendName), kernelFunc)
}

/** Runs the replaced kernel, and raises an error when none was recorded for that name. */
export function callOriginalKernel(
  kernelName: string,
  backendName: string,
  args: Parameters<tf.KernelFunc>[0]
): ReturnType<tf.KernelFunc> {
  const original = originals.get(key(kernelName, backendName))
  if (original === undefined) {
    throw new Error(`No original ${backendName} kernel ${kernelName} was recorded, so this case has no fallback.`)
  }
  return original(args)
}
