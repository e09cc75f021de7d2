/**
 * The fast roi paths against the exact kernels they replace: thresholded entropy against
 * thresholding every exact `localEntropy` value, disk morphology against thresholding the
 * exact squared distance transform, and `roiSlice` against the roi method composed from
 * those exact kernels. All on random images.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { withinSquaredDistance } from "../../src/kernels/edt.ts"
import { localEntropy } from "../../src/kernels/entropy.ts"
import { thresholdEntropy } from "../../src/kernels/entropy-threshold.ts"
import { dilateDisk, erodeDisk } from "../../src/kernels/morphology.ts"
import { fillColumns, rankInputLut, roiSlice } from "../../src/kernels/roi.ts"

const imageArbitrary = (maxWidth: number, maxHeight: number, values: fc.Arbitrary<number>) =>
  fc
    .record({ width: fc.integer({ min: 1, max: maxWidth }), height: fc.integer({ min: 1, max: maxHeight }) })
    .chain(({ width, height }) =>
      fc.array(values, { minLength: width * height, maxLength: width * height }).map((pixels) => ({
        width,
        height,
        pixels: Uint8Array.from(pixels)
      }))
    )

/** Mostly zeros with a few values, as roi inputs are after the rank-input mapping. */
const sparseValues = fc.oneof(
  { weight: 6, arbitrary: fc.constant(0) },
  { weight: 3, arbitrary: fc.constantFrom(2, 4, 130, 254) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }
)

/** Thresholds every exact value: the mask `entropy / (max + 1e-16) > threshold`. */
const thresholdExact = (image: Uint8Array, width: number, height: number, radius: number, threshold: number) => {
  const entropy = localEntropy(image, width, height, radius)
  let maximum = -Infinity
  for (const value of entropy) if (value > maximum) maximum = value
  const mask = entropy.map((value) => (value / (maximum + 1e-16) > threshold ? 1 : 0))
  return { mask: Uint8Array.from(mask), maximum, normalised: entropy.map((value) => value / (maximum + 1e-16)) }
}

const countDifferences = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let differences = 0
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differences++
  return differences
}

describe("thresholdEntropy", () => {
  it("equals exact thresholding", () => {
    fc.assert(
      fc.property(
        imageArbitrary(40, 30, sparseValues),
        fc.integer({ min: 0, max: 7 }),
        fc.constantFrom(0.01, 0, 0.2, 0.5, -1),
        ({ width, height, pixels }, radius, threshold) => {
          const exact = thresholdExact(pixels, width, height, radius, threshold)
          const { mask, stats } = thresholdEntropy(pixels, width, height, radius, threshold)
          expect(stats.maximum).toBe(exact.maximum)
          expect(countDifferences(mask, exact.mask)).toBe(0)
        }
      ),
      { numRuns: 150 }
    )
  })

  it("equals exact thresholding when dense", () => {
    // Mostly nonzero pixels, so most rows take the dense slide instead of the events.
    const denseValues = fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 4, arbitrary: fc.integer({ min: 1, max: 255 }) })
    fc.assert(
      fc.property(imageArbitrary(50, 40, denseValues), fc.integer({ min: 0, max: 9 }), ({ width, height, pixels }, radius) => {
        const exact = thresholdExact(pixels, width, height, radius, 0.01)
        const { mask, stats } = thresholdEntropy(pixels, width, height, radius, 0.01)
        expect(stats.maximum).toBe(exact.maximum)
        expect(countDifferences(mask, exact.mask)).toBe(0)
      }),
      { numRuns: 100 }
    )
  })

  it("decides pixels exactly at the threshold", () => {
    // The threshold is some pixel's own normalised value, so that pixel (and every pixel
    // with the same histogram) sits on the boundary and must not enter the mask.
    fc.assert(
      fc.property(imageArbitrary(30, 30, sparseValues), fc.integer({ min: 1, max: 5 }), fc.nat(), ({ width, height, pixels }, radius, pick) => {
        const normalised = thresholdExact(pixels, width, height, radius, 0).normalised
        const threshold = normalised[pick % normalised.length]
        const exact = thresholdExact(pixels, width, height, radius, threshold)
        const { mask } = thresholdEntropy(pixels, width, height, radius, threshold)
        expect(countDifferences(mask, exact.mask)).toBe(0)
      }),
      { numRuns: 150 }
    )
  })

  it("equals exact thresholding at radius 15", () => {
    fc.assert(
      fc.property(imageArbitrary(80, 70, sparseValues), ({ width, height, pixels }) => {
        const exact = thresholdExact(pixels, width, height, 15, 0.01)
        const { mask } = thresholdEntropy(pixels, width, height, 15, 0.01)
        expect(countDifferences(mask, exact.mask)).toBe(0)
      }),
      { numRuns: 15 }
    )
  })

  it("recomputes few pixels of a noisy image", () => {
    let seed = 7
    const pixels = Uint8Array.from({ length: 120 * 100 }, () => {
      seed = (seed * 1103515245 + 12345) >>> 0
      return seed >>> 24 < 40 ? seed & 255 : 0
    })
    const { stats } = thresholdEntropy(pixels, 120, 100, 15, 0.01)
    expect(stats.recomputed).toBeLessThan(100)
  })

  it("gives an empty mask for a constant image", () => {
    const { mask, stats } = thresholdEntropy(new Uint8Array(48).fill(9), 8, 6, 3, 0.01)
    expect(stats.maximum).toBe(0)
    expect(mask.every((value) => value === 0)).toBe(true)
  })

  it("gives a full mask below zero", () => {
    const { mask } = thresholdEntropy(new Uint8Array(48).fill(9), 8, 6, 3, -0.5)
    expect(mask.every((value) => value === 1)).toBe(true)
  })
})

describe("disk morphology", () => {
  const maskValues = fc.constantFrom(0, 0, 0, 1, 1, 7)

  it("dilates as the distance transform", () => {
    fc.assert(
      fc.property(imageArbitrary(30, 30, maskValues), fc.integer({ min: 0, max: 40 }), ({ width, height, pixels }, radius) => {
        const expected = withinSquaredDistance(pixels, width, height, "foreground", radius * radius)
        expect(countDifferences(dilateDisk(pixels, width, height, radius), expected)).toBe(0)
      }),
      { numRuns: 200 }
    )
  })

  it("erodes as the distance transform", () => {
    fc.assert(
      fc.property(imageArbitrary(30, 30, maskValues), fc.integer({ min: 0, max: 40 }), ({ width, height, pixels }, radius) => {
        const nearBackground = withinSquaredDistance(pixels, width, height, "background", radius * radius)
        const expected = nearBackground.map((value) => value ^ 1)
        expect(countDifferences(erodeDisk(pixels, width, height, radius), expected)).toBe(0)
      }),
      { numRuns: 200 }
    )
  })
})

describe("roiSlice fast paths", () => {
  /** The roi method from the exact kernels: every entropy value and two distance transforms. */
  const roiExact = (pixels: Uint8Array, width: number, height: number, radius: number, closingRadius: number) => {
    const rankInput = pixels.map((value) => rankInputLut[value])
    const { mask } = thresholdExact(rankInput, width, height, radius, 0.01)
    const limit = closingRadius * closingRadius
    const dilated = withinSquaredDistance(mask, width, height, "foreground", limit)
    const closed = withinSquaredDistance(dilated, width, height, "background", limit).map((value) => value ^ 1)
    fillColumns(closed, width, height)
    return closed
  }

  it("equals the exact kernels", () => {
    const values = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 127 }) }, { weight: 1, arbitrary: fc.integer({ min: 128, max: 255 }) })
    fc.assert(
      fc.property(
        imageArbitrary(48, 40, values),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 12 }),
        ({ width, height, pixels }, entropyRadius, closingRadius) => {
          const params = { entropyRadius, threshold: 0.01, closingRadius }
          const expected = roiExact(pixels, width, height, entropyRadius, closingRadius)
          expect(countDifferences(roiSlice(pixels, width, height, undefined, params), expected)).toBe(0)
        }
      ),
      { numRuns: 100 }
    )
  })
})
