/**
 * Chooses and initialises the TensorFlow.js backend that training and inference run on.
 *
 * Without a forced choice the order is tfjs-node-gpu, tfjs-node, wasm, cpu: the first two
 * are optional native packages that often fail to install, so any load error falls through
 * to the next. The wasm backend gets this project's data-movement and gradient kernels and
 * cpu its gradient kernels (src/ml/kernels). wasm loads its .wasm binaries from the
 * installed package folder, so nothing is fetched.
 */
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { isMainThread } from "node:worker_threads"
import * as tf from "@tensorflow/tfjs-core"
// tfjs-layers registers every op's gradient on import (tfjs-core's Node build does not).
import "@tensorflow/tfjs-layers"
import * as Data from "effect/Data"
import { registerCpuGradientKernels, registerWasmKernels } from "./kernels/index.ts"
import { type SimdKernelVariant, simdKernelVariant } from "./wasm/module.ts"

export const backendNames = ["tensorflow-gpu", "tensorflow", "wasm", "cpu"] as const
export type BackendName = (typeof backendNames)[number]

/** The backend in use, as lineage and the train stage's fingerprint record it. */
export interface BackendInfo {
  readonly name: BackendName
  /** Version of the npm package that provides the backend. */
  readonly version: string
  /** Threads the backend computes on (1 for the single-threaded wasm build). */
  readonly threads: number
  readonly simd: boolean
  /** wasm only: the build of this project's SIMD kernels in use (src/ml/wasm/module.ts). */
  readonly simdKernels?: SimdKernelVariant
}

export class UnknownBackendError extends Data.TaggedError("UnknownBackendError")<{
  readonly requested: string
  readonly expected: ReadonlyArray<string>
}> {
  override get message() {
    return `Unknown TensorFlow.js backend "${this.requested}". Choose one of: ${this.expected.join(", ")}.`
  }
}

export class BackendLoadError extends Data.TaggedError("BackendLoadError")<{
  readonly requested: BackendName
  readonly packageName: string
  readonly cause: unknown
}> {
  override get message() {
    const reason = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return (
      `Failed to load the TensorFlow.js backend "${this.requested}" from ${this.packageName}: ${reason}. ` +
      `Install ${this.packageName}, or choose another backend (${backendNames.join(", ")}) or none to pick automatically.`
    )
  }
}

const packageOf: Record<BackendName, string> = {
  "tensorflow-gpu": "@tensorflow/tfjs-node-gpu",
  tensorflow: "@tensorflow/tfjs-node",
  wasm: "@tensorflow/tfjs-backend-wasm",
  cpu: "@tensorflow/tfjs-backend-cpu"
}

const require = createRequire(import.meta.url)

function packageVersion(packageName: string): string {
  const manifest = require(`${packageName}/package.json`) as { version: string }
  return manifest.version
}

async function activateNative(name: "tensorflow-gpu" | "tensorflow"): Promise<BackendInfo> {
  // The native packages register the "tensorflow" backend on import.
  await import(packageOf[name])
  if (!(await tf.setBackend("tensorflow"))) throw new Error("tf.setBackend('tensorflow') returned false")
  await tf.ready()
  return { name, version: packageVersion(packageOf[name]), threads: nativeThreads(), simd: true }
}

function nativeThreads(): number {
  const fromEnv = Number(process.env.TF_NUM_INTRAOP_THREADS)
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : 0
}

async function activateWasm(options: { readonly threads?: number }): Promise<BackendInfo> {
  const wasm = await import("@tensorflow/tfjs-backend-wasm")
  const distDir = join(dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json")), "dist")
  wasm.setWasmPaths(distDir + "/")
  if (options.threads !== undefined) wasm.setThreadsCount(options.threads)
  registerWasmKernels()
  if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') returned false")
  await tf.ready()
  const simd = Boolean(await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"))
  return { name: "wasm", version: packageVersion(packageOf.wasm), threads: wasm.getThreadsCount(), simd, simdKernels: simdKernelVariant() }
}

async function activateCpu(): Promise<BackendInfo> {
  await import("@tensorflow/tfjs-backend-cpu")
  registerCpuGradientKernels()
  if (!(await tf.setBackend("cpu"))) throw new Error("tf.setBackend('cpu') returned false")
  await tf.ready()
  // tfjs-backend-cpu prints its "install our node backend" banner on each backend's first
  // write; training and inference threads would repeat the main thread's.
  if (!isMainThread) (tf.backend() as unknown as { firstUse: boolean }).firstUse = false
  return { name: "cpu", version: packageVersion(packageOf.cpu), threads: 1, simd: false }
}

async function activate(name: BackendName, options: { readonly threads?: number }): Promise<BackendInfo> {
  switch (name) {
    case "tensorflow-gpu":
    case "tensorflow":
      return activateNative(name)
    case "wasm":
      return activateWasm(options)
    case "cpu":
      return activateCpu()
  }
}

function isBackendName(value: string): value is BackendName {
  return (backendNames as ReadonlyArray<string>).includes(value)
}

export interface BackendOptions {
  /** Forces one backend; loading errors are then raised instead of falling through. */
  readonly backend?: string
  /** wasm only: threads for the threaded build where the runtime supports it. */
  readonly threads?: number
  /** Receives one line per backend that failed to load during automatic selection. */
  readonly onSkip?: (name: BackendName, cause: unknown) => void
}

/**
 * Activates the requested backend, or the first that loads in the order tensorflow-gpu,
 * tensorflow, wasm, cpu, and returns what was chosen.
 */
export async function initBackend(options: BackendOptions = {}): Promise<BackendInfo> {
  if (options.backend !== undefined) {
    const requested = options.backend
    if (!isBackendName(requested)) throw new UnknownBackendError({ requested, expected: backendNames })
    try {
      return await activate(requested, options)
    } catch (cause) {
      throw new BackendLoadError({ requested, packageName: packageOf[requested], cause })
    }
  }

  let lastCause: unknown = undefined
  for (const name of backendNames) {
    try {
      return await activate(name, options)
    } catch (cause) {
      lastCause = cause
      options.onSkip?.(name, cause)
    }
  }
  throw new BackendLoadError({ requested: "cpu", packageName: packageOf.cpu, cause: lastCause })
}
