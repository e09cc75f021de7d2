import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { squaredDistanceTransform } from "../../src/kernels/edt.ts"
import { diskHalfWidths, localEntropy } from "../../src/kernels/entropy.ts"
import { InvalidParameterError, InvalidShapeError } from "../../src/kernels/errors.ts"
import { logRoundedToNearest } from "../../src/kernels/log.ts"
import { closeDisk, dilateDisk, erodeDisk } from "../../src/kernels/morphology.ts"
import { fillColumns, rankInputLut, roiSlice, roiVolume } from "../../src/kernels/roi.ts"

const grid = (rows: number[][]): Uint8Array => Uint8Array.from(rows.flat())

const imageArbitrary = (maxSize: number, values: fc.Arbitrary<number>) =>
  fc
    .record({ width: fc.integer({ min: 1, max: maxSize }), height: fc.integer({ min: 1, max: maxSize }) })
    .chain(({ width, height }) =>
      fc.array(values, { minLength: width * height, maxLength: width * height }).map((pixels) => ({
        width,
        height,
        pixels: Uint8Array.from(pixels)
      }))
    )

const maskArbitrary = (maxSize: number) => imageArbitrary(maxSize, fc.integer({ min: 0, max: 1 }))

/** Entropy by rebuilding the disk histogram at every pixel, bins summed in ascending order. */
const entropyBruteForce = (image: Uint8Array, width: number, height: number, radius: number): Float64Array => {
  const out = new Float64Array(width * height)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const counts = new Array<number>(256).fill(0)
      let pop = 0
      for (let dy = -radius; dy <= radius; dy++) {
        for (let dx = -radius; dx <= radius; dx++) {
          const [xx, yy] = [x + dx, y + dy]
          if (dx * dx + dy * dy > radius * radius || xx < 0 || yy < 0 || xx >= width || yy >= height) continue
          counts[image[yy * width + xx]]++
          pop++
        }
      }
      let entropy = 0
      for (let value = 0; value < 256; value++) {
        const p = counts[value] / pop
        if (p > 0) entropy -= (p * logRoundedToNearest(p)) / 0.6931471805599453
      }
      out[y * width + x] = entropy
    }
  }
  return out
}

/** Squared distance to the nearest site by checking every pixel. */
const distanceBruteForce = (mask: Uint8Array, width: number, height: number, foreground: boolean): Float64Array => {
  const out = new Float64Array(width * height).fill(Infinity)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let i = 0; i < mask.length; i++) {
        if ((mask[i] !== 0) !== foreground) continue
        const dx = x - (i % width)
        const dy = y - Math.floor(i / width)
        out[y * width + x] = Math.min(out[y * width + x], dx * dx + dy * dy)
      }
    }
  }
  return out
}

/** Closes by visiting every disk offset, with outside 0 for the dilation and 1 for the erosion. */
const closeBruteForce = (mask: Uint8Array, width: number, height: number, radius: number): Uint8Array => {
  const visit = (source: Uint8Array, outside: number, any: boolean): Uint8Array => {
    const out = new Uint8Array(source.length)
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let hit = any ? 0 : 1
        for (let dy = -radius; dy <= radius; dy++) {
          for (let dx = -radius; dx <= radius; dx++) {
            if (dx * dx + dy * dy > radius * radius) continue
            const [xx, yy] = [x + dx, y + dy]
            const inside = xx >= 0 && yy >= 0 && xx < width && yy < height
            const value = inside ? source[yy * width + xx] : outside
            if (any && value) hit = 1
            if (!any && !value) hit = 0
          }
        }
        out[y * width + x] = hit
      }
    }
    return out
  }
  return visit(visit(mask, 0, true), 1, false)
}

describe("rankInputLut", () => {
  it.each([
    [0, 0],
    [127, 0],
    [128, 0],
    [129, 2],
    [192, 128],
    [200, 143],
    [255, 253]
  ])("maps %i to %i", (value, expected) => {
    expect(rankInputLut[value]).toBe(expected)
  })
})

describe("localEntropy", () => {
  it("computes a 5x5 case by hand", () => {
    const image = new Uint8Array(25)
    image[12] = 7
    const entropy = localEntropy(image, 5, 5, 1)
    // Disks holding the centre: 4 zeros and one 7 of 5 pixels.
    const mixed = -(0.8 * Math.log2(0.8) + 0.2 * Math.log2(0.2))
    for (const i of [7, 11, 12, 13, 17]) expect(entropy[i], `pixel ${i}`).toBeCloseTo(mixed, 14)
    expect(entropy[0]).toBe(0)
    expect(entropy[6]).toBe(0)
  })

  it("counts only pixels inside the image", () => {
    // Corner disk of radius 1: the corner and its two neighbours, one of which is 1.
    const image = grid([
      [0, 1],
      [0, 0]
    ])
    const entropy = localEntropy(image, 2, 2, 1)
    const third = -((2 / 3) * Math.log2(2 / 3) + (1 / 3) * Math.log2(1 / 3))
    expect(entropy[0]).toBeCloseTo(third, 14)
  })

  it("equals brute force", () => {
    const values = fc.constantFrom(0, 0, 0, 2, 4, 9, 128, 253)
    fc.assert(
      fc.property(imageArbitrary(24, values), fc.integer({ min: 0, max: 6 }), ({ width, height, pixels }, radius) => {
        const fast = localEntropy(pixels, width, height, radius)
        const slow = entropyBruteForce(pixels, width, height, radius)
        expect([...fast]).toEqual([...slow])
      }),
      { numRuns: 200 }
    )
  })

  it("matches the disk of radius 15", () => {
    // scikit-image disk(15): 31 rows, 709 pixels.
    const widths = diskHalfWidths(15)
    expect(widths.length).toBe(31)
    expect(widths.reduce((sum, w) => sum + 2 * w + 1, 0)).toBe(709)
    expect(widths[0]).toBe(0)
    expect(widths[15]).toBe(15)
  })

  it("rejects a negative radius", () => {
    expect(() => localEntropy(new Uint8Array(4), 2, 2, -1)).toThrow(InvalidParameterError)
  })
})

describe("squaredDistanceTransform", () => {
  it("computes a 5x5 case by hand", () => {
    const mask = new Uint8Array(25)
    mask[12] = 1
    const distances = squaredDistanceTransform(mask, 5, 5, "foreground")
    expect([...distances]).toEqual([8, 5, 4, 5, 8, 5, 2, 1, 2, 5, 4, 1, 0, 1, 4, 5, 2, 1, 2, 5, 8, 5, 4, 5, 8])
  })

  it("is infinite without sites", () => {
    const distances = squaredDistanceTransform(new Uint8Array(6).fill(1), 3, 2, "background")
    expect(distances.every((d) => d === Infinity)).toBe(true)
  })

  it("equals brute force", () => {
    fc.assert(
      fc.property(maskArbitrary(14), fc.boolean(), ({ width, height, pixels }, foreground) => {
        const fast = squaredDistanceTransform(pixels, width, height, foreground ? "foreground" : "background")
        expect([...fast]).toEqual([...distanceBruteForce(pixels, width, height, foreground)])
      }),
      { numRuns: 300 }
    )
  })
})

describe("closeDisk", () => {
  it("closes a 5x5 case by hand", () => {
    // A one-pixel hole fills, and a lone pixel in the corner stays alone.
    const mask = grid([
      [1, 1, 1, 0, 0],
      [1, 0, 1, 0, 0],
      [1, 1, 1, 0, 0],
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 1]
    ])
    const expected = grid([
      [1, 1, 1, 0, 0],
      [1, 1, 1, 0, 0],
      [1, 1, 1, 0, 0],
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 1]
    ])
    expect([...closeDisk(mask, 5, 5, 1)]).toEqual([...expected])
  })

  it("dilates with zero outside", () => {
    const dilated = dilateDisk(grid([[1, 0, 0]]), 3, 1, 1)
    expect([...dilated]).toEqual([1, 1, 0])
  })

  it("erodes with one outside", () => {
    const eroded = erodeDisk(grid([[1, 1, 0]]), 3, 1, 1)
    expect([...eroded]).toEqual([1, 0, 0])
  })

  it("never removes a pixel", () => {
    fc.assert(
      fc.property(maskArbitrary(20), fc.integer({ min: 0, max: 6 }), ({ width, height, pixels }, radius) => {
        const closed = closeDisk(pixels, width, height, radius)
        return pixels.every((value, i) => value === 0 || closed[i] === 1)
      }),
      { numRuns: 300 }
    )
  })

  it("equals brute force", () => {
    fc.assert(
      fc.property(maskArbitrary(14), fc.integer({ min: 0, max: 5 }), ({ width, height, pixels }, radius) => {
        expect([...closeDisk(pixels, width, height, radius)]).toEqual([...closeBruteForce(pixels, width, height, radius)])
      }),
      { numRuns: 150 }
    )
  })
})

describe("fillColumns", () => {
  it("fills between first and last pixel", () => {
    const mask = grid([
      [0, 1, 0],
      [0, 0, 0],
      [1, 0, 0],
      [0, 1, 0],
      [0, 0, 0]
    ])
    fillColumns(mask, 3, 5)
    expect([...mask]).toEqual([0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0])
  })
})

describe("roiSlice", () => {
  const small = { entropyRadius: 1, threshold: 0.01, closingRadius: 1 }

  it("keeps the entropy plus in a 5x5 case", () => {
    // One bright pixel: the five disks that hold it have equal, maximal entropy.
    const pixels = new Uint8Array(25)
    pixels[12] = 255
    const expected = grid([
      [0, 0, 0, 0, 0],
      [0, 0, 1, 0, 0],
      [0, 1, 1, 1, 0],
      [0, 0, 1, 0, 0],
      [0, 0, 0, 0, 0]
    ])
    expect([...roiSlice(pixels, 5, 5, undefined, small)]).toEqual([...expected])
  })

  it("ignores values below 128", () => {
    const pixels = new Uint8Array(25).fill(60)
    pixels[12] = 127
    expect(roiSlice(pixels, 5, 5, undefined, small).every((v) => v === 0)).toBe(true)
  })

  it("adds fluid pixels", () => {
    const fluid = new Uint8Array(25)
    fluid[0] = 3
    const mask = roiSlice(new Uint8Array(25), 5, 5, fluid, small)
    expect(mask[0]).toBe(1)
    expect(mask.reduce((sum, v) => sum + v, 0)).toBe(1)
  })

  it("skips unlabelled voxels", () => {
    const mask = roiSlice(new Uint8Array(25), 5, 5, new Uint8Array(25).fill(255), small)
    expect(mask.every((v) => v === 0)).toBe(true)
  })

  it("fills each column", () => {
    const fluid = new Uint8Array(25)
    fluid[1] = 1
    fluid[21] = 2
    const mask = roiSlice(new Uint8Array(25), 5, 5, fluid, { ...small, closingRadius: 0 })
    expect([1, 6, 11, 16, 21].map((i) => mask[i])).toEqual([1, 1, 1, 1, 1])
    expect(mask.reduce((sum, v) => sum + v, 0)).toBe(5)
  })

  it("rejects a fluid slice of another size", () => {
    expect(() => roiSlice(new Uint8Array(25), 5, 5, new Uint8Array(20))).toThrow(InvalidShapeError)
  })

  it("rejects a fractional radius", () => {
    expect(() => roiSlice(new Uint8Array(25), 5, 5, undefined, { ...small, closingRadius: 1.5 })).toThrow(/closingRadius/)
  })
})

describe("roiVolume", () => {
  it("computes each slice", () => {
    const data = new Uint8Array(50)
    data[12] = 255
    const labels = new Uint8Array(50)
    labels[25] = 1
    const volume = { dims: [5, 5, 2] as const, spacingMm: [1, 2, 3] as const, dtype: "uint8" as const, data }
    const output = roiVolume(volume, { ...volume, data: labels }, { entropyRadius: 1, threshold: 0.01, closingRadius: 1 })
    expect([...output.data.subarray(0, 25)]).toEqual([...roiSlice(data.subarray(0, 25), 5, 5, undefined, { entropyRadius: 1, threshold: 0.01, closingRadius: 1 })])
    expect(output.data[25]).toBe(1)
    expect(output.data.subarray(25).reduce((sum, v) => sum + v, 0)).toBe(1)
    expect(output.spacingMm).toEqual([1, 2, 3])
  })

  it("equals roiSlice on every slice", () => {
    const params = { entropyRadius: 2, threshold: 0.01, closingRadius: 2 }
    const slice = fc.array(fc.constantFrom(0, 100, 130, 200, 255), { minLength: 120, maxLength: 120 })
    fc.assert(
      fc.property(fc.array(slice, { minLength: 1, maxLength: 4 }), (slices) => {
        const data = Uint8Array.from(slices.flat())
        const volume = { dims: [12, 10, slices.length] as const, spacingMm: [1, 1, 1] as const, dtype: "uint8" as const, data }
        const output = roiVolume(volume, undefined, params)
        slices.forEach((_, z) => {
          const expected = roiSlice(data.subarray(z * 120, (z + 1) * 120), 12, 10, undefined, params)
          expect([...output.data.subarray(z * 120, (z + 1) * 120)], `slice ${z}`).toEqual([...expected])
        })
      }),
      { numRuns: 50 }
    )
  })

  it("rejects labels of other dims", () => {
    const volume = { dims: [5, 5, 1] as const, spacingMm: [1, 1, 1] as const, dtype: "uint8" as const, data: new Uint8Array(25) }
    const labels = { ...volume, dims: [5, 1, 5] as const }
    expect(() => roiVolume(volume, labels)).toThrow(/roi labels/)
  })
})
