import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import * as tfl from "@tensorflow/tfjs-layers"
import fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import { FusedAdamOptimizer } from "../../src/ml/adam.ts"
import { initBackend } from "../../src/ml/backend.ts"
import { wasmApi, wasmSectionIds } from "../../src/ml/wasm/api.ts"
import { kernelsRelaxedWasmBase64, kernelsSourceSha256, kernelsWasmBase64 } from "../../src/ml/wasm/kernels-wasm.ts"
import { type SimdKernels, simdKernelVariant } from "../../src/ml/wasm/module.ts"
import { randomValues } from "./fixtures/random.ts"

const here = dirname(fileURLToPath(import.meta.url))

const sizeOf = (shape: ReadonlyArray<number>) => shape.reduce((a, b) => a * b, 1)

/** Largest |a - b| relative to max(1, |b|), so sums of many terms compare fairly. */
function maxRelativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)))
  return max
}

async function onBackend<T>(backend: string, body: () => T): Promise<T> {
  await tf.setBackend(backend)
  return body()
}

interface ConvCase {
  readonly batch: number
  readonly height: number
  readonly width: number
  readonly inChannels: number
  readonly outChannels: number
  readonly filterHeight: number
  readonly filterWidth: number
  readonly stride: number
  readonly dilation: number
  readonly pad: "valid" | "same"
}

/** Convolution cases whose output is at least 1 x 1; dilations only with stride 1, as tfjs requires. */
const convCaseArbitrary: fc.Arbitrary<ConvCase> = fc
  .record({
    batch: fc.integer({ min: 1, max: 3 }),
    height: fc.integer({ min: 1, max: 11 }),
    width: fc.integer({ min: 1, max: 11 }),
    inChannels: fc.constantFrom(1, 2, 3, 4, 5, 8, 9, 16, 17),
    outChannels: fc.constantFrom(1, 2, 3, 4, 5, 8, 9, 12, 16, 20),
    filterHeight: fc.integer({ min: 1, max: 5 }),
    filterWidth: fc.integer({ min: 1, max: 5 }),
    stride: fc.integer({ min: 1, max: 3 }),
    dilation: fc.integer({ min: 1, max: 2 }),
    pad: fc.constantFrom<"valid" | "same">("valid", "same")
  })
  .map((c) => (c.stride > 1 ? { ...c, dilation: 1 } : c))
  .filter((c) => c.pad === "same" || ((c.filterHeight - 1) * c.dilation < c.height && (c.filterWidth - 1) * c.dilation < c.width))

function convTensors(c: ConvCase, seed: number) {
  const x = tf.tensor4d(randomValues(c.batch * c.height * c.width * c.inChannels, seed), [c.batch, c.height, c.width, c.inChannels])
  const filter = tf.tensor4d(randomValues(c.filterHeight * c.filterWidth * c.inChannels * c.outChannels, seed + 1), [
    c.filterHeight,
    c.filterWidth,
    c.inChannels,
    c.outChannels
  ])
  const bias = tf.tensor1d(randomValues(c.outChannels, seed + 2))
  return { x, filter, bias }
}

function forward(c: ConvCase, seed: number, activation: "linear" | "relu" | undefined): Float32Array {
  return tf.tidy(() => {
    const { x, filter, bias } = convTensors(c, seed)
    const y =
      activation === undefined
        ? tf.conv2d(x, filter, c.stride, c.pad, "NHWC", c.dilation)
        : tf.fused.conv2d({ x, filter, strides: c.stride, pad: c.pad, dilations: c.dilation, bias, activation })
    return y.dataSync() as Float32Array
  })
}

function gradients(c: ConvCase, seed: number): { dx: Float32Array; dFilter: Float32Array } {
  return tf.tidy(() => {
    const { x, filter } = convTensors(c, seed)
    const outShape = tf.conv2d(x, filter, c.stride, c.pad, "NHWC", c.dilation).shape
    const dy = tf.tensor4d(randomValues(sizeOf(outShape), seed + 3), outShape)
    const attrs = { strides: [c.stride, c.stride], pad: c.pad, dataFormat: "NHWC", dilations: [c.dilation, c.dilation] }
    const dFilter = tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { ...attrs, filterShape: filter.shape }) as tf.Tensor
    const dx = tf.engine().runKernel("Conv2DBackpropInput", { dy, filter }, { ...attrs, inputShape: x.shape }) as tf.Tensor
    return { dx: dx.dataSync() as Float32Array, dFilter: dFilter.dataSync() as Float32Array }
  })
}

describe("wasm SIMD convolutions", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  it("Conv2D matches cpu on random shapes", async () => {
    await fc.assert(
      fc.asyncProperty(convCaseArbitrary, fc.integer({ min: 1, max: 1000 }), async (c, seed) => {
        const reference = await onBackend("cpu", () => forward(c, seed, undefined))
        const wasm = await onBackend("wasm", () => forward(c, seed, undefined))
        expect(wasm.length).toBe(reference.length)
        expect(maxRelativeDifference(wasm, reference)).toBeLessThan(1e-5)
      }),
      { numRuns: 120, seed: 11 }
    )
  })

  it("FusedConv2D with bias and relu matches cpu", async () => {
    await fc.assert(
      fc.asyncProperty(convCaseArbitrary, fc.constantFrom<"linear" | "relu">("linear", "relu"), async (c, activation) => {
        const reference = await onBackend("cpu", () => forward(c, 7, activation))
        const wasm = await onBackend("wasm", () => forward(c, 7, activation))
        expect(maxRelativeDifference(wasm, reference)).toBeLessThan(1e-5)
      }),
      { numRuns: 60, seed: 12 }
    )
  })

  it("gradients match cpu on random shapes", async () => {
    // tfjs computes convolution gradients for dilation 1 only.
    const cases = convCaseArbitrary.map((c) => ({ ...c, dilation: 1 }))
    await fc.assert(
      fc.asyncProperty(cases, fc.integer({ min: 1, max: 1000 }), async (c, seed) => {
        const reference = await onBackend("cpu", () => gradients(c, seed))
        const wasm = await onBackend("wasm", () => gradients(c, seed))
        expect(maxRelativeDifference(wasm.dFilter, reference.dFilter)).toBeLessThan(1e-4)
        expect(maxRelativeDifference(wasm.dx, reference.dx)).toBeLessThan(1e-4)
      }),
      { numRuns: 120, seed: 13 }
    )
  })

  it("U-Net layer shapes match cpu", async () => {
    // The cpu profile's first layer, a decoder conv with 2 classes, a 2x2 stride-2 up-conv,
    // and wide layers whose filter gradient packs its inputs (128 output channels and up).
    const cases: Array<ConvCase> = [
      { batch: 2, height: 24, width: 20, inChannels: 5, outChannels: 128, filterHeight: 3, filterWidth: 3, stride: 1, dilation: 1, pad: "valid" },
      { batch: 3, height: 9, width: 7, inChannels: 16, outChannels: 136, filterHeight: 2, filterWidth: 2, stride: 2, dilation: 1, pad: "same" },
      { batch: 2, height: 40, width: 24, inChannels: 3, outChannels: 8, filterHeight: 7, filterWidth: 7, stride: 1, dilation: 1, pad: "same" },
      { batch: 2, height: 30, width: 20, inChannels: 56, outChannels: 2, filterHeight: 3, filterWidth: 3, stride: 1, dilation: 1, pad: "same" },
      { batch: 2, height: 17, width: 9, inChannels: 32, outChannels: 16, filterHeight: 2, filterWidth: 2, stride: 2, dilation: 1, pad: "valid" }
    ]
    for (const c of cases) {
      const reference = await onBackend("cpu", () => gradients(c, 5))
      const wasm = await onBackend("wasm", () => gradients(c, 5))
      expect(maxRelativeDifference(wasm.dFilter, reference.dFilter)).toBeLessThan(1e-4)
      expect(maxRelativeDifference(wasm.dx, reference.dx)).toBeLessThan(1e-4)
      const forwardReference = await onBackend("cpu", () => forward(c, 5, "relu"))
      const forwardWasm = await onBackend("wasm", () => forward(c, 5, "relu"))
      expect(maxRelativeDifference(forwardWasm, forwardReference)).toBeLessThan(1e-5)
    }
  })

  it("conv2d transpose gradients match cpu", async () => {
    const run = () =>
      tf.tidy(() => {
        const x = tf.tensor4d(randomValues(2 * 5 * 3 * 8, 3), [2, 5, 3, 8])
        const filter = tf.tensor4d(randomValues(2 * 2 * 4 * 8, 4), [2, 2, 4, 8])
        const [gx, gf] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.square(tf.conv2dTranspose(a as tf.Tensor4D, b as tf.Tensor4D, [2, 10, 6, 4], 2, "valid")))
        )([x, filter])
        return { gx: gx!.dataSync() as Float32Array, gf: gf!.dataSync() as Float32Array }
      })
    const reference = await onBackend("cpu", run)
    const wasm = await onBackend("wasm", run)
    expect(maxRelativeDifference(wasm.gx, reference.gx)).toBeLessThan(1e-4)
    expect(maxRelativeDifference(wasm.gf, reference.gf)).toBeLessThan(1e-4)
  })
})

describe("wasm Sum, Mean and Cast", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  const reductions: Array<{ shape: Array<number>; axes: Array<number>; keepDims: boolean }> = [
    { shape: [4, 7, 5, 8], axes: [0, 1, 2], keepDims: false },
    { shape: [4, 7, 5, 9], axes: [2, 0, 1], keepDims: true },
    { shape: [700, 3], axes: [0], keepDims: false },
    { shape: [3, 600, 6], axes: [0, 1], keepDims: false },
    // Not the leading axes: the package's kernels.
    { shape: [4, 7, 5, 8], axes: [1, 2], keepDims: false },
    { shape: [4, 7], axes: [1], keepDims: true }
  ]
  for (const c of reductions) {
    it(`sum and mean over ${JSON.stringify(c.axes)} of ${JSON.stringify(c.shape)}`, async () => {
      const run = () =>
        tf.tidy(() => {
          const x = tf.tensor(randomValues(sizeOf(c.shape), 9), c.shape)
          const sum = tf.sum(x, c.axes, c.keepDims)
          const mean = tf.mean(x, c.axes, c.keepDims)
          return { sum: sum.dataSync() as Float32Array, mean: mean.dataSync() as Float32Array, shape: sum.shape }
        })
      const reference = await onBackend("cpu", run)
      const wasm = await onBackend("wasm", run)
      expect(wasm.shape).toEqual(reference.shape)
      expect(maxRelativeDifference(wasm.sum, reference.sum)).toBeLessThan(1e-5)
      expect(maxRelativeDifference(wasm.mean, reference.mean)).toBeLessThan(1e-6)
    })
  }

  it("cast to the same dtype shares memory", async () => {
    await tf.setBackend("wasm")
    const x = tf.tensor1d([1.5, -2.25, 3])
    const y = tf.cast(x, "float32")
    x.dispose()
    expect(Array.from(await y.data())).toEqual([1.5, -2.25, 3])
    y.dispose()
  })

  it("cast to another dtype converts", async () => {
    await tf.setBackend("wasm")
    const y = tf.tidy(() => tf.cast(tf.tensor1d([1.7, -2.2, 0]), "int32"))
    expect(y.dtype).toBe("int32")
    expect(Array.from(await y.data())).toEqual([1, -2, 0])
    y.dispose()
  })
})

describe("fused Adam", () => {
  beforeAll(async () => {
    await initBackend({ backend: "wasm" })
  })

  function trainWith(optimizer: tf.AdamOptimizer, size: number): Float32Array {
    const weights = tf.variable(tf.tensor1d(randomValues(size, 21)), true, `adam-weights-${Math.random()}`)
    for (let step = 0; step < 25; step++) {
      const gradient = tf.tensor1d(randomValues(size, 100 + step).map((g) => g * 10 ** ((step % 5) - 4)))
      optimizer.applyGradients([{ name: weights.name, tensor: gradient }])
      gradient.dispose()
    }
    const values = weights.dataSync() as Float32Array
    weights.dispose()
    return values.slice()
  }

  for (const size of [1, 7, 1003]) {
    it(`equals AdamOptimizer bit for bit, ${size} weights`, async () => {
      await tf.setBackend("wasm")
      const reference = trainWith(tf.train.adam(2e-4, 0.5, 0.999, 1e-7), size)
      const fused = trainWith(new FusedAdamOptimizer(2e-4, 0.5, 0.999, 1e-7), size)
      expect(Array.from(fused)).toEqual(Array.from(reference))
    })
  }

  it("leaves a shared buffer to AdamOptimizer", async () => {
    await tf.setBackend("wasm")
    const weights = tf.variable(tf.tensor1d([1, 2, 3]), true, `adam-shared-${Math.random()}`)
    const alias = tf.clone(weights)
    new FusedAdamOptimizer(0.1, 0.5, 0.999, 1e-7).applyGradients([{ name: weights.name, tensor: tf.tensor1d([1, 1, 1]) }])
    expect(Array.from(await alias.data())).toEqual([1, 2, 3])
    expect(Array.from(await weights.data())).not.toEqual([1, 2, 3])
    tf.dispose([weights, alias])
  })
})

describe("SIMD module", () => {
  it("was built from the current kernels.c", () => {
    const source = readFileSync(join(here, "../../src/ml/wasm/kernels.c"))
    const hash = createHash("sha256").update(source).digest("hex")
    // On a mismatch, rebuild with `npm run build:kernels` (needs clang with the wasm32 target).
    expect(kernelsSourceSha256).toBe(hash)
  })

  for (const [name, base64] of [
    ["plain", kernelsWasmBase64],
    ["relaxed", kernelsRelaxedWasmBase64]
  ] as const) {
    it(`${name} build has no data section`, () => {
      const sections = wasmSectionIds(Buffer.from(base64, "base64"))
      expect(sections).toContain(10)
      expect(sections).not.toContain(11)
    })
  }

  it("uses relaxed SIMD on this engine", () => {
    // Node 20 with its flag set, and later V8 by default, accept relaxed SIMD.
    expect(simdKernelVariant()).not.toBe("simd")
  })

  it("plain and relaxed builds agree", () => {
    const run = (base64: string) => {
      const memory = new wasmApi.Memory({ initial: 8 })
      const module = new wasmApi.Module(Buffer.from(base64, "base64"))
      const kernels = new wasmApi.Instance(module, { env: { memory } }).exports as SimdKernels
      const floats = new Float32Array(memory.buffer)
      const [x, w, packed, y] = [65536, 131072, 196608, 262144]
      floats.set(randomValues(3 * 9 * 8 * 16, 4), x / 4)
      floats.set(randomValues(3 * 3 * 16 * 12, 5), w / 4)
      kernels.pack_panels(w, packed, 3 * 3 * 16, 12, 12, 1)
      kernels.conv2d(x, packed, 0, y, 3, 9, 8, 16, 7, 6, 12, 3, 3, 1, 1, 1, 1, 0)
      return floats.slice(y / 4, y / 4 + 3 * 7 * 6 * 12)
    }
    expect(maxRelativeDifference(run(kernelsRelaxedWasmBase64), run(kernelsWasmBase64))).toBeLessThan(1e-5)
  })

  for (const [name, base64] of [
    ["plain", kernelsWasmBase64],
    ["relaxed", kernelsRelaxedWasmBase64]
  ] as const) {
    it(`${name} build writes only its outputs`, () => {
      // A fresh memory of 4 pages filled with a pattern; inputs and outputs in the last two.
      const memory = new wasmApi.Memory({ initial: 4 })
      const bytes = new Uint8Array(memory.buffer)
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) & 0xff
      const floats = new Float32Array(memory.buffer)
      const kernels = new wasmApi.Instance(new wasmApi.Module(Buffer.from(base64, "base64")), { env: { memory } }).exports as SimdKernels
      const input = 2 * 65536
      const packed = input + 4096
      const output = packed + 8192
      const outputBytes = 4 * 2 * 5 * 5 * 8
      floats.set(randomValues(2 * 7 * 7 * 3, 1), input / 4)
      floats.set(randomValues(3 * 3 * 3 * 8, 2), packed / 4 + 1024)
      kernels.pack_panels(packed + 4096, packed, 27, 8, 8, 1)
      const before = bytes.slice()
      kernels.conv2d(input, packed, 0, output, 2, 7, 7, 3, 5, 5, 8, 3, 3, 1, 1, 1, 1, 1)
      kernels.conv2d_backprop_filter(input, output, packed + 4096, 2, 7, 7, 3, 5, 5, 8, 3, 3, 1, 1, 1, 1)
      for (let i = 0; i < bytes.length; i++) {
        const inOutput = i >= output && i < output + outputBytes
        const inFilterGradient = i >= packed + 4096 && i < packed + 4096 + 4 * 27 * 8
        if (!inOutput && !inFilterGradient && bytes[i] !== before[i]) throw new Error(`byte ${i} changed`)
      }
    })
  }
})

describe("fused batch norm in training", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  const shape: [number, number, number, number] = [3, 7, 5, 12]

  /** Output, gradients (x, gamma, beta) and moving statistics of a BN layer, by the layer or by tf ops. */
  function run(byLayer: boolean) {
    const layer = tfl.layers.batchNormalization({ axis: -1, momentum: 0.9, epsilon: 1e-3 })
    layer.build(shape)
    layer.setWeights([tf.tensor1d(randomValues(12, 33)), tf.tensor1d(randomValues(12, 34)), tf.zeros([12]), tf.ones([12])])
    const [gamma, beta] = layer.trainableWeights.map((w) => (w as unknown as { val: tf.Variable }).val) as [tf.Variable, tf.Variable]
    const result = tf.tidy(() => {
      const x = tf.variable(tf.tensor4d(randomValues(sizeOf(shape), 31).map((v) => 3 * v + 1), shape))
      const weights = tf.tensor4d(randomValues(sizeOf(shape), 32), shape)
      const forward = (): tf.Tensor => {
        if (byLayer) return layer.apply(x, { training: true }) as tf.Tensor
        const { mean, variance } = tf.moments(x, [0, 1, 2])
        return tf.batchNorm(x, mean, variance, beta, gamma, 1e-3)
      }
      const y = forward()
      const { grads } = tf.variableGrads(() => tf.sum(tf.mul(forward(), weights)) as tf.Scalar, [x, gamma, beta])
      const moving = layer.getWeights().slice(2)
      const values = [y, grads[x.name]!, grads[gamma.name]!, grads[beta.name]!, ...moving].map((t) => t.dataSync().slice() as Float32Array)
      x.dispose()
      return values
    })
    for (const weight of layer.weights) weight.dispose()
    return result
  }

  for (const backend of ["cpu", "wasm"]) {
    it(`matches tf ops on ${backend}`, async () => {
      await tf.setBackend(backend)
      const [y, dx, dGamma, dBeta] = run(true)
      const [yRef, dxRef, dGammaRef, dBetaRef] = run(false)
      expect(maxRelativeDifference(y!, yRef!)).toBeLessThan(1e-5)
      expect(maxRelativeDifference(dx!, dxRef!)).toBeLessThan(1e-4)
      expect(maxRelativeDifference(dGamma!, dGammaRef!)).toBeLessThan(1e-4)
      expect(maxRelativeDifference(dBeta!, dBetaRef!)).toBeLessThan(1e-4)
    })
  }

  it("updates the moving statistics like tfjs-layers", async () => {
    await tf.setBackend("wasm")
    const values = run(true)
    const x = randomValues(sizeOf(shape), 31).map((v) => 3 * v + 1)
    // Two training calls (the output, then the gradient's forward pass) each move the
    // statistics: moving = 0.9 * previous + 0.1 * batch, from mean 0 and variance 1.
    for (let channel = 0; channel < 12; channel++) {
      const column = x.filter((_, index) => index % 12 === channel)
      const mean = column.reduce((a, b) => a + b, 0) / column.length
      const variance = column.reduce((a, b) => a + (b - mean) ** 2, 0) / column.length
      expect(values[4]![channel]).toBeCloseTo(0.19 * mean, 5)
      expect(values[5]![channel]).toBeCloseTo(0.81 + 0.19 * variance, 4)
    }
  })

  it("leaves inference to the layer", async () => {
    await tf.setBackend("wasm")
    const y = tf.tidy(() => {
      const layer = tfl.layers.batchNormalization({ axis: -1 })
      layer.build([1, 2, 2, 4])
      layer.setWeights([tf.ones([4]), tf.zeros([4]), tf.fill([4], 2), tf.fill([4], 4)])
      return layer.apply(tf.fill([1, 2, 2, 4], 6), { training: false }) as tf.Tensor
    })
    // (6 - 2) / sqrt(4 + 0.001): the moving statistics, not the batch's.
    for (const value of await y.data()) expect(value).toBeCloseTo(4 / Math.sqrt(4.001), 5)
    y.dispose()
  })
})

describe("wasm FusedBatchNorm", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  const cases: Array<{ name: string; scale: boolean; offset: boolean; statisticsShape: Array<number> }> = [
    { name: "scale and offset", scale: true, offset: true, statisticsShape: [6] },
    { name: "no scale", scale: false, offset: true, statisticsShape: [6] },
    { name: "no offset", scale: true, offset: false, statisticsShape: [6] },
    // Statistics of rank 4 go to the package's kernel.
    { name: "rank-4 statistics", scale: true, offset: true, statisticsShape: [1, 1, 1, 6] }
  ]
  for (const c of cases) {
    it(`matches cpu with ${c.name}`, async () => {
      const run = () =>
        tf.tidy(() => {
          const x = tf.tensor4d(randomValues(2 * 5 * 3 * 6, 41), [2, 5, 3, 6])
          const statistic = (seed: number, positive = false) =>
            tf.tensor(randomValues(6, seed).map((v) => (positive ? v + 1.5 : v)), c.statisticsShape)
          const y = tf.batchNorm(x, statistic(42), statistic(43, true), c.offset ? statistic(44) : undefined, c.scale ? statistic(45) : undefined, 1e-3)
          return y.dataSync() as Float32Array
        })
      const reference = await onBackend("cpu", run)
      const wasm = await onBackend("wasm", run)
      expect(maxRelativeDifference(wasm, reference)).toBeLessThan(1e-5)
    })
  }
})

describe("wasm ResizeNearestNeighbor", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  const cases = [
    { name: "2x up", input: [2, 5, 4, 3], size: [10, 8], alignCorners: false, halfPixelCenters: false },
    { name: "4x up, 32 channels", input: [1, 3, 2, 32], size: [12, 8], alignCorners: false, halfPixelCenters: false },
    { name: "down, align corners", input: [2, 9, 7, 5], size: [4, 3], alignCorners: true, halfPixelCenters: false },
    { name: "odd, half-pixel centres", input: [1, 5, 6, 2], size: [7, 9], alignCorners: false, halfPixelCenters: true }
  ] as const
  for (const c of cases) {
    for (const dtype of ["float32", "int32"] as const) {
      it(`matches cpu for ${c.name}, ${dtype}`, async () => {
        const run = () =>
          tf.tidy(() => {
            const values = randomValues(sizeOf(c.input), 51).map((v) => (dtype === "int32" ? Math.round(v * 1000) : v))
            const x = tf.tensor4d(values, [...c.input], dtype)
            return Array.from(tf.image.resizeNearestNeighbor(x, [...c.size], c.alignCorners, c.halfPixelCenters).dataSync())
          })
        const reference = await onBackend("cpu", run)
        const wasm = await onBackend("wasm", run)
        expect(wasm).toEqual(reference)
      })
    }
  }
})
