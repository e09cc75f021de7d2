/**
 * RETOUCH evaluation measures for predicted label volumes against reference volumes.
 *
 * Per volume and per fluid class (IRF, SRF, PED and all fluid together for the RETOUCH
 * scheme, "fluid" alone for the binary scheme):
 * - Dice = 2 |R ∩ P| / (|R| + |P|) over the voxels of labelled B-scans;
 * - absolute volume difference |V(R) - V(P)| in mm^3, where V = voxel count x the product
 *   of the reference's x, y, z spacing in mm;
 * - per-B-scan presence: a B-scan is positive when its reference contains the class. Its
 *   score is the predicted maximum class probability when the caller passes slice scores,
 *   otherwise the predicted voxel count of the class in that B-scan.
 * Detection AUC is the ROC AUC of those scores (Mann-Whitney U with ties counted one
 * half, which equals the trapezoid area under the ROC curve). It is computed per volume
 * and pooled over the B-scans of each vendor and of all volumes. A volume-level AUC (positive
 * when the reference volume contains the class, scored by its maximum B-scan score) is
 * given per vendor and overall. An AUC is null, with the reason, when positives or
 * negatives are missing.
 *
 * Only labelled B-scans are scored: a B-scan whose reference contains the value 255 is
 * left out of every measure.
 */
import * as Data from "effect/Data"
import { type LabelScheme, UNLABELLED } from "../volume/labels.ts"
import type { Volume } from "../volume/volume.ts"

/**
 * Rule for Dice when the reference has none of a class in a volume:
 * - "skip": Dice is null when both reference and prediction are empty, so the volume is
 *   left out of the class's mean Dice. A prediction with the class scores 0.
 * - "one": Dice is 1 when both are empty and 0 when only the prediction has the class.
 * The default is "skip". NOTE: the RETOUCH organisers' own evaluation code was not
 * available to confirm that it handles empty references this way.
 */
export type AbsentClassRule = "skip" | "one"

export const absentClassRules: ReadonlyArray<AbsentClassRule> = ["skip", "one"]

export interface MetricsOptions {
  readonly scheme: LabelScheme
  readonly absentClassRule: AbsentClassRule
}

export const defaultMetricsOptions: MetricsOptions = { scheme: "retouch", absentClassRule: "skip" }

/**
 * Per-B-scan detection scores [slices, classCount] (class fastest). Column c is the
 * maximum predicted probability of class c in the B-scan, and column 0 is the maximum
 * of 1 - p(background), the score of "any fluid".
 */
export interface SliceScores {
  readonly classCount: number
  readonly values: Float32Array
}

export interface VolumeEvaluationInput {
  readonly caseId: string
  readonly vendor: string
  readonly reference: Volume
  readonly prediction: Volume
  readonly scores?: SliceScores
}

export class MetricsShapeMismatchError extends Data.TaggedError("MetricsShapeMismatchError")<{
  readonly caseId: string
  readonly expected: readonly [number, number, number]
  readonly actual: readonly [number, number, number]
}> {
  override get message(): string {
    return (
      `case ${this.caseId}: prediction has dims [${this.actual.join(", ")}] but the reference has ` +
      `[${this.expected.join(", ")}]; predict on the OCT volume this reference belongs to`
    )
  }
}

export class MetricsSpacingMismatchError extends Data.TaggedError("MetricsSpacingMismatchError")<{
  readonly caseId: string
  readonly expected: readonly [number, number, number]
  readonly actual: readonly [number, number, number]
}> {
  override get message(): string {
    return (
      `case ${this.caseId}: prediction spacing [${this.actual.join(", ")}] mm differs from the reference ` +
      `spacing [${this.expected.join(", ")}] mm; write predictions with the input volume's spacing`
    )
  }
}

export class MetricsLabelError extends Data.TaggedError("MetricsLabelError")<{
  readonly caseId: string
  readonly volume: "reference" | "prediction"
  readonly expected: string
  readonly actual: string
}> {
  override get message(): string {
    return (
      `case ${this.caseId}: ${this.volume} labels are invalid: expected ${this.expected}, found ${this.actual}; ` +
      `check the label scheme option and the file passed as ${this.volume}`
    )
  }
}

export class SliceScoresShapeError extends Data.TaggedError("SliceScoresShapeError")<{
  readonly caseId: string
  readonly expected: number
  readonly actual: number
}> {
  override get message(): string {
    return (
      `case ${this.caseId}: slice scores have ${this.actual} values, expected ${this.expected} ` +
      `(B-scans x classes); pass the scores returned by inference on this volume`
    )
  }
}

export interface AucResult {
  /** Null when positives or negatives are missing. */
  readonly value: number | null
  readonly positives: number
  readonly negatives: number
  readonly reason?: string
}

/** Measures of one fluid class in one volume. */
export interface ClassMetrics {
  /** "IRF", "SRF", "PED" or "fluid" (any class > 0). */
  readonly name: string
  /** Label codes that make up the class. */
  readonly codes: ReadonlyArray<number>
  readonly dice: number | null
  readonly referenceVoxels: number
  readonly predictedVoxels: number
  readonly referenceVolumeMm3: number
  readonly predictedVolumeMm3: number
  readonly absoluteVolumeDifferenceMm3: number
  readonly referencePresent: boolean
  /** Maximum B-scan score, the volume's detection score. */
  readonly volumeScore: number
  readonly sliceAuc: AucResult
}

export interface VolumeMetrics {
  readonly caseId: string
  readonly vendor: string
  readonly slices: number
  readonly labelledSlices: number
  readonly voxelVolumeMm3: number
  readonly classes: ReadonlyArray<ClassMetrics>
}

/** Presence of one class in one labelled B-scan, a row of the detection table. */
export interface SlicePresence {
  readonly caseId: string
  readonly vendor: string
  readonly z: number
  readonly className: string
  readonly referencePresent: boolean
  readonly predictedVoxels: number
  readonly score: number
}

export interface VolumeEvaluation {
  readonly metrics: VolumeMetrics
  readonly slices: ReadonlyArray<SlicePresence>
}

/** Means and pooled AUCs of one class over a group of volumes. */
export interface GroupClassMetrics {
  readonly name: string
  /** Mean over volumes whose Dice is not null. */
  readonly meanDice: number | null
  readonly diceCount: number
  readonly meanAbsoluteVolumeDifferenceMm3: number | null
  readonly sliceAuc: AucResult
  readonly volumeAuc: AucResult
}

export interface GroupMetrics {
  /** A vendor name, or "all". */
  readonly group: string
  readonly volumes: number
  readonly classes: ReadonlyArray<GroupClassMetrics>
}

export interface MetricsReport {
  readonly scheme: LabelScheme
  readonly absentClassRule: AbsentClassRule
  /** "probability" when every volume had slice scores, "area" when none had, else "mixed". */
  readonly scoreSource: "probability" | "area" | "mixed"
  readonly volumes: ReadonlyArray<VolumeMetrics>
  readonly vendors: ReadonlyArray<GroupMetrics>
  readonly overall: GroupMetrics
  readonly slices: ReadonlyArray<SlicePresence>
}

interface ClassDefinition {
  readonly name: string
  readonly codes: ReadonlyArray<number>
  /** Column of the slice scores. */
  readonly scoreColumn: number
}

/** Classes scored per scheme; "fluid" merges every code > 0. */
export const scoredClasses = (scheme: LabelScheme): ReadonlyArray<ClassDefinition> =>
  scheme === "retouch"
    ? [
        { name: "IRF", codes: [1], scoreColumn: 1 },
        { name: "SRF", codes: [2], scoreColumn: 2 },
        { name: "PED", codes: [3], scoreColumn: 3 },
        { name: "fluid", codes: [1, 2, 3], scoreColumn: 0 }
      ]
    : [{ name: "fluid", codes: [1], scoreColumn: 0 }]

/**
 * Computes the ROC AUC of `scores` for binary `positive` labels by the Mann-Whitney rule:
 * (sum of the positives' mid-ranks - P (P + 1) / 2) / (P N), so tied scores count one half.
 */
export const rocAuc = (positive: ReadonlyArray<boolean>, scores: ArrayLike<number>): AucResult => {
  const count = positive.length
  const positives = positive.filter(Boolean).length
  const negatives = count - positives
  if (positives === 0 || negatives === 0) {
    const reason =
      count === 0
        ? "no labelled B-scans or volumes to score"
        : positives === 0
          ? "the reference contains no positive, so detection cannot be ranked"
          : "the reference contains no negative, so detection cannot be ranked"
    return { value: null, positives, negatives, reason }
  }

  const order = Array.from({ length: count }, (_, i) => i).sort((a, b) => scores[a] - scores[b])
  let positiveRankSum = 0
  for (let start = 0; start < count; ) {
    let end = start
    while (end + 1 < count && scores[order[end + 1]] === scores[order[start]]) end += 1
    // Ranks are 1-based; every member of a tie group gets the group's mid-rank.
    const midRank = (start + end) / 2 + 1
    for (let i = start; i <= end; i++) if (positive[order[i]]) positiveRankSum += midRank
    start = end + 1
  }
  const value = (positiveRankSum - (positives * (positives + 1)) / 2) / (positives * negatives)
  return { value, positives, negatives }
}

const sameSpacing = (a: readonly number[], b: readonly number[]): boolean =>
  a.every((value, axis) => Math.abs(value - b[axis]) <= 1e-6 * Math.max(Math.abs(value), Math.abs(b[axis])))

const validateInput = (input: VolumeEvaluationInput, options: MetricsOptions): void => {
  const { caseId, reference, prediction } = input
  for (const [name, volume] of [["reference", reference], ["prediction", prediction]] as const) {
    if (volume.dtype !== "uint8") {
      throw new MetricsLabelError({ caseId, volume: name, expected: "element type uint8", actual: volume.dtype })
    }
  }
  if (prediction.dims.some((size, axis) => size !== reference.dims[axis])) {
    throw new MetricsShapeMismatchError({ caseId, expected: reference.dims, actual: prediction.dims })
  }
  if (!sameSpacing(reference.spacingMm, prediction.spacingMm)) {
    throw new MetricsSpacingMismatchError({ caseId, expected: reference.spacingMm, actual: prediction.spacingMm })
  }

  const maxCode = options.scheme === "retouch" ? 3 : 1
  const referenceData = reference.data
  const predictionData = prediction.data
  for (let i = 0; i < predictionData.length; i++) {
    if (predictionData[i] > maxCode) {
      throw new MetricsLabelError({
        caseId,
        volume: "prediction",
        expected: `codes 0..${maxCode} (${options.scheme} scheme)`,
        actual: `${predictionData[i]} at voxel ${i}`
      })
    }
    const value = referenceData[i]
    if (value > maxCode && value !== UNLABELLED) {
      throw new MetricsLabelError({
        caseId,
        volume: "reference",
        expected: `codes 0..${maxCode} or ${UNLABELLED} for an unlabelled B-scan (${options.scheme} scheme)`,
        actual: `${value} at voxel ${i}`
      })
    }
  }

  const depth = reference.dims[2]
  if (input.scores !== undefined && input.scores.values.length !== depth * input.scores.classCount) {
    throw new SliceScoresShapeError({ caseId, expected: depth * input.scores.classCount, actual: input.scores.values.length })
  }
  if (input.scores !== undefined && input.scores.classCount < (options.scheme === "retouch" ? 4 : 2)) {
    throw new SliceScoresShapeError({
      caseId,
      expected: depth * (options.scheme === "retouch" ? 4 : 2),
      actual: input.scores.values.length
    })
  }
}

/** Counts, per labelled B-scan, reference, predicted and overlapping voxels of each label code. */
interface SliceCounts {
  readonly labelled: boolean
  /** [code] for codes 0..3. */
  readonly reference: Float64Array
  readonly predicted: Float64Array
  readonly overlap: Float64Array
  /** Voxels where both are fluid (> 0), whatever the class. */
  fluidOverlap: number
}

const countSlices = (reference: Volume, prediction: Volume): Array<SliceCounts> => {
  const [width, height, depth] = reference.dims
  const sliceSize = width * height
  const slices: Array<SliceCounts> = []
  for (let z = 0; z < depth; z++) {
    const counts = {
      labelled: true,
      reference: new Float64Array(4),
      predicted: new Float64Array(4),
      overlap: new Float64Array(4),
      fluidOverlap: 0
    }
    for (let i = z * sliceSize; i < (z + 1) * sliceSize; i++) {
      const truth = reference.data[i]
      if (truth === UNLABELLED) {
        counts.labelled = false
        break
      }
      const guess = prediction.data[i]
      counts.reference[truth] += 1
      counts.predicted[guess] += 1
      if (truth === guess) counts.overlap[truth] += 1
      if (truth > 0 && guess > 0) counts.fluidOverlap += 1
    }
    slices.push(counts)
  }
  return slices
}

const diceOf = (overlap: number, reference: number, predicted: number, rule: AbsentClassRule): number | null => {
  if (reference + predicted === 0) return rule === "one" ? 1 : null
  return (2 * overlap) / (reference + predicted)
}

/** Scores one volume: per-class Dice, volume difference, presence per B-scan and its AUC. */
export const evaluateVolume = (
  input: VolumeEvaluationInput,
  overrides: Partial<MetricsOptions> = {}
): VolumeEvaluation => {
  const options = { ...defaultMetricsOptions, ...overrides }
  validateInput(input, options)
  const { caseId, vendor, reference, prediction, scores } = input
  const voxelVolumeMm3 = reference.spacingMm[0] * reference.spacingMm[1] * reference.spacingMm[2]
  const sliceCounts = countSlices(reference, prediction)
  const presenceRows: Array<SlicePresence> = []

  const classes = scoredClasses(options.scheme).map((definition): ClassMetrics => {
    const sum = (values: Float64Array) => definition.codes.reduce((total, code) => total + values[code], 0)
    let referenceVoxels = 0
    let predictedVoxels = 0
    let overlapVoxels = 0
    const present: Array<boolean> = []
    const sliceScores: Array<number> = []

    sliceCounts.forEach((counts, z) => {
      if (!counts.labelled) return
      const referenceInSlice = sum(counts.reference)
      const predictedInSlice = sum(counts.predicted)
      referenceVoxels += referenceInSlice
      predictedVoxels += predictedInSlice
      overlapVoxels += definition.codes.length === 1 ? counts.overlap[definition.codes[0]] : counts.fluidOverlap
      const score = scores === undefined ? predictedInSlice : scores.values[z * scores.classCount + definition.scoreColumn]
      present.push(referenceInSlice > 0)
      sliceScores.push(score)
      presenceRows.push({
        caseId,
        vendor,
        z,
        className: definition.name,
        referencePresent: referenceInSlice > 0,
        predictedVoxels: predictedInSlice,
        score
      })
    })

    const referenceVolumeMm3 = referenceVoxels * voxelVolumeMm3
    const predictedVolumeMm3 = predictedVoxels * voxelVolumeMm3
    return {
      name: definition.name,
      codes: definition.codes,
      dice: diceOf(overlapVoxels, referenceVoxels, predictedVoxels, options.absentClassRule),
      referenceVoxels,
      predictedVoxels,
      referenceVolumeMm3,
      predictedVolumeMm3,
      absoluteVolumeDifferenceMm3: Math.abs(referenceVolumeMm3 - predictedVolumeMm3),
      referencePresent: referenceVoxels > 0,
      volumeScore: sliceScores.length === 0 ? 0 : Math.max(...sliceScores),
      sliceAuc: rocAuc(present, sliceScores)
    }
  })

  const metrics: VolumeMetrics = {
    caseId,
    vendor,
    slices: reference.dims[2],
    labelledSlices: sliceCounts.filter((counts) => counts.labelled).length,
    voxelVolumeMm3,
    classes
  }
  return { metrics, slices: presenceRows }
}

const mean = (values: ReadonlyArray<number>): number | null =>
  values.length === 0 ? null : values.reduce((total, value) => total + value, 0) / values.length

const summarizeGroup = (
  group: string,
  evaluations: ReadonlyArray<VolumeEvaluation>,
  scheme: LabelScheme
): GroupMetrics => {
  const classes = scoredClasses(scheme).map((definition): GroupClassMetrics => {
    const perVolume = evaluations.map(
      (evaluation) => evaluation.metrics.classes.find((metrics) => metrics.name === definition.name)!
    )
    const dices = perVolume.flatMap((metrics) => (metrics.dice === null ? [] : [metrics.dice]))
    const rows = evaluations.flatMap((evaluation) => evaluation.slices.filter((row) => row.className === definition.name))
    return {
      name: definition.name,
      meanDice: mean(dices),
      diceCount: dices.length,
      meanAbsoluteVolumeDifferenceMm3: mean(perVolume.map((metrics) => metrics.absoluteVolumeDifferenceMm3)),
      sliceAuc: rocAuc(
        rows.map((row) => row.referencePresent),
        rows.map((row) => row.score)
      ),
      volumeAuc: rocAuc(
        perVolume.map((metrics) => metrics.referencePresent),
        perVolume.map((metrics) => metrics.volumeScore)
      )
    }
  })
  return { group, volumes: evaluations.length, classes }
}

/** Scores every volume and adds means per vendor (in name order) and over all volumes. */
export const evaluateVolumes = (
  inputs: ReadonlyArray<VolumeEvaluationInput>,
  overrides: Partial<MetricsOptions> = {}
): MetricsReport => {
  const options = { ...defaultMetricsOptions, ...overrides }
  const evaluations = inputs.map((input) => evaluateVolume(input, options))
  const vendorNames = [...new Set(inputs.map((input) => input.vendor))].sort()
  const withScores = inputs.filter((input) => input.scores !== undefined).length
  let scoreSource: MetricsReport["scoreSource"] = "mixed"
  if (withScores === inputs.length) scoreSource = "probability"
  else if (withScores === 0) scoreSource = "area"
  return {
    scheme: options.scheme,
    absentClassRule: options.absentClassRule,
    scoreSource,
    volumes: evaluations.map((evaluation) => evaluation.metrics),
    vendors: vendorNames.map((vendor) =>
      summarizeGroup(
        vendor,
        evaluations.filter((evaluation) => evaluation.metrics.vendor === vendor),
        options.scheme
      )
    ),
    overall: summarizeGroup("all", evaluations, options.scheme),
    slices: evaluations.flatMap((evaluation) => evaluation.slices)
  }
}

/** One volume and class, a row of the per-volume table. */
export interface VolumeClassRow {
  readonly caseId: string
  readonly vendor: string
  readonly className: string
  readonly dice: number | null
  readonly referenceVolumeMm3: number
  readonly predictedVolumeMm3: number
  readonly absoluteVolumeDifferenceMm3: number
  readonly referencePresent: boolean
  readonly volumeScore: number
  readonly sliceAuc: number | null
  readonly sliceAucReason: string | null
}

/** One group (vendor or "all") and class, a row of the summary table. */
export interface GroupClassRow {
  readonly group: string
  readonly className: string
  readonly volumes: number
  readonly meanDice: number | null
  readonly diceCount: number
  readonly meanAbsoluteVolumeDifferenceMm3: number | null
  readonly sliceAuc: number | null
  readonly sliceAucReason: string | null
  readonly volumeAuc: number | null
  readonly volumeAucReason: string | null
}

export interface MetricsTables {
  readonly volumeClasses: ReadonlyArray<VolumeClassRow>
  readonly groupClasses: ReadonlyArray<GroupClassRow>
  readonly slices: ReadonlyArray<SlicePresence>
}

/** Flattens a report into rows of scalars (null for undefined values), ready for a SQL table. */
export const metricsTables = (report: MetricsReport): MetricsTables => {
  const volumeClasses = report.volumes.flatMap((volume) =>
    volume.classes.map(
      (metrics): VolumeClassRow => ({
        caseId: volume.caseId,
        vendor: volume.vendor,
        className: metrics.name,
        dice: metrics.dice,
        referenceVolumeMm3: metrics.referenceVolumeMm3,
        predictedVolumeMm3: metrics.predictedVolumeMm3,
        absoluteVolumeDifferenceMm3: metrics.absoluteVolumeDifferenceMm3,
        referencePresent: metrics.referencePresent,
        volumeScore: metrics.volumeScore,
        sliceAuc: metrics.sliceAuc.value,
        sliceAucReason: metrics.sliceAuc.reason ?? null
      })
    )
  )
  const groupClasses = [...report.vendors, report.overall].flatMap((group) =>
    group.classes.map(
      (metrics): GroupClassRow => ({
        group: group.group,
        className: metrics.name,
        volumes: group.volumes,
        meanDice: metrics.meanDice,
        diceCount: metrics.diceCount,
        meanAbsoluteVolumeDifferenceMm3: metrics.meanAbsoluteVolumeDifferenceMm3,
        sliceAuc: metrics.sliceAuc.value,
        sliceAucReason: metrics.sliceAuc.reason ?? null,
        volumeAuc: metrics.volumeAuc.value,
        volumeAucReason: metrics.volumeAuc.reason ?? null
      })
    )
  )
  return { volumeClasses, groupClasses, slices: report.slices }
}
