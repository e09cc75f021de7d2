/**
 * Decides which tfjs backend the train and evaluate stages will use, without loading
 * TensorFlow.js: loading it takes seconds, and the decision is needed on every run for
 * the fingerprint, also when every stage is cached. The stage then loads exactly that
 * backend, and fails with the loader's error if it does not load.
 *
 * Order: `OCTFLOW_BACKEND` when set (the CLI's `--backend` sets it), else tfjs-node-gpu,
 * then tfjs-node when their native binding is installed, else wasm.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { availableParallelism } from "node:os"
import { type SimdKernelVariant, simdKernelVariant } from "../../src/ml/wasm/module.ts"
import { parseThreads } from "./threads.ts"

export { InvalidThreadsError, maxThreads, parseThreads } from "./threads.ts"
import { dirname, join } from "node:path"

/** The names src/ml/backend.ts accepts; repeated here because importing it loads tfjs. */
const backendNames = ["tensorflow-gpu", "tensorflow", "wasm", "cpu"] as const
export type BackendName = (typeof backendNames)[number]

const require = createRequire(import.meta.url)

const packageOf: Readonly<Record<BackendName, string>> = {
  "tensorflow-gpu": "@tensorflow/tfjs-node-gpu",
  tensorflow: "@tensorflow/tfjs-node",
  wasm: "@tensorflow/tfjs-backend-wasm",
  cpu: "@tensorflow/tfjs-backend-cpu"
}

const packageDir = (name: string): string | undefined => {
  try {
    return dirname(require.resolve(`${name}/package.json`))
  } catch {
    return undefined
  }
}

/** True when a native tfjs package and its compiled binding (lib/napi-v*) are installed. */
const hasNativeBinding = (name: string): boolean => {
  const dir = packageDir(name)
  if (dir === undefined || !existsSync(join(dir, "lib"))) return false
  return readdirSync(join(dir, "lib")).some(
    (entry) => entry.startsWith("napi-v") && existsSync(join(dir, "lib", entry, "tfjs_binding.node"))
  )
}

export class UnknownBackendNameError extends Error {
  readonly _tag = "UnknownBackendNameError"
  constructor(readonly value: string) {
    super(`OCTFLOW_BACKEND (or --backend) is "${value}"; expected one of ${backendNames.join(", ")}`)
  }
}

export class BackendNotInstalledError extends Error {
  readonly _tag = "BackendNotInstalledError"
  constructor(readonly backend: BackendName, readonly packageName: string) {
    super(
      `OCTFLOW_BACKEND (or --backend) is "${backend}", but ${packageName} is not installed with its native ` +
        `binding; install it with \`npm install ${packageName}\` (it downloads libtensorflow), ` +
        "or leave out --backend to pick the fastest installed backend"
    )
  }
}

/**
 * Returns the backend name and its package version, and for wasm the build of the SIMD
 * kernels (their multiply-adds round differently): the values that join the fingerprint.
 */
export const plannedBackend = (): {
  readonly backend: BackendName
  readonly backendVersion: string
  readonly simdKernels?: SimdKernelVariant
} => {
  const forced = process.env.OCTFLOW_BACKEND
  let backend: BackendName
  if (forced !== undefined && forced !== "" && forced !== "auto") {
    if (!(backendNames as readonly string[]).includes(forced)) throw new UnknownBackendNameError(forced)
    backend = forced as BackendName
    // A native backend whose install failed would otherwise fail only once train starts,
    // after the stages before it have run.
    const installed = backend === "wasm" || backend === "cpu" ? packageDir(packageOf[backend]) !== undefined : hasNativeBinding(packageOf[backend])
    if (!installed) throw new BackendNotInstalledError(backend, packageOf[backend])
  } else if (hasNativeBinding(packageOf["tensorflow-gpu"])) {
    backend = "tensorflow-gpu"
  } else if (hasNativeBinding(packageOf.tensorflow)) {
    backend = "tensorflow"
  } else {
    backend = "wasm"
  }
  const dir = packageDir(packageOf[backend])
  const version =
    dir === undefined ? "missing" : (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { version: string }).version
  return backend === "wasm" ? { backend, backendVersion: version, simdKernels: simdKernelVariant() } : { backend, backendVersion: version }
}

/**
 * Threads that train and evaluate compute on: `OCTFLOW_THREADS` when set, else one per
 * core. Results do not depend on it, so it is not part of any fingerprint.
 */
export const computeThreads = (): number => {
  const value = process.env.OCTFLOW_THREADS
  if (value === undefined || value === "") return availableParallelism()
  return parseThreads(value)
}

/** Returns the fields of a stage-log warning when `threads` exceeds the cores, else undefined. */
export const threadsWarning = (threads: number): { threads: number; cores: number } | undefined => {
  const cores = availableParallelism()
  return threads > cores ? { threads, cores } : undefined
}
