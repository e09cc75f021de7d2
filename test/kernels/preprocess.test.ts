import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { UnsupportedIntensityError, InvalidParameterError, InvalidShapeError } from "../../src/kernels/errors.ts"
import { histogram256, matchHistogramLut, matchHistogramValues } from "../../src/kernels/histogram.ts"
import { toUint8 } from "../../src/kernels/intensity.ts"
import { median3x3, zMedianSlice } from "../../src/kernels/median.ts"
import { preprocessVolume, slicePresence } from "../../src/kernels/preprocess.ts"
import type { Volume } from "../../src/volume/volume.ts"

const grid = (rows: number[][]): Uint8Array => Uint8Array.from(rows.flat())

/** 3x3 median with replicated borders by sorting the nine values. */
const medianBySorting = (input: Uint8Array, width: number, height: number): Uint8Array => {
  const out = new Uint8Array(input.length)
  const clamp = (value: number, size: number) => Math.min(Math.max(value, 0), size - 1)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const window: number[] = []
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) window.push(input[clamp(y + dy, height) * width + clamp(x + dx, width)])
      }
      out[y * width + x] = window.sort((a, b) => a - b)[4]
    }
  }
  return out
}

const imageArbitrary = fc
  .record({ width: fc.integer({ min: 1, max: 9 }), height: fc.integer({ min: 1, max: 9 }) })
  .chain(({ width, height }) =>
    fc
      .uint8Array({ minLength: width * height, maxLength: width * height })
      .map((pixels) => ({ width, height, pixels }))
  )

describe("toUint8", () => {
  it.each([
    [0, 0],
    [257, 0],
    [258, 1],
    [32768, 127],
    [65535, 254]
  ])("scales uint16 %i to %i", (value, expected) => {
    expect(toUint8(Uint16Array.of(value), "uint16")[0]).toBe(expected)
  })

  it("matches float32 formula for uint16", () => {
    const all = new Uint16Array(65536).map((_, i) => i)
    const scaled = toUint8(all, "uint16")
    let mismatches = 0
    for (let v = 0; v < 65536; v++) {
      if (scaled[v] !== Math.floor(Math.fround(Math.fround(v / 65536) * 255))) mismatches++
    }
    expect(mismatches).toBe(0)
  })

  it.each([
    ["odd length", 0, 7],
    ["unaligned start", 1, 8]
  ])("scales uint16 with %s", (_, offset, length) => {
    const values = Uint16Array.of(0, 255, 256, 1000, 32768, 40000, 65280, 65535, 12345)
    const data = values.subarray(offset, offset + length)
    const expected = [...data].map((v) => Math.floor(Math.fround(Math.fround(v / 65536) * 255)))
    expect([...toUint8(data, "uint16")]).toEqual(expected)
  })

  it("keeps uint8", () => {
    expect([...toUint8(Uint8Array.of(0, 17, 255), "uint8")]).toEqual([0, 17, 255])
  })

  it("keeps 8-bit values in float32", () => {
    expect([...toUint8(Float32Array.of(0, 128, 255), "float32")]).toEqual([0, 128, 255])
  })

  it.each([
    ["float32", Float32Array.of(0.5)],
    ["float64", Float64Array.of(256)],
    ["uint32", Uint32Array.of(300)],
    ["int8", Int8Array.of(-1)],
    ["int16", Int16Array.of(5, -3)]
  ] as const)("rejects %s out of range", (dtype, data) => {
    expect(() => toUint8(data, dtype)).toThrow(UnsupportedIntensityError)
  })

  it("names the value in the error", () => {
    expect(() => toUint8(Float32Array.of(0, 0.25), "float32")).toThrow(/float32.*value 0\.25 at index 1/)
  })
})

describe("histogram matching", () => {
  it("counts values", () => {
    const counts = histogram256(Uint8Array.of(0, 3, 3, 255))
    expect(counts[0]).toBe(1)
    expect(counts[3]).toBe(2)
    expect(counts[255]).toBe(1)
    expect(counts.reduce((sum, count) => sum + count, 0)).toBe(4)
  })

  it("maps a 5x5 case by hand", () => {
    // Source 10 x 0, 10 x 1, 5 x 2: quantiles 0.4, 0.8, 1.
    const source = grid([
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0],
      [1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1],
      [2, 2, 2, 2, 2]
    ])
    // Reference 5 x 10, 15 x 20, 5 x 30: quantiles 0.2, 0.8, 1.
    const reference = grid([
      [10, 10, 10, 10, 10],
      [20, 20, 20, 20, 20],
      [20, 20, 20, 20, 20],
      [20, 20, 20, 20, 20],
      [30, 30, 30, 30, 30]
    ])
    const values = matchHistogramValues(histogram256(source), histogram256(reference))
    // 0.4 lies a third of the way from 0.2 to 0.8: 10 + 10 / 3.
    expect(values[0]).toBeCloseTo(13.333333333333334, 12)
    expect(values[1]).toBe(20)
    expect(values[2]).toBe(30)
    expect(Number.isNaN(values[3])).toBe(true)
    const lut = matchHistogramLut(histogram256(source), histogram256(reference))
    expect([lut[0], lut[1], lut[2]]).toEqual([13, 20, 30])
  })

  it("clamps below the first reference quantile", () => {
    // Source 1 x 0, 9 x 9: q(0) = 0.1 < 0.5, the reference's first quantile.
    const source = new Float64Array(256)
    source[0] = 1
    source[9] = 9
    const reference = new Float64Array(256)
    reference[40] = 5
    reference[80] = 5
    const lut = matchHistogramLut(source, reference)
    expect(lut[0]).toBe(40)
    expect(lut[9]).toBe(80)
  })

  it("is monotone", () => {
    const histogram = fc.array(fc.nat({ max: 50 }), { minLength: 256, maxLength: 256 }).filter((counts) => counts.some((c) => c > 0))
    fc.assert(
      fc.property(histogram, histogram, (source, reference) => {
        const values = matchHistogramValues(source, reference)
        let previous = -Infinity
        for (let v = 0; v < 256; v++) {
          if (source[v] === 0) continue
          if (!(values[v] >= previous)) return false
          previous = values[v]
        }
        return true
      })
    )
  })

  it("rejects an empty reference", () => {
    expect(() => matchHistogramLut(histogram256(Uint8Array.of(1)), new Float64Array(256))).toThrow(InvalidParameterError)
  })

  it("rejects a short histogram", () => {
    expect(() => matchHistogramLut(new Float64Array(10).fill(1), new Float64Array(256).fill(1))).toThrow(/256 bins/)
  })
})

describe("median3x3", () => {
  it("filters a 5x5 case by hand", () => {
    const input = grid([
      [0, 0, 0, 0, 0],
      [0, 9, 0, 0, 0],
      [0, 0, 0, 0, 0],
      [0, 0, 0, 9, 9],
      [0, 0, 0, 9, 9]
    ])
    // The impulse goes, and the corner block keeps the three pixels whose replicated window contains six 9s.
    const expected = grid([
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 9],
      [0, 0, 0, 9, 9]
    ])
    const output = new Uint8Array(25)
    median3x3(input, output, 5, 5)
    expect([...output]).toEqual([...expected])
  })

  it("keeps a constant image", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 255 }), (width, height, value) => {
        const output = new Uint8Array(width * height)
        median3x3(new Uint8Array(width * height).fill(value), output, width, height)
        return output.every((v) => v === value)
      })
    )
  })

  it("equals sorting the window", () => {
    fc.assert(
      fc.property(imageArbitrary, ({ width, height, pixels }) => {
        const output = new Uint8Array(pixels.length)
        median3x3(pixels, output, width, height)
        expect([...output]).toEqual([...medianBySorting(pixels, width, height)])
      })
    )
  })

  it("rejects a wrong length", () => {
    expect(() => median3x3(new Uint8Array(24), new Uint8Array(25), 5, 5)).toThrow(InvalidShapeError)
  })
})

describe("zMedianSlice", () => {
  it("filters a 5x5 case by hand", () => {
    const previous = new Uint8Array(25).fill(1)
    const current = new Uint8Array(25).fill(5)
    current[12] = 0
    const next = new Uint8Array(25).fill(3)
    const output = new Uint8Array(25)
    zMedianSlice(previous, current, next, output)
    const expected = new Uint8Array(25).fill(3)
    expected[12] = 1
    expect([...output]).toEqual([...expected])
  })

  it("keeps identical slices", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (slice) => {
        const output = new Uint8Array(slice.length)
        zMedianSlice(slice, slice, slice, output)
        return output.every((v, i) => v === slice[i])
      })
    )
  })
})

const volumeOf = <A extends Uint8Array | Uint16Array>(data: A, dims: [number, number, number]): Volume<A> => ({
  dims,
  spacingMm: [0.01, 0.002, 0.1],
  dtype: data instanceof Uint8Array ? "uint8" : "uint16",
  data
})

describe("preprocessVolume", () => {
  // Three 3x3 slices. The middle one has an impulse and differs in z from its neighbours.
  const stack = () =>
    Uint8Array.from([
      ...[10, 10, 10, 10, 10, 10, 10, 10, 10],
      ...[50, 50, 50, 50, 200, 50, 50, 50, 50],
      ...[30, 30, 30, 30, 30, 30, 30, 30, 30]
    ])

  it("scales Spectralis only", () => {
    const data = Uint16Array.from([0, 65535, 258, 0, 65535, 0])
    const output = preprocessVolume(volumeOf(data, [3, 2, 1]), "Spectralis", { referenceHistogram: new Float64Array(256).fill(1) })
    expect([...output.data]).toEqual([0, 254, 1, 0, 254, 0])
    expect(output.spacingMm).toEqual([0.01, 0.002, 0.1])
  })

  it("applies the z-median to Cirrus", () => {
    const output = preprocessVolume(volumeOf(stack(), [3, 3, 3]), "Cirrus", { referenceHistogram: null })
    // Middle slice: median(10, 50, 30) = 30 everywhere, and median(10, 200, 30) = 30.
    expect([...output.data.subarray(9, 18)]).toEqual(new Array(9).fill(30))
    expect([...output.data.subarray(0, 9)]).toEqual(new Array(9).fill(10))
  })

  it("keeps Cirrus z order in original mode", () => {
    const output = preprocessVolume(volumeOf(stack(), [3, 3, 3]), "Cirrus", { referenceHistogram: null, zMedianVendors: ["Topcon"] })
    // No z-median: the 3x3 median removes the impulse and leaves 50.
    expect([...output.data.subarray(9, 18)]).toEqual(new Array(9).fill(50))
  })

  it("applies the z-median to Topcon in original mode", () => {
    const output = preprocessVolume(volumeOf(stack(), [3, 3, 3]), "Topcon", { referenceHistogram: null, zMedianVendors: ["Topcon"] })
    expect([...output.data.subarray(9, 18)]).toEqual(new Array(9).fill(30))
  })

  it("matches to the reference histogram", () => {
    // Source values 0 and 1 in equal parts, reference values 100 and 200 in equal parts.
    const data = Uint8Array.from([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    const reference = new Float64Array(256)
    reference[100] = 3
    reference[200] = 3
    const output = preprocessVolume(volumeOf(data, [3, 4, 1]), "Topcon", { referenceHistogram: reference })
    // Rows 0-1 become 100 and rows 2-3 become 200, and the median keeps that edge.
    expect([...output.data]).toEqual([100, 100, 100, 100, 100, 100, 200, 200, 200, 200, 200, 200])
  })

  it("leaves the input unchanged", () => {
    const data = stack()
    preprocessVolume(volumeOf(data, [3, 3, 3]), "Topcon", { referenceHistogram: null })
    expect([...data]).toEqual([...stack()])
  })

  it("leaves matched input unchanged", () => {
    const data = stack()
    const reference = new Float64Array(256).fill(1)
    preprocessVolume(volumeOf(data, [3, 3, 3]), "Cirrus", { referenceHistogram: reference })
    expect([...data]).toEqual([...stack()])
  })

  it("rejects an unknown vendor", () => {
    expect(() => preprocessVolume(volumeOf(stack(), [3, 3, 3]), "Heidelberg" as "Cirrus", { referenceHistogram: null })).toThrow(
      /vendor.*"Heidelberg"/
    )
  })

  it("rejects dims that disagree with the data", () => {
    expect(() => preprocessVolume(volumeOf(stack(), [3, 3, 2]), "Topcon", { referenceHistogram: null })).toThrow(InvalidShapeError)
  })
})

describe("slicePresence", () => {
  it("flags classes per slice", () => {
    // Slice 0 has IRF and PED, slice 1 is unlabelled, slice 2 is background only.
    const data = Uint8Array.from([1, 0, 3, 0, 255, 255, 255, 255, 0, 0, 0, 0])
    const presence = slicePresence(volumeOf(data, [2, 2, 3]), "retouch")
    expect(presence.map((slice) => slice.labelled)).toEqual([true, false, true])
    expect(presence.map((slice) => slice.hasIrf)).toEqual([true, false, false])
    expect(presence.map((slice) => slice.hasSrf)).toEqual([false, false, false])
    expect(presence.map((slice) => slice.hasPed)).toEqual([true, false, false])
  })
})

describe("zMedianSlice packed", () => {
  it("equals the scalar median", () => {
    // Lengths that are not multiples of four exercise the scalar tail after the packed words.
    const triple = fc.integer({ min: 1, max: 40 }).chain((length) =>
      fc.tuple(...[0, 1, 2].map(() => fc.uint8Array({ minLength: length, maxLength: length })))
    )
    fc.assert(
      fc.property(triple, ([previous, current, next]) => {
        const output = new Uint8Array(previous.length)
        zMedianSlice(previous, current, next, output)
        const expected = previous.map((_, i) => [previous[i], current[i], next[i]].sort((a, b) => a - b)[1])
        expect([...output]).toEqual([...expected])
      }),
      { numRuns: 500 }
    )
  })

  it("handles bytes across the sign bit", () => {
    const previous = Uint8Array.of(255, 0, 128, 127)
    const current = Uint8Array.of(0, 255, 127, 128)
    const next = Uint8Array.of(128, 128, 255, 0)
    const output = new Uint8Array(4)
    zMedianSlice(previous, current, next, output)
    expect([...output]).toEqual([128, 128, 128, 127])
  })
})
