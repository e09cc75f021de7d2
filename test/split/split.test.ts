import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { InvalidSplitOptions, splitCases, usableFolds, validationSplit } from "../../src/split/split.ts"

const makeCases = (counts: Record<string, number>) =>
  Object.entries(counts).flatMap(([vendor, count]) =>
    Array.from({ length: count }, (_, index) => ({
      key: `${vendor}/TRAIN${String(index).padStart(3, "0")}`,
      vendor
    }))
  )

describe("splitCases", () => {
  it("takes a quarter of each vendor for test", () => {
    const split = splitCases(makeCases({ Cirrus: 24, Spectralis: 24, Topcon: 22 }), {
      testFraction: 0.25,
      folds: 1,
      seed: 7
    })
    const testVendors = split.test.map((key) => key.split("/")[0])
    expect(testVendors.filter((vendor) => vendor === "Cirrus")).toHaveLength(6)
    expect(testVendors.filter((vendor) => vendor === "Spectralis")).toHaveLength(6)
    expect(testVendors.filter((vendor) => vendor === "Topcon")).toHaveLength(6)
    expect(split.train).toHaveLength(70 - 18)
  })

  it("keeps one test case for three cases", () => {
    const split = splitCases(makeCases({ Spectralis: 3 }), { testFraction: 0.25, folds: 2, seed: 1 })
    expect(split.test).toHaveLength(1)
    expect(split.train).toHaveLength(2)
  })

  it("forces a test case when rounding gives none", () => {
    const split = splitCases(makeCases({ Cirrus: 1, Topcon: 1 }), { testFraction: 0.25, folds: 1, seed: 1 })
    expect(split.test).toHaveLength(1)
  })

  it("is the same for the same seed", () => {
    const cases = makeCases({ Cirrus: 10, Topcon: 9 })
    const a = splitCases(cases, { testFraction: 0.25, folds: 3, seed: 42 })
    const b = splitCases([...cases].reverse(), { testFraction: 0.25, folds: 3, seed: 42 })
    expect(b).toEqual(a)
  })

  it("changes with the seed", () => {
    const cases = makeCases({ Cirrus: 20 })
    const a = splitCases(cases, { testFraction: 0.25, folds: 1, seed: 1 })
    const b = splitCases(cases, { testFraction: 0.25, folds: 1, seed: 2 })
    expect(b.test).not.toEqual(a.test)
  })

  it("rejects a fraction of one", () => {
    expect(() => splitCases(makeCases({ Cirrus: 4 }), { testFraction: 1, folds: 1, seed: 0 })).toThrow(
      InvalidSplitOptions
    )
  })

  it("rejects duplicate keys", () => {
    const cases = [
      { key: "a", vendor: "Cirrus" },
      { key: "a", vendor: "Topcon" }
    ]
    expect(() => splitCases(cases, { testFraction: 0.25, folds: 1, seed: 0 })).toThrow(/unique/)
  })

  it("partitions every case exactly once", () => {
    fc.assert(
      fc.property(
        fc.record({ Cirrus: fc.nat(12), Spectralis: fc.nat(12), Topcon: fc.nat(12) }),
        fc.double({ min: 0, max: 0.9, noNaN: true }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer(),
        (counts, testFraction, folds, seed) => {
          const cases = makeCases(counts)
          const split = splitCases(cases, { testFraction, folds, seed })
          const all = [...split.test, ...split.train].sort()
          expect(all).toEqual(cases.map((item) => item.key).sort())
          expect(split.folds.flat().sort()).toEqual([...split.train].sort())
          for (const key of split.test) expect(split.train).not.toContain(key)
        }
      )
    )
  })
})

describe("validationSplit", () => {
  it("holds out one fold", () => {
    const split = splitCases(makeCases({ Spectralis: 3 }), { testFraction: 0.25, folds: 2, seed: 3 })
    const { fit, validation } = validationSplit(split, 0)
    expect(validation).toHaveLength(1)
    expect(fit).toHaveLength(1)
    expect(fit).not.toContain(validation[0])
  })

  it("holds out the fold it names", () => {
    const split = splitCases(makeCases({ Spectralis: 5 }), { testFraction: 0.2, folds: 4, seed: 3 })
    expect(validationSplit(split, 3).validation).toEqual(split.folds[3])
    expect(validationSplit(split, 3).fit).toEqual(split.train.filter((key) => !split.folds[3]!.includes(key)))
  })

  it.each([
    ["past the last fold", 4],
    ["an empty fold", 2]
  ])("rejects %s", (_name, fold) => {
    const split = splitCases(makeCases({ Spectralis: 3 }), { testFraction: 0.25, folds: 4, seed: 3 })
    expect(usableFolds(split)).toEqual([0, 1])
    expect(() => validationSplit(split, fold)).toThrow(InvalidSplitOptions)
    expect(() => validationSplit(split, fold)).toThrow(/validationFold=\d: expected one of the folds that contain training cases \(0, 1\)/)
  })

  it("holds out nothing for one training case", () => {
    const split = splitCases(makeCases({ Spectralis: 2 }), { testFraction: 0.25, folds: 2, seed: 3 })
    expect(validationSplit(split, 0).validation).toEqual([])
  })
})
