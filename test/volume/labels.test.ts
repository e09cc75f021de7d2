import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  countLabelledSlices,
  labelledSlices,
  summarizeSlices,
  toBinaryFluid,
  UNLABELLED,
  validateLabels
} from "../../src/volume/labels.ts"
import type { Volume } from "../../src/volume/volume.ts"

/** 2 x 2 slices; slice values listed per slice. */
const labels = (...slices: number[][]): Volume<Uint8Array> => ({
  dims: [2, 2, slices.length],
  spacingMm: [1, 1, 1],
  dtype: "uint8",
  data: Uint8Array.from(slices.flat())
})

const U = UNLABELLED

describe("validateLabels", () => {
  it("accepts retouch codes", () => {
    expect(() => validateLabels(labels([0, 1, 2, 3], [U, U, U, U]), "retouch", "ref.mhd")).not.toThrow()
  })

  it("accepts binary codes", () => {
    expect(() => validateLabels(labels([0, 1, 1, 0]), "binary", "ref.mhd")).not.toThrow()
  })

  it("rejects code 2 under binary", () => {
    const error = (() => {
      try {
        validateLabels(labels([0, 2, 2, 1]), "binary", "ref.mhd")
      } catch (e) {
        return e as Error & { _tag: string; invalid: unknown }
      }
    })()
    expect(error?._tag).toBe("LabelValueOutOfSchemeError")
    expect(error?.invalid).toEqual([{ value: 2, voxels: 2 }])
    expect(error?.message).toContain("ref.mhd")
    expect(error?.message).toContain("2 (2 voxels)")
    expect(error?.message).toContain("retouch scheme")
  })

  it("rejects 85/170 under retouch", () => {
    let message = ""
    try {
      validateLabels(labels([0, 85, 170, 170]), "retouch", "ref.mhd")
    } catch (e) {
      message = (e as Error).message
    }
    expect(message).toContain("85 (1 voxels), 170 (2 voxels)")
    expect(message).toContain("divide the mask by 85")
  })

  it("rejects partly unlabelled slice", () => {
    let tag = ""
    try {
      validateLabels(labels([0, 0, 0, 0], [0, U, U, U]), "binary", "ref.mhd")
    } catch (e) {
      tag = (e as { _tag: string })._tag
    }
    expect(tag).toBe("LabelSlicePartlyUnlabelledError")
  })
})

describe("slice summaries", () => {
  const volume = labels([0, 1, 0, 0], [U, U, U, U], [0, 0, 0, 0], [2, 3, 3, 0])

  it("flags labelled slices", () => {
    expect(labelledSlices(volume)).toEqual([true, false, true, true])
  })

  it("counts labelled slices", () => {
    expect(countLabelledSlices(volume)).toBe(3)
  })

  it("finds retouch classes per slice", () => {
    const summary = summarizeSlices(volume, "retouch")
    expect(summary.map((s) => [s.hasIrf, s.hasSrf, s.hasPed])).toEqual([
      [true, false, false],
      [false, false, false],
      [false, false, false],
      [false, true, true]
    ])
    expect(summary[3].classVoxels).toEqual([1, 0, 1, 2])
  })

  it("leaves types unknown for binary", () => {
    const summary = summarizeSlices(labels([0, 1, 0, 0], [U, U, U, U]), "binary")
    expect(summary[0].hasFluid).toBe(true)
    expect(summary[0].hasIrf).toBeNull()
    expect(summary[1].labelled).toBe(false)
    expect(summary[1].hasFluid).toBe(false)
  })

  it("maps retouch to binary", () => {
    expect(Array.from(toBinaryFluid(volume).data)).toEqual([0, 1, 0, 0, U, U, U, U, 0, 0, 0, 0, 1, 1, 1, 0])
  })

  it("binary map keeps labelled flags", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant(null), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 4, maxLength: 4 })), {
          minLength: 1,
          maxLength: 6
        }),
        (slices) => {
          const volume = labels(...slices.map((slice) => slice ?? [U, U, U, U]))
          expect(labelledSlices(toBinaryFluid(volume))).toEqual(labelledSlices(volume))
          expect(() => validateLabels(toBinaryFluid(volume), "binary", "p")).not.toThrow()
        }
      )
    )
  })
})
