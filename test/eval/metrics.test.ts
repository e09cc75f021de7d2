import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  evaluateVolume,
  evaluateVolumes,
  MetricsLabelError,
  MetricsShapeMismatchError,
  MetricsSpacingMismatchError,
  rocAuc,
  SliceScoresShapeError,
  type VolumeEvaluationInput
} from "../../src/eval/metrics.ts"
import type { Volume } from "../../src/volume/volume.ts"

/** A 2 x 2 x slices uint8 volume; each voxel is 0.5 x 0.1 x 2 mm = 0.1 mm^3. */
const volumeOf = (values: ReadonlyArray<number>, spacingMm: readonly [number, number, number] = [0.5, 0.1, 2]): Volume => ({
  dims: [2, 2, values.length / 4],
  spacingMm,
  dtype: "uint8",
  data: Uint8Array.from(values)
})

const input = (reference: ReadonlyArray<number>, prediction: ReadonlyArray<number>, vendor = "Cirrus", caseId = "c1"): VolumeEvaluationInput => ({
  caseId,
  vendor,
  reference: volumeOf(reference),
  prediction: volumeOf(prediction)
})

const classOf = (evaluation: ReturnType<typeof evaluateVolume>, name: string) =>
  evaluation.metrics.classes.find((metrics) => metrics.name === name)!

describe("rocAuc", () => {
  const cases = [
    ["separated", [true, true, false, false], [0.9, 0.8, 0.1, 0.2], 1],
    ["one pair swapped", [true, true, false, false], [0.9, 0.8, 0.7, 0.85], 0.75],
    ["all tied", [true, false], [0.5, 0.5], 0.5],
    ["partial tie", [true, true, false, false], [1, 0.5, 0.5, 0], 0.875],
    ["inverted", [true, false], [0, 1], 0]
  ] as const
  it.each(cases)("%s", (_name, positive, scores, expected) => {
    expect(rocAuc(positive, scores).value).toBeCloseTo(expected, 12)
  })

  it("only positives is null", () => {
    const result = rocAuc([true, true], [0.1, 0.2])
    expect(result.value).toBeNull()
    expect(result.reason).toMatch(/no negative/)
  })

  it("only negatives is null", () => {
    expect(rocAuc([false], [0.1]).reason).toMatch(/no positive/)
  })

  it("equals the pairwise count", () => {
    const sample = fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 5 })), { minLength: 1, maxLength: 30 })
    fc.assert(
      fc.property(sample, (pairs) => {
        const positive = pairs.map(([label]) => label)
        const scores = pairs.map(([, score]) => score)
        let wins = 0
        let total = 0
        for (const [labelA, scoreA] of pairs) {
          for (const [labelB, scoreB] of pairs) {
            if (!labelA || labelB) continue
            total += 1
            if (scoreA > scoreB) wins += 1
            else if (scoreA === scoreB) wins += 0.5
          }
        }
        const result = rocAuc(positive, scores)
        return total === 0 ? result.value === null : Math.abs(result.value! - wins / total) < 1e-12
      })
    )
  })
})

describe("evaluateVolume", () => {
  // Slice 0: reference IRF IRF 0 0, prediction IRF 0 0 0.
  // Slice 1: reference SRF 0 0 0, prediction 0 0 0 PED.
  const evaluation = evaluateVolume(input([1, 1, 0, 0, 2, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 3]))

  it("IRF Dice", () => {
    expect(classOf(evaluation, "IRF").dice).toBeCloseTo(2 / 3, 12)
  })

  it("SRF missed gives Dice 0", () => {
    expect(classOf(evaluation, "SRF").dice).toBe(0)
  })

  it("PED false positive gives Dice 0", () => {
    expect(classOf(evaluation, "PED").dice).toBe(0)
  })

  it("merged fluid Dice", () => {
    expect(classOf(evaluation, "fluid").dice).toBeCloseTo(2 / 5, 12)
  })

  it("voxel volume from spacing", () => {
    expect(evaluation.metrics.voxelVolumeMm3).toBeCloseTo(0.1, 12)
  })

  it("IRF volume difference", () => {
    expect(classOf(evaluation, "IRF").absoluteVolumeDifferenceMm3).toBeCloseTo(0.1, 12)
  })

  it("fluid volume difference", () => {
    expect(classOf(evaluation, "fluid").referenceVolumeMm3).toBeCloseTo(0.3, 12)
    expect(classOf(evaluation, "fluid").predictedVolumeMm3).toBeCloseTo(0.2, 12)
    expect(classOf(evaluation, "fluid").absoluteVolumeDifferenceMm3).toBeCloseTo(0.1, 12)
  })

  it("presence rows per slice", () => {
    const irf = evaluation.slices.filter((row) => row.className === "IRF")
    expect(irf.map((row) => row.referencePresent)).toEqual([true, false])
    expect(irf.map((row) => row.score)).toEqual([1, 0])
  })

  it("slice AUC from areas", () => {
    expect(classOf(evaluation, "IRF").sliceAuc.value).toBe(1)
  })

  it("slice AUC null for absent class", () => {
    expect(classOf(evaluation, "PED").sliceAuc.value).toBeNull()
  })

  it("slice scores replace areas", () => {
    // Columns: any fluid, IRF, SRF, PED.
    const scores = { classCount: 4, values: Float32Array.of(0.9, 0.2, 0.1, 0.1, 0.8, 0.6, 0.7, 0.9) }
    const scored = evaluateVolume({ ...input([1, 1, 0, 0, 2, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 3]), scores })
    expect(classOf(scored, "IRF").sliceAuc.value).toBe(0)
    expect(classOf(scored, "IRF").volumeScore).toBeCloseTo(0.6, 6)
  })
})

describe("absent class rule", () => {
  const empty = [0, 0, 0, 0]

  it("skip gives null when both empty", () => {
    const evaluation = evaluateVolume(input(empty, empty), { absentClassRule: "skip" })
    expect(classOf(evaluation, "IRF").dice).toBeNull()
  })

  it("one gives 1 when both empty", () => {
    const evaluation = evaluateVolume(input(empty, empty), { absentClassRule: "one" })
    expect(classOf(evaluation, "IRF").dice).toBe(1)
  })

  it.each(["skip", "one"] as const)("%s gives 0 for a false positive", (rule) => {
    const evaluation = evaluateVolume(input(empty, [1, 0, 0, 0]), { absentClassRule: rule })
    expect(classOf(evaluation, "IRF").dice).toBe(0)
  })
})

describe("unlabelled slices", () => {
  // Slice 1 has no reference; its predictions would otherwise halve the IRF Dice.
  const evaluation = evaluateVolume(input([1, 0, 0, 0, 255, 255, 255, 255], [1, 0, 0, 0, 1, 1, 1, 1]))

  it("are not counted as labelled", () => {
    expect(evaluation.metrics.labelledSlices).toBe(1)
  })

  it("leave Dice unchanged", () => {
    expect(classOf(evaluation, "IRF").dice).toBe(1)
  })

  it("leave volumes unchanged", () => {
    expect(classOf(evaluation, "IRF").predictedVoxels).toBe(1)
  })

  it("have no presence rows", () => {
    expect(evaluation.slices.every((row) => row.z === 0)).toBe(true)
  })
})

describe("binary scheme", () => {
  const evaluation = evaluateVolume(input([1, 1, 0, 0], [1, 0, 0, 0]), { scheme: "binary" })

  it("scores fluid only", () => {
    expect(evaluation.metrics.classes.map((metrics) => metrics.name)).toEqual(["fluid"])
  })

  it("fluid Dice", () => {
    expect(classOf(evaluation, "fluid").dice).toBeCloseTo(2 / 3, 12)
  })

  it("RETOUCH codes are rejected", () => {
    expect(() => evaluateVolume(input([2, 0, 0, 0], [0, 0, 0, 0]), { scheme: "binary" })).toThrow(MetricsLabelError)
  })
})

describe("evaluateVolumes", () => {
  const report = evaluateVolumes([
    input([1, 0, 0, 0], [1, 0, 0, 0], "Cirrus", "a"),
    input([1, 1, 0, 0], [1, 0, 0, 0], "Cirrus", "b"),
    input([0, 0, 0, 0], [0, 0, 0, 0], "Topcon", "c"),
    input([0, 0, 0, 0], [1, 0, 0, 0], "Topcon", "d")
  ])
  const group = (name: string) => (name === "all" ? report.overall : report.vendors.find((vendor) => vendor.group === name)!)
  const irfOf = (name: string) => group(name).classes.find((metrics) => metrics.name === "IRF")!

  it("vendors in name order", () => {
    expect(report.vendors.map((vendor) => vendor.group)).toEqual(["Cirrus", "Topcon"])
  })

  it("vendor mean Dice", () => {
    expect(irfOf("Cirrus").meanDice).toBeCloseTo((1 + 2 / 3) / 2, 12)
  })

  it("skipped Dice left out of the mean", () => {
    expect(irfOf("Topcon").diceCount).toBe(1)
    expect(irfOf("Topcon").meanDice).toBe(0)
  })

  it("overall mean Dice", () => {
    expect(irfOf("all").meanDice).toBeCloseTo((1 + 2 / 3 + 0) / 3, 12)
  })

  it("mean volume difference", () => {
    expect(irfOf("Cirrus").meanAbsoluteVolumeDifferenceMm3).toBeCloseTo(0.05, 12)
  })

  it("volume AUC", () => {
    // Positives a, b score 1; negatives c (0) and d (1): wins 1 + 0.5 per positive.
    expect(irfOf("all").volumeAuc.value).toBeCloseTo(0.75, 12)
  })

  it("pooled slice AUC null within a vendor", () => {
    expect(irfOf("Cirrus").sliceAuc.value).toBeNull()
  })

  it("score source is area", () => {
    expect(report.scoreSource).toBe("area")
  })

  it("report survives JSON", () => {
    expect(JSON.parse(JSON.stringify(report)).overall.volumes).toBe(4)
  })
})

describe("evaluateVolume input checks", () => {
  it("dims mismatch is rejected", () => {
    const bad = { ...input([0, 0, 0, 0], [0, 0, 0, 0]), prediction: volumeOf([0, 0, 0, 0, 0, 0, 0, 0]) }
    expect(() => evaluateVolume(bad)).toThrow(MetricsShapeMismatchError)
  })

  it("spacing mismatch is rejected", () => {
    const bad = { ...input([0, 0, 0, 0], [0, 0, 0, 0]), prediction: volumeOf([0, 0, 0, 0], [1, 1, 1]) }
    expect(() => evaluateVolume(bad)).toThrow(MetricsSpacingMismatchError)
  })

  it("prediction code 255 is rejected", () => {
    expect(() => evaluateVolume(input([0, 0, 0, 0], [255, 0, 0, 0]))).toThrow(/prediction labels are invalid/)
  })

  it("reference code 7 is rejected", () => {
    expect(() => evaluateVolume(input([7, 0, 0, 0], [0, 0, 0, 0]))).toThrow(/reference labels are invalid/)
  })

  it("score length is checked", () => {
    const bad = { ...input([0, 0, 0, 0], [0, 0, 0, 0]), scores: { classCount: 4, values: new Float32Array(3) } }
    expect(() => evaluateVolume(bad)).toThrow(SliceScoresShapeError)
  })
})
