import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DuckDBInstance } from "@duckdb/node-api"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { evaluateVolumes, metricsTables } from "../../src/eval/metrics.ts"
import type { Volume } from "../../src/volume/volume.ts"

const volumeOf = (values: ReadonlyArray<number>): Volume => ({
  dims: [2, 2, values.length / 4],
  spacingMm: [0.5, 0.1, 2],
  dtype: "uint8",
  data: Uint8Array.from(values)
})

const report = evaluateVolumes([
  { caseId: "a", vendor: "Cirrus", reference: volumeOf([1, 0, 0, 0, 0, 0, 0, 0]), prediction: volumeOf([1, 0, 0, 0, 0, 0, 0, 0]) },
  { caseId: "b", vendor: "Topcon", reference: volumeOf([2, 2, 0, 0, 0, 0, 0, 0]), prediction: volumeOf([2, 0, 0, 0, 0, 0, 0, 0]) }
])
const tables = metricsTables(report)

describe("metricsTables", () => {
  it("one row per volume and class", () => {
    expect(tables.volumeClasses.length).toBe(8)
  })

  it("groups are vendors then all", () => {
    expect([...new Set(tables.groupClasses.map((row) => row.group))]).toEqual(["Cirrus", "Topcon", "all"])
  })

  it("null AUC carries its reason", () => {
    const row = tables.volumeClasses.find((entry) => entry.caseId === "a" && entry.className === "PED")!
    expect(row.sliceAuc).toBeNull()
    expect(row.sliceAucReason).toMatch(/no positive/)
  })
})

describe("metricsTables in DuckDB", () => {
  let dir = ""
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "octflow-metrics-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("rows insert and read back", async () => {
    const instance = await DuckDBInstance.create(join(dir, "metrics.duckdb"))
    const connection = await instance.connect()
    try {
      await connection.run(
        "CREATE TABLE volume_metrics (case_id VARCHAR, vendor VARCHAR, class VARCHAR, dice DOUBLE, avd_mm3 DOUBLE, slice_auc DOUBLE)"
      )
      for (const row of tables.volumeClasses) {
        await connection.run("INSERT INTO volume_metrics VALUES ($1, $2, $3, $4, $5, $6)", [
          row.caseId,
          row.vendor,
          row.className,
          row.dice,
          row.absoluteVolumeDifferenceMm3,
          row.sliceAuc
        ])
      }
      const reader = await connection.runAndReadAll(
        "SELECT vendor, avg(dice) AS mean_dice, count(dice) AS scored FROM volume_metrics WHERE class = 'fluid' GROUP BY vendor ORDER BY vendor"
      )
      const rows = reader.getRowObjects()
      expect(rows.map((row) => row.vendor)).toEqual(["Cirrus", "Topcon"])
      expect(rows.map((row) => row.mean_dice)).toEqual([1, 2 / 3])
    } finally {
      connection.closeSync()
      instance.closeSync()
    }
  })
})
