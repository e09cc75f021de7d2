import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { evaluateVolumes } from "../../src/eval/metrics.ts"

interface ReferenceClass {
  readonly dice: number | null
  readonly absoluteVolumeDifferenceMm3: number
  readonly sliceAuc: number | null
}

interface ReferenceFile {
  readonly dims: [number, number, number]
  readonly spacingMm: [number, number, number]
  readonly volumes: ReadonlyArray<{
    readonly caseId: string
    readonly vendor: string
    readonly reference: ReadonlyArray<number>
    readonly prediction: ReadonlyArray<number>
    readonly classes: Readonly<Record<string, ReferenceClass>>
  }>
  readonly overall: Readonly<Record<string, { meanDice: number; sliceAuc: number | null; volumeAuc: number | null }>>
}

// Made by metrics_reference.py in the fixtures folder, with numpy and scipy.
const fixture: ReferenceFile = JSON.parse(
  readFileSync(fileURLToPath(new URL("./fixtures/metrics_reference.json", import.meta.url)), "utf8")
)

const volumeOf = (values: ReadonlyArray<number>) => ({
  dims: fixture.dims,
  spacingMm: fixture.spacingMm,
  dtype: "uint8" as const,
  data: Uint8Array.from(values)
})

const report = evaluateVolumes(
  fixture.volumes.map((volume) => ({
    caseId: volume.caseId,
    vendor: volume.vendor,
    reference: volumeOf(volume.reference),
    prediction: volumeOf(volume.prediction)
  }))
)

const closeOrNull = (actual: number | null, expected: number | null): void => {
  if (expected === null) expect(actual).toBeNull()
  else expect(actual).toBeCloseTo(expected, 10)
}

describe("metrics against numpy and scipy", () => {
  const rows = fixture.volumes.flatMap((volume, index) =>
    Object.entries(volume.classes).map(([name, expected]) => ({ caseId: volume.caseId, index, name, expected }))
  )

  it.each(rows)("$caseId $name Dice", ({ index, name, expected }) => {
    closeOrNull(report.volumes[index].classes.find((metrics) => metrics.name === name)!.dice, expected.dice)
  })

  it.each(rows)("$caseId $name volume difference", ({ index, name, expected }) => {
    const actual = report.volumes[index].classes.find((metrics) => metrics.name === name)!
    expect(actual.absoluteVolumeDifferenceMm3).toBeCloseTo(expected.absoluteVolumeDifferenceMm3, 10)
  })

  it.each(rows)("$caseId $name slice AUC", ({ index, name, expected }) => {
    closeOrNull(report.volumes[index].classes.find((metrics) => metrics.name === name)!.sliceAuc.value, expected.sliceAuc)
  })

  it.each(Object.entries(fixture.overall))("overall %s", (name, expected) => {
    const actual = report.overall.classes.find((metrics) => metrics.name === name)!
    closeOrNull(actual.meanDice, expected.meanDice)
    closeOrNull(actual.sliceAuc.value, expected.sliceAuc)
    closeOrNull(actual.volumeAuc.value, expected.volumeAuc)
  })
})
