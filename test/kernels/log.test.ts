import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { logRoundedToNearest } from "../../src/kernels/log.ts"

/** Distance in units in the last place between two positive or two negative doubles. */
const ulpDistance = (a: number, b: number): number => {
  const view = new DataView(new ArrayBuffer(16))
  view.setFloat64(0, a)
  view.setFloat64(8, b)
  return Number(view.getBigInt64(0) - view.getBigInt64(8))
}

describe("logRoundedToNearest", () => {
  it.each([
    [1, 0],
    [2, Math.LN2],
    [0.5, -Math.LN2],
    [10, Math.LN10],
    // ln of the double nearest 89 / 106 is -0.1748027243799272628..., and Math.log rounds it away from zero.
    [89 / 106, -0.17480272437992725]
  ])("computes log(%f)", (x, expected) => {
    expect(logRoundedToNearest(x)).toBe(expected)
  })

  it.each([
    [0, -Infinity],
    [-1, NaN],
    [Infinity, Infinity]
  ])("follows Math.log at %f", (x, expected) => {
    expect(logRoundedToNearest(x)).toBe(expected)
  })

  it("stays within one ulp of Math.log", () => {
    fc.assert(
      fc.property(fc.double({ min: 1e-300, max: 1e300, noNaN: true }), (x) => {
        fc.pre(Math.abs(Math.log(x)) > 1e-300)
        expect(Math.abs(ulpDistance(logRoundedToNearest(x), Math.log(x)))).toBeLessThanOrEqual(1)
      }),
      { numRuns: 2000 }
    )
  })

  it("handles subnormal input", () => {
    expect(Math.abs(ulpDistance(logRoundedToNearest(5e-324), Math.log(5e-324)))).toBeLessThanOrEqual(1)
  })
})
