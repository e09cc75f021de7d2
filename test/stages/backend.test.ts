import { createRequire } from "node:module"
import { availableParallelism } from "node:os"
import { afterEach, describe, expect, it } from "vitest"
import { BackendNotInstalledError, computeThreads, InvalidThreadsError, plannedBackend } from "../../stages/support/backend.ts"

const nodeBackendInstalled = (() => {
  try {
    createRequire(import.meta.url).resolve("@tensorflow/tfjs-node/package.json")
    return true
  } catch {
    return false
  }
})()

const saved = { threads: process.env.OCTFLOW_THREADS, backend: process.env.OCTFLOW_BACKEND }

afterEach(() => {
  if (saved.threads === undefined) delete process.env.OCTFLOW_THREADS
  else process.env.OCTFLOW_THREADS = saved.threads
  if (saved.backend === undefined) delete process.env.OCTFLOW_BACKEND
  else process.env.OCTFLOW_BACKEND = saved.backend
})

describe("computeThreads", () => {
  it("defaults to one per core", () => {
    delete process.env.OCTFLOW_THREADS
    expect(computeThreads()).toBe(availableParallelism())
  })

  it("reads OCTFLOW_THREADS", () => {
    process.env.OCTFLOW_THREADS = "3"
    expect(computeThreads()).toBe(3)
  })

  it("accepts up to 256", () => {
    process.env.OCTFLOW_THREADS = "256"
    expect(computeThreads()).toBe(256)
  })

  for (const value of ["0", "-1", "1.5", "two", " ", "257"]) {
    it(`rejects ${value}`, () => {
      process.env.OCTFLOW_THREADS = value
      expect(() => computeThreads()).toThrow(InvalidThreadsError)
      expect(() => computeThreads()).toThrow(`OCTFLOW_THREADS (or --threads) is "${value}"`)
    })
  }
})

describe("plannedBackend", () => {
  it.each(["wasm", "cpu"])("takes the installed %s", (name) => {
    process.env.OCTFLOW_BACKEND = name
    expect(plannedBackend().backend).toBe(name)
  })

  // Where @tensorflow/tfjs-node installed (its install downloads libtensorflow), there is
  // nothing to reject.
  it.skipIf(nodeBackendInstalled)("rejects a native backend without its binding", () => {
    process.env.OCTFLOW_BACKEND = "tensorflow"
    expect(() => plannedBackend()).toThrow(BackendNotInstalledError)
    expect(() => plannedBackend()).toThrow("@tensorflow/tfjs-node is not installed with its native binding")
    expect(() => plannedBackend()).toThrow("leave out --backend")
  })
})
