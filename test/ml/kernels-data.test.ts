import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../../src/ml/backend.ts"
import { wasmForwardKernels } from "../../src/ml/kernels/index.ts"
import { mergeSliceAxes } from "../../src/ml/kernels/slice.ts"

type NumericDtype = "float32" | "int32" | "bool"

// Distinct values per element, so a copy from the wrong place shows.
function valuesFor(size: number, dtype: NumericDtype, seed: number): Array<number> {
  const values: Array<number> = []
  let state = seed >>> 0
  for (let i = 0; i < size; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    if (dtype === "bool") values.push(state >>> 31)
    else if (dtype === "int32") values.push((state >> 8) - i)
    else values.push(state / 2 ** 31 - 1 + i)
  }
  return values
}

function sizeOf(shape: ReadonlyArray<number>): number {
  return shape.reduce((a, b) => a * b, 1)
}

interface Result {
  readonly shape: Array<number>
  readonly dtype: tf.DataType
  readonly values: Array<number | string>
}

async function readResult(tensor: tf.Tensor): Promise<Result> {
  const result = { shape: tensor.shape, dtype: tensor.dtype, values: Array.from((await tensor.data()) as ArrayLike<number | string>) }
  tensor.dispose()
  return result
}

/** Runs `build` on the cpu and on the wasm backend and returns both results. */
async function onBothBackends(build: () => tf.Tensor): Promise<{ cpu: Result; wasm: Result }> {
  await tf.setBackend("cpu")
  const cpu = await readResult(tf.tidy(build))
  await tf.setBackend("wasm")
  const wasm = await readResult(tf.tidy(build))
  return { cpu, wasm }
}

async function splitOnBothBackends(build: () => Array<tf.Tensor>): Promise<{ cpu: Array<Result>; wasm: Array<Result> }> {
  await tf.setBackend("cpu")
  const cpu = await Promise.all(tf.tidy(build).map(readResult))
  await tf.setBackend("wasm")
  const wasm = await Promise.all(tf.tidy(build).map(readResult))
  return { cpu, wasm }
}

const dtypeArbitrary = fc.constantFrom<NumericDtype>("float32", "int32", "bool")

/** A shape of rank 1 to 5 with extents 0 to 5, and a valid slice of it (size -1 allowed). */
const sliceCaseArbitrary = fc
  .array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 5 })
  .chain((shape) =>
    fc.record({
      shape: fc.constant(shape),
      dtype: dtypeArbitrary,
      axes: fc.tuple(
        ...shape.map((dim) =>
          fc.integer({ min: 0, max: dim }).chain((begin) =>
            fc.record({
              begin: fc.constant(begin),
              size: fc.oneof(fc.integer({ min: 0, max: dim - begin }), fc.constant(-1))
            })
          )
        )
      )
    })
  )

describe("mergeSliceAxes", () => {
  const cases = [
    { name: "crop of NHWC", shape: [1, 6, 5, 3], begin: [0, 1, 1, 0], size: [1, 4, 3, 3], expected: { shape: [6, 15], begin: [1, 3], size: [4, 9] } },
    { name: "whole tensor", shape: [2, 3, 4], begin: [0, 0, 0], size: [2, 3, 4], expected: { shape: [24], begin: [0], size: [24] } },
    { name: "channel range", shape: [2, 3, 4], begin: [0, 0, 1], size: [2, 3, 2], expected: { shape: [6, 4], begin: [0, 1], size: [6, 2] } },
    { name: "one batch entry", shape: [3, 2, 2], begin: [1, 0, 0], size: [1, 2, 2], expected: { shape: [12], begin: [4], size: [4] } },
    { name: "one row", shape: [4, 5], begin: [2, 1], size: [1, 3], expected: { shape: [20], begin: [11], size: [3] } },
    { name: "rank one", shape: [7], begin: [2], size: [4], expected: { shape: [7], begin: [2], size: [4] } },
    { name: "scalar", shape: [], begin: [], size: [], expected: { shape: [1], begin: [0], size: [1] } }
  ]
  for (const c of cases) {
    it(c.name, () => {
      expect(mergeSliceAxes(c.shape, c.begin, c.size)).toEqual(c.expected)
    })
  }
})

describe("wasm Slice", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  it("registers the replacements", () => {
    for (const config of wasmForwardKernels) expect(tf.getKernel(config.kernelName, "wasm")?.kernelFunc).toBe(config.kernelFunc)
  })

  it("crops NHWC by hand", async () => {
    await tf.setBackend("wasm")
    const x = tf.tensor4d(Array.from({ length: 2 * 3 * 3 * 2 }, (_, i) => i), [2, 3, 3, 2])
    const cropped = tf.slice(x, [1, 1, 0, 1], [1, 2, 2, 1])
    expect(cropped.shape).toEqual([1, 2, 2, 1])
    // Element (b, y, x, c) is at ((b * 3 + y) * 3 + x) * 2 + c.
    expect(Array.from(await cropped.data())).toEqual([25, 27, 31, 33])
    tf.dispose([x, cropped])
  })

  it("matches cpu on random slices", async () => {
    await fc.assert(
      fc.asyncProperty(sliceCaseArbitrary, fc.integer({ min: 1, max: 1000 }), async (c, seed) => {
        const begin = c.axes.map((axis) => axis.begin)
        const size = c.axes.map((axis) => axis.size)
        const values = valuesFor(sizeOf(c.shape), c.dtype, seed)
        const { cpu, wasm } = await onBothBackends(() => tf.slice(tf.tensor(values, c.shape, c.dtype), begin, size))
        expect(wasm).toEqual(cpu)
      }),
      { numRuns: 150 }
    )
  })

  it("keeps NaN and negative zero", async () => {
    await tf.setBackend("wasm")
    const x = tf.tensor2d([1, Number.NaN, -0, 4, 5, 6], [3, 2])
    const first = await tf.slice(x, [0, 0], [3, 1]).data()
    const second = await tf.slice(x, [0, 1], [3, 1]).data()
    expect(Object.is(first[1], -0)).toBe(true)
    expect(Number.isNaN(second[0])).toBe(true)
    x.dispose()
  })

  it("copies a scalar", async () => {
    await tf.setBackend("wasm")
    const x = tf.scalar(5)
    const copy = tf.engine().runKernel(tf.Slice, { x }, { begin: [], size: [] }) as tf.Tensor
    expect(copy.shape).toEqual([])
    expect(Array.from(await copy.data())).toEqual([5])
    tf.dispose([x, copy])
  })

  it("rejects a slice past the end", async () => {
    await tf.setBackend("wasm")
    const x = tf.zeros([2, 3])
    expect(() => tf.slice(x, [0, 2], [2, 2])).toThrow()
    x.dispose()
  })

  it("string tensors use the package kernel", async () => {
    await tf.setBackend("wasm")
    const x = tf.tensor2d(["a", "b", "c", "d", "e", "f"], [3, 2])
    expect(await tf.slice(x, [1, 1], [2, 1]).data()).toEqual(["d", "f"])
    x.dispose()
  })

  it("gradient matches cpu", async () => {
    const shape = [2, 5, 4, 3]
    const weights = valuesFor(2 * 3 * 2 * 3, "float32", 7)
    const { cpu, wasm } = await onBothBackends(() => {
      const x = tf.tensor(valuesFor(sizeOf(shape), "float32", 8), shape)
      return tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.slice(a, [0, 1, 1, 0], [2, 3, 2, 3]), tf.tensor(weights, [2, 3, 2, 3]))))(x)
    })
    expect(wasm).toEqual(cpu)
  })
})

/** 1 to 4 inputs of one rank (1 to 4) and dtype that agree on every axis but `axis`. */
const concatCaseArbitrary = fc.integer({ min: 1, max: 4 }).chain((rank) =>
  fc.record({
    base: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: rank, maxLength: rank }),
    axis: fc.integer({ min: 0, max: rank - 1 }),
    extents: fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 4 }),
    dtype: dtypeArbitrary
  })
)

describe("wasm Concat", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  it("interleaves channels by hand", async () => {
    await tf.setBackend("wasm")
    const a = tf.tensor3d([1, 2, 3, 4], [1, 2, 2])
    const b = tf.tensor3d([9, 8], [1, 2, 1])
    const joined = tf.concat([a, b], -1)
    expect(joined.shape).toEqual([1, 2, 3])
    expect(Array.from(await joined.data())).toEqual([1, 2, 9, 3, 4, 8])
    tf.dispose([a, b, joined])
  })

  it("matches cpu on random inputs", async () => {
    await fc.assert(
      fc.asyncProperty(concatCaseArbitrary, fc.integer({ min: 1, max: 1000 }), async (c, seed) => {
        const shapes = c.extents.map((extent) => c.base.map((dim, axis) => (axis === c.axis ? extent : dim)))
        const inputs = shapes.map((shape, index) => ({ shape, values: valuesFor(sizeOf(shape), c.dtype, seed + index) }))
        const { cpu, wasm } = await onBothBackends(() =>
          tf.concat(
            inputs.map((input) => tf.tensor(input.values, input.shape, c.dtype)),
            c.axis
          )
        )
        expect(wasm).toEqual(cpu)
      }),
      { numRuns: 150 }
    )
  })

  it("long runs along the last axis", async () => {
    const shapes = [
      [3, 40],
      [3, 17],
      [3, 1]
    ]
    const { cpu, wasm } = await onBothBackends(() => tf.concat(shapes.map((shape, index) => tf.tensor(valuesFor(sizeOf(shape), "float32", index), shape)), 1))
    expect(wasm).toEqual(cpu)
  })

  it("string tensors use the package kernel", async () => {
    await tf.setBackend("wasm")
    const joined = tf.concat([tf.tensor2d(["a", "b"], [2, 1]), tf.tensor2d(["c", "d"], [2, 1])], 1)
    expect(await joined.data()).toEqual(["a", "c", "b", "d"])
    joined.dispose()
  })

  it("gradient matches cpu", async () => {
    const shapes = [
      [2, 3, 3, 2],
      [2, 3, 3, 5]
    ]
    const weights = valuesFor(2 * 3 * 3 * 7, "float32", 11)
    const { cpu, wasm } = await splitOnBothBackends(() => {
      const [a, b] = shapes.map((shape, index) => tf.tensor(valuesFor(sizeOf(shape), "float32", 12 + index), shape))
      return tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(tf.concat([p, q], 3), tf.tensor(weights, [2, 3, 3, 7]))))([a!, b!])
    })
    expect(wasm).toEqual(cpu)
  })
})

describe("wasm SplitV", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  const cases = [
    { name: "channels with -1", shape: [2, 3, 4, 6], sizes: [1, -1, 2], axis: 3 },
    { name: "equal parts of rows", shape: [2, 6, 3], sizes: 3, axis: 1 },
    { name: "batch axis", shape: [5, 2, 2], sizes: [2, 3], axis: 0 },
    { name: "empty part", shape: [3, 4], sizes: [0, 4], axis: 1 }
  ]
  for (const c of cases) {
    it(`matches cpu for ${c.name}`, async () => {
      const values = valuesFor(sizeOf(c.shape), "float32", 21)
      const { cpu, wasm } = await splitOnBothBackends(() => tf.split(tf.tensor(values, c.shape), c.sizes, c.axis))
      expect(wasm).toEqual(cpu)
    })
  }

  it("string tensors use the package kernel", async () => {
    await tf.setBackend("wasm")
    // tf.split rejects strings, so the kernel is called directly.
    const x = tf.tensor2d(["a", "b", "c", "d"], [2, 2])
    const [left, right] = tf.engine().runKernel(tf.SplitV, { x }, { numOrSizeSplits: 2, axis: 1 }) as Array<tf.Tensor>
    expect(await left!.data()).toEqual(["a", "c"])
    expect(await right!.data()).toEqual(["b", "d"])
  })
})

describe("wasm Identity", () => {
  beforeAll(async () => {
    await initBackend({ backend: "wasm" })
  })

  it("clone shares memory", async () => {
    await tf.setBackend("wasm")
    const x = tf.tensor2d([1, 2, 3, 4], [2, 2])
    const copy = tf.clone(x)
    expect(copy.dataId).toBe(x.dataId)
    expect(tf.backend().refCount(x.dataId)).toBe(2)
    tf.dispose([x, copy])
  })

  it("clone outlives its source", async () => {
    await tf.setBackend("wasm")
    const x = tf.tensor2d([1, 2, 3, 4], [2, 2])
    const copy = tf.clone(x)
    x.dispose()
    expect(Array.from(await copy.data())).toEqual([1, 2, 3, 4])
    copy.dispose()
    expect(tf.backend().refCount(x.dataId)).toBe(0)
  })

  it("string tensors use the package kernel", async () => {
    await tf.setBackend("wasm")
    const x = tf.tensor1d(["a", "b"])
    const copy = tf.clone(x)
    expect(await copy.data()).toEqual(["a", "b"])
    tf.dispose([x, copy])
  })
})

describe("Mean gradient", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  for (const backend of ["cpu", "wasm"]) {
    it(`row means on ${backend}`, async () => {
      await tf.setBackend(backend)
      const x = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3])
      const weights = tf.tensor1d([3, 6])
      // d/dx of sum(w * mean(x, 1)) is w[row] / 3 for every element of the row.
      const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.mean(a, 1), weights)))(x)
      expect(dx.shape).toEqual([2, 3])
      expect(Array.from(await dx.data())).toEqual([1, 1, 1, 2, 2, 2])
      tf.dispose([x, weights, dx])
    })

    it(`moments axes on ${backend}`, async () => {
      await tf.setBackend(backend)
      const shape = [2, 3, 2, 2]
      const x = tf.tensor(valuesFor(sizeOf(shape), "float32", 31), shape)
      const weights = tf.tensor1d([0.5, -2])
      // Mean over axes 0 to 2 averages 12 elements per channel.
      const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.mean(a, [0, 1, 2]), weights)))(x)
      const values = Array.from(await dx.data())
      expect(values.filter((_, i) => i % 2 === 0).every((v) => v === Math.fround(0.5 / 12))).toBe(true)
      expect(values.filter((_, i) => i % 2 === 1).every((v) => v === Math.fround(-2 / 12))).toBe(true)
      tf.dispose([x, weights, dx])
    })
  }
})

/** A shape of rank 1 to 5 with extents 0 to 4, and padding of 0 to 3 on each side. */
const padCaseArbitrary = fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 5 }).chain((shape) =>
  fc.record({
    shape: fc.constant(shape),
    dtype: dtypeArbitrary,
    paddings: fc.tuple(...shape.map(() => fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 3 })))),
    constant: fc.integer({ min: -3, max: 3 })
  })
)

describe("wasm PadV2", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  it("pads a row by hand", async () => {
    await tf.setBackend("wasm")
    const x = tf.tensor2d([1, 2, 3, 4], [2, 2])
    const padded = tf.pad(x, [
      [1, 0],
      [0, 1]
    ], 9)
    expect(padded.shape).toEqual([3, 3])
    expect(Array.from(await padded.data())).toEqual([9, 9, 9, 1, 2, 9, 3, 4, 9])
    tf.dispose([x, padded])
  })

  it("matches cpu on random paddings", async () => {
    await fc.assert(
      fc.asyncProperty(padCaseArbitrary, fc.integer({ min: 1, max: 1000 }), async (c, seed) => {
        const values = valuesFor(sizeOf(c.shape), c.dtype, seed)
        const paddings = c.paddings.map(([before, after]) => [before, after] as [number, number])
        const { cpu, wasm } = await onBothBackends(() => tf.pad(tf.tensor(values, c.shape, c.dtype), paddings, c.constant))
        expect(wasm).toEqual(cpu)
      }),
      { numRuns: 150 }
    )
  })

  it("slice gradient matches cpu", async () => {
    const shape = [2, 6, 7, 4]
    const weights = valuesFor(2 * 4 * 3 * 4, "float32", 61)
    const { cpu, wasm } = await onBothBackends(() => {
      const x = tf.tensor(valuesFor(sizeOf(shape), "float32", 62), shape)
      return tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.slice(a, [0, 1, 2, 0], [2, 4, 3, 4]), tf.tensor(weights, [2, 4, 3, 4]))))(x)
    })
    expect(wasm).toEqual(cpu)
  })

  it("int32 fallback runs the package kernel", async () => {
    // The package's PadV2 needs its setup to have run, which replacing it must keep.
    const { callOriginalKernel } = await import("../../src/ml/kernels/original.ts")
    await tf.setBackend("wasm")
    const x = tf.tensor1d([4, 5], "int32")
    const info = callOriginalKernel(tf.PadV2, "wasm", { inputs: { x }, backend: tf.backend(), attrs: { paddings: [[1, 1]], constantValue: 7 } }) as tf.TensorInfo
    const padded = tf.engine().makeTensorFromTensorInfo(info)
    expect(Array.from(await padded.data())).toEqual([7, 4, 5, 7])
    tf.dispose([x, padded])
  })
})
