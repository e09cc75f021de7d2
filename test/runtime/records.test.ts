import { describe, expect, it } from "vitest"
import type { PlanTask } from "../../src/runtime/plan.ts"
import { checkEmitted } from "../../src/runtime/records.ts"

const task = { key: "s\u0000a", stage: "preprocess", item: "a", node: null, deps: [] } as unknown as PlanTask

const slice = { image: "a#0", vendor: "Cirrus", root: "a", slice: 0, irf: 1, srf: 0, ped: 0, labelled: true }

describe("checkEmitted", () => {
  it("accepts null counts of unlabelled slices", () => {
    const rows = checkEmitted(task, [{ table: "slices", rows: [{ ...slice, irf: null, srf: null, ped: null, labelled: false }] }])
    expect(rows.get("slices")!.length).toBe(1)
  })

  it("accepts split rows", () => {
    const rows = checkEmitted(task, [{ table: "splits", rows: [{ vendor: "Topcon", side: "test", fold: null }] }])
    expect(rows.get("splits")![0]!.side).toBe("test")
  })

  it("rejects an unknown table", () => {
    expect(() => checkEmitted(task, [{ table: "volumes", rows: [] }])).toThrow(/table "volumes"; use one of "metrics", "slices", "splits"/)
  })

  it.each([
    ["string value", "metrics", { name: "dice", value: "0.5" }, /column "value" must be number/],
    ["NaN value", "metrics", { name: "dice", value: Number.NaN }, /column "value" must be number/],
    ["missing image", "slices", { ...slice, image: undefined }, /column "image" must be string/],
    ["text label flag", "slices", { ...slice, labelled: "yes" }, /column "labelled" must be boolean/]
  ])("rejects %s", (_, table, row, message) => {
    expect(() => checkEmitted(task, [{ table, rows: [row] }])).toThrow(message)
  })
})
