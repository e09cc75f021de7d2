import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../../src/ml/backend.ts"
import { randomValues } from "./fixtures/random.ts"

type Padding = "valid" | "same"

interface ConvCase {
  readonly name: string
  readonly x: [number, number, number, number]
  readonly filter: [number, number, number, number]
  readonly stride: number
  readonly pad: Padding
}

const cases: ReadonlyArray<ConvCase> = [
  { name: "3x3 s1 valid", x: [2, 7, 6, 3], filter: [3, 3, 3, 4], stride: 1, pad: "valid" },
  { name: "3x3 s1 same", x: [2, 7, 6, 3], filter: [3, 3, 3, 4], stride: 1, pad: "same" },
  { name: "3x3 s2 valid", x: [1, 9, 8, 2], filter: [3, 3, 2, 5], stride: 2, pad: "valid" },
  { name: "3x3 s2 same odd", x: [3, 9, 7, 2], filter: [3, 3, 2, 3], stride: 2, pad: "same" },
  { name: "2x2 s2 valid odd", x: [2, 5, 7, 3], filter: [2, 2, 3, 2], stride: 2, pad: "valid" },
  { name: "7x7 s1 same", x: [2, 12, 10, 3], filter: [7, 7, 3, 4], stride: 1, pad: "same" },
  { name: "4x2 s2 same", x: [1, 10, 6, 1], filter: [4, 2, 1, 3], stride: 2, pad: "same" },
  { name: "1x1 s1 valid", x: [2, 4, 4, 5], filter: [1, 1, 5, 2], stride: 1, pad: "valid" },
  { name: "2x2 s2 valid even", x: [2, 8, 6, 3], filter: [2, 2, 3, 4], stride: 2, pad: "valid" },
  { name: "2x2 s2 same even", x: [1, 6, 4, 2], filter: [2, 2, 2, 3], stride: 2, pad: "same" }
]

function convOutShape(c: ConvCase): [number, number, number, number] {
  const info = tf.backend_util.computeConv2DInfo(c.x, c.filter, c.stride, 1, c.pad)
  return info.outShape as [number, number, number, number]
}

async function gradientsOn(backend: string, c: ConvCase, seed: number) {
  await tf.setBackend(backend)
  const x = tf.tensor4d(randomValues(c.x.reduce((a, b) => a * b), seed), c.x)
  const filter = tf.tensor4d(randomValues(c.filter.reduce((a, b) => a * b), seed + 1), c.filter)
  const outShape = convOutShape(c)
  const dy = tf.tensor4d(randomValues(outShape.reduce((a, b) => a * b), seed + 2), outShape)
  const attrs = { strides: [c.stride, c.stride], pad: c.pad, dataFormat: "NHWC" }
  const dFilter = tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { ...attrs, filterShape: c.filter }) as tf.Tensor
  const dx = tf.engine().runKernel("Conv2DBackpropInput", { dy, filter }, { ...attrs, inputShape: c.x }) as tf.Tensor
  const result = { dFilter: await dFilter.data(), dx: await dx.data(), dxShape: dx.shape, dFilterShape: dFilter.shape }
  tf.dispose([x, filter, dy, dFilter, dx])
  return result
}

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!))
  return max
}

describe("wasm gradient kernels", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  for (const [index, c] of cases.entries()) {
    it(`matches cpu for ${c.name}`, async () => {
      const reference = await gradientsOn("cpu", c, 17 + index * 5)
      const wasm = await gradientsOn("wasm", c, 17 + index * 5)
      expect(wasm.dFilterShape).toEqual(reference.dFilterShape)
      expect(wasm.dxShape).toEqual(reference.dxShape)
      expect(maxAbsDifference(wasm.dFilter, reference.dFilter)).toBeLessThan(1e-4)
      expect(maxAbsDifference(wasm.dx, reference.dx)).toBeLessThan(1e-4)
    })
  }

  it("conv2d gradient through tf.grads", async () => {
    const c = cases[3]!
    const run = async (backend: string) => {
      await tf.setBackend(backend)
      const x = tf.tensor4d(randomValues(c.x.reduce((a, b) => a * b), 3), c.x)
      const filter = tf.tensor4d(randomValues(c.filter.reduce((a, b) => a * b), 4), c.filter)
      const [gx, gf] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.square(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad)))
      )([x, filter])
      const values = { gx: await gx!.data(), gf: await gf!.data() }
      tf.dispose([x, filter, gx!, gf!])
      return values
    }
    const reference = await run("cpu")
    const wasm = await run("wasm")
    expect(maxAbsDifference(wasm.gx, reference.gx)).toBeLessThan(1e-3)
    expect(maxAbsDifference(wasm.gf, reference.gf)).toBeLessThan(1e-3)
  })
})

async function poolGradientOn(backend: string, shape: [number, number, number, number], size: number, stride: number, pad: Padding) {
  await tf.setBackend(backend)
  const x = tf.tensor4d(randomValues(shape.reduce((a, b) => a * b), 31), shape)
  const weights = tf.tidy(() => {
    const y = tf.maxPool(x, size, stride, pad)
    return tf.tensor4d(randomValues(y.size, 32), y.shape)
  })
  const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, size, stride, pad), weights)))(x)
  const values = await dx.data()
  tf.dispose([x, weights, dx])
  return values
}

const poolCases = [
  { name: "2x2 s2 valid", shape: [2, 6, 5, 3], size: 2, stride: 2, pad: "valid" },
  { name: "3x3 s2 same", shape: [1, 7, 6, 2], size: 3, stride: 2, pad: "same" },
  { name: "3x3 s1 valid", shape: [2, 5, 5, 1], size: 3, stride: 1, pad: "valid" }
] as const

describe("wasm MaxPoolGrad", () => {
  it("routes to the window maximum", async () => {
    await tf.setBackend("wasm")
    // One 2x2 window per quadrant; maxima at 1, 2, 12 and 15 (row-major 4x4).
    const x = tf.tensor4d([0, 9, 5, 1, 2, 3, 4, 0, 0, 1, 2, 3, 7, 0, 1, 8], [1, 4, 4, 1])
    const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, 2, 2, "valid"), tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]))))(x)
    expect(Array.from(await dx.data())).toEqual([0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 4])
  })

  for (const c of poolCases) {
    it(`matches cpu for ${c.name}`, async () => {
      const reference = await poolGradientOn("cpu", [...c.shape], c.size, c.stride, c.pad)
      const wasm = await poolGradientOn("wasm", [...c.shape], c.size, c.stride, c.pad)
      expect(maxAbsDifference(wasm, reference)).toBeLessThan(1e-6)
    })
  }
})

// dx[b, y, x, c] = sum of dy over the output pixels that read input (y, x): floor(r * in / out).
function referenceResizeGradient(dy: Float32Array, shape: [number, number, number, number], outHeight: number, outWidth: number): Float32Array {
  const [n, h, w, c] = shape
  const dx = new Float32Array(n * h * w * c)
  for (let b = 0; b < n; b++)
    for (let r = 0; r < outHeight; r++)
      for (let q = 0; q < outWidth; q++)
        for (let k = 0; k < c; k++) {
          const y = Math.min(h - 1, Math.floor((r * h) / outHeight))
          const x = Math.min(w - 1, Math.floor((q * w) / outWidth))
          dx[((b * h + y) * w + x) * c + k]! += dy[((b * outHeight + r) * outWidth + q) * c + k]!
        }
  return dx
}

describe("ResizeNearestNeighborGrad", () => {
  const shape: [number, number, number, number] = [2, 6, 5, 3]
  for (const backend of ["cpu", "wasm"]) {
    it(`batch of two on ${backend}`, async () => {
      await tf.setBackend(backend)
      const dyValues = randomValues(2 * 12 * 10 * 3, 41)
      const x = tf.tensor4d(randomValues(shape.reduce((a, b) => a * b), 40), shape)
      const weights = tf.tensor4d(dyValues, [2, 12, 10, 3])
      const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.image.resizeNearestNeighbor(a as tf.Tensor4D, [12, 10]), weights)))(x)
      const expected = referenceResizeGradient(dyValues, shape, 12, 10)
      expect(maxAbsDifference(await dx.data(), expected)).toBeLessThan(1e-5)
      tf.dispose([x, weights, dx])
    })
  }
})

describe("wasm kernel registration", () => {
  it("replaces the listed kernels", async () => {
    const { wasmGradientKernels } = await import("../../src/ml/kernels/index.ts")
    for (const config of wasmGradientKernels) {
      expect(tf.getKernel(config.kernelName, "wasm")?.kernelFunc).toBe(config.kernelFunc)
    }
  })
})

describe("FusedBatchNorm gradient", () => {
  // Gradients of sum(w * y) for y = (x - mean) / sqrt(var + eps) * scale + offset, with mean
  // and var the batch moments of x, as tfjs-layers' BatchNormalization computes in training.
  async function gradientsOn(backend: string, fused: boolean): Promise<Array<Float32Array>> {
    await tf.setBackend(backend)
    const shape: [number, number, number, number] = [2, 4, 3, 5]
    const x = tf.tensor4d(randomValues(120, 51), shape)
    const scale = tf.tensor1d(randomValues(5, 52))
    const offset = tf.tensor1d(randomValues(5, 53))
    const w = tf.tensor4d(randomValues(120, 54), shape)
    const epsilon = 1e-3
    const f = (a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      const { mean, variance } = tf.moments(a, [0, 1, 2])
      const y = fused
        ? tf.batchNorm(a as tf.Tensor4D, mean, variance, b as tf.Tensor1D, g as tf.Tensor1D, epsilon)
        : tf.add(tf.mul(tf.mul(tf.sub(a, mean), tf.rsqrt(tf.add(variance, epsilon))), g), b)
      return tf.sum(tf.mul(y, w))
    }
    const grads = tf.grads(f)([x, scale, offset])
    const values = await Promise.all(grads.map(async (g) => (await g.data()) as Float32Array))
    tf.dispose([x, scale, offset, w, ...grads])
    return values
  }

  for (const backend of ["cpu", "wasm"]) {
    it(`matches elementary ops on ${backend}`, async () => {
      const expected = await gradientsOn(backend, false)
      const actual = await gradientsOn(backend, true)
      for (const [index, values] of actual.entries()) expect(maxAbsDifference(values, expected[index]!)).toBeLessThan(1e-4)
    })
  }
})
