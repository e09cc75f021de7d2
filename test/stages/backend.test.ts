import { availableParallelism } from "node:os"
import { afterEach, describe, expect, it } from "vitest"
import { computeThreads, InvalidThreadsError } from "../../stages/support/backend.ts"

const saved = process.env.OCTFLOW_THREADS

afterEach(() => {
  if (saved === undefined) delete process.env.OCTFLOW_THREADS
  else process.env.OCTFLOW_THREADS = saved
})

describe("computeThreads", () => {
  it("defaults to one per core", () => {
    delete process.env.OCTFLOW_THREADS
    expect(computeThreads()).toBe(availableParallelism())
  })

  it("reads OCTFLOW_THREADS", () => {
    process.env.OCTFLOW_THREADS = "3"
    expect(computeThreads()).toBe(3)
  })

  it("accepts up to 256", () => {
    process.env.OCTFLOW_THREADS = "256"
    expect(computeThreads()).toBe(256)
  })

  for (const value of ["0", "-1", "1.5", "two", " ", "257"]) {
    it(`rejects ${value}`, () => {
      process.env.OCTFLOW_THREADS = value
      expect(() => computeThreads()).toThrow(InvalidThreadsError)
      expect(() => computeThreads()).toThrow(`OCTFLOW_THREADS (or --threads) is "${value}"`)
    })
  }
})
