import * as tf from "@tensorflow/tfjs-core"
import { describe, expect, it } from "vitest"
import { BackendLoadError, type BackendName, initBackend, UnknownBackendError } from "../../src/ml/backend.ts"

// @tensorflow/tfjs-node and -node-gpu are optional dependencies whose install fails without
// libtensorflow, so on machines without them automatic selection must fall back to wasm.
async function hasPackage(name: string): Promise<boolean> {
  try {
    await import(name)
    return true
  } catch {
    return false
  }
}

describe("initBackend", () => {
  it("rejects an unknown name", async () => {
    await expect(initBackend({ backend: "webgpu" })).rejects.toThrow(UnknownBackendError)
  })

  it("unknown name lists the choices", async () => {
    const error = await initBackend({ backend: "webgpu" }).catch((e: unknown) => e)
    expect(String((error as Error).message)).toContain("tensorflow-gpu, tensorflow, wasm, cpu")
  })

  it("forced cpu reports cpu", async () => {
    const info = await initBackend({ backend: "cpu" })
    expect(info.name).toBe("cpu")
    expect(tf.getBackend()).toBe("cpu")
    expect(info.version).toBe("4.22.0")
  })

  it("forced wasm reports simd and threads", async () => {
    const info = await initBackend({ backend: "wasm" })
    expect(info.name).toBe("wasm")
    expect(tf.getBackend()).toBe("wasm")
    expect(info.threads).toBeGreaterThanOrEqual(1)
    expect(typeof info.simd).toBe("boolean")
  })

  it("missing native package fails to load", async (context) => {
    if (await hasPackage("@tensorflow/tfjs-node")) context.skip()
    const error = await initBackend({ backend: "tensorflow" }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(BackendLoadError)
    expect((error as Error).message).toContain("@tensorflow/tfjs-node")
  })

  it("automatic choice skips missing packages", async (context) => {
    if ((await hasPackage("@tensorflow/tfjs-node")) || (await hasPackage("@tensorflow/tfjs-node-gpu"))) context.skip()
    const skipped: Array<BackendName> = []
    const info = await initBackend({ onSkip: (name) => skipped.push(name) })
    expect(skipped).toEqual(["tensorflow-gpu", "tensorflow"])
    expect(info.name).toBe("wasm")
  })
})
