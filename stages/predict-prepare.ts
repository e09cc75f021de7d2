/**
 * prepare (per scan): preprocesses a new scan exactly as the model's training cases were
 * (src/kernels/preprocess.ts): intensities to 0..255, and for Cirrus and Topcon, histogram
 * matching to the Spectralis reference histogram of the training run, the z-median for
 * the training run's `zMedianVendors`, and the 3x3 median. The reference histogram and
 * `zMedianVendors` come from a preprocess info artifact of the training run.
 *
 * Writes the uint8 volume, the label volume (the scan's reference, or 255 everywhere when
 * it has none) and a JSON summary.
 */
import { readFile, writeFile } from "node:fs/promises"
import { Data, Effect, Schema } from "effect"
import { preprocessVolume } from "../src/kernels/preprocess.ts"
import * as Stage from "../src/runtime/stage.ts"
import { loadCase, type Vendor, vendorGeometry } from "../src/volume/dataset.ts"
import { summarizeSlices, UNLABELLED } from "../src/volume/labels.ts"
import { writeMetaImage } from "../src/volume/metaimage.ts"
import { makeVolume, type Volume } from "../src/volume/volume.ts"
import type { CaseInfo } from "./preprocess.ts"
import { caseOfScan, resolveScanVendor, type ScanMeta, type VendorSource } from "./predict-scan.ts"
import { attempt, attemptPromise } from "./support/effect.ts"

/** The training run's preprocess info lacks what matching this scan needs. */
export class TrainingPreprocessError extends Data.TaggedError("TrainingPreprocessError")<{
  readonly path: string
  readonly field: string
  readonly reason: string
  readonly fix: string
}> {
  override get message(): string {
    return `training preprocess info ${this.path}: ${this.field} ${this.reason}; ${this.fix}`
  }
}

/** The scan's element type or B-scan height does not fit its vendor's scanner. */
export class ScanGeometryError extends Data.TaggedError("ScanGeometryError")<{
  readonly path: string
  readonly vendor: Vendor
  readonly actual: string
  readonly expected: string
}> {
  override get message(): string {
    return (
      `scan ${this.path}: ${this.actual} does not fit ${this.vendor} (${this.expected}); pass the right --vendor, ` +
      "or --skip-geometry-check to preprocess it as it is"
    )
  }
}

export const PrepareParams = Schema.Struct({
  /** Cirrus, Spectralis or Topcon; "auto" takes the sidecar's vendor, else the parent folder's name. */
  vendor: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed("auto"))),
  /** Check element type and B-scan height against the vendor's scanner. */
  strictGeometry: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true)))
})

/** The summary file of a prepared scan, which the predict stage reads. */
export interface PreparedScanInfo {
  readonly key: string
  readonly vendor: Vendor
  readonly vendorSource: VendorSource
  readonly dims: readonly [number, number, number]
  readonly spacingMm: readonly [number, number, number]
  readonly sourceDtype: string
  readonly scheme: "retouch" | "binary"
  readonly hasReference: boolean
  readonly labelledSlices: number
  readonly histogramMatched: boolean
  readonly zMedian: boolean
  /** Hash of the training run's preprocess info that set the matching. */
  readonly trainingInfo: string
}

/**
 * Reads the matching settings a scan of `vendor` needs from the training run's preprocess
 * info: the reference histogram and `zMedianVendors` for Cirrus and Topcon, nothing for
 * Spectralis, whose preprocessing has no such setting.
 */
const matchingOf = (path: string, info: Partial<CaseInfo>, vendor: Vendor) => {
  if (vendor === "Spectralis") return { referenceHistogram: null, zMedianVendors: [] as ReadonlyArray<Vendor> }
  const outdated = "rerun `workflow full` so preprocess records it, then predict with the new model"
  if (info.zMedianVendors === undefined) {
    throw new TrainingPreprocessError({ path, field: "zMedianVendors", reason: "is missing", fix: outdated })
  }
  if (info.referenceHistogram === undefined) {
    throw new TrainingPreprocessError({ path, field: "referenceHistogram", reason: "is missing", fix: outdated })
  }
  if (info.referenceHistogram === null) {
    throw new TrainingPreprocessError({
      path,
      field: "referenceHistogram",
      reason: `is null, because the model's training run had no Cirrus or Topcon case to match, so it holds no ${vendor} matching`,
      fix: "train with at least one Cirrus or Topcon case, or predict only Spectralis scans with this model"
    })
  }
  if (info.referenceHistogram.length !== 256) {
    throw new TrainingPreprocessError({
      path,
      field: "referenceHistogram",
      reason: `has ${info.referenceHistogram.length} bins, expected 256`,
      fix: "the file is damaged; rerun `workflow full --force=preprocess`"
    })
  }
  return { referenceHistogram: info.referenceHistogram, zMedianVendors: info.zMedianVendors }
}

const checkGeometry = (path: string, vendor: Vendor, volume: Volume): void => {
  const expected = vendorGeometry[vendor]
  if (expected.dtypes.includes(volume.dtype) && expected.heights.includes(volume.dims[1])) return
  throw new ScanGeometryError({
    path,
    vendor,
    actual: `${volume.dtype}, ${volume.dims[1]} voxels high`,
    expected: `${expected.dtypes.join(" or ")}, ${expected.heights.join(" or ")} voxels high`
  })
}

export const prepare = Stage.make({
  name: "prepare",
  module: import.meta.url,
  params: PrepareParams,
  forEach: "scan",
  inputs: {
    scan: Stage.source("scan"),
    training: Stage.artifact("preprocessInfo", { producedBy: ["preprocess.info"] })
  },
  outputs: {
    volume: Stage.file(".mha"),
    labels: Stage.file(".mha"),
    info: Stage.file(".json")
  },
  run: (ctx) =>
    Effect.gen(function* () {
      const meta = ctx.inputs.scan.meta as unknown as ScanMeta
      const path = ctx.inputs.scan.files[0]?.path ?? ctx.inputs.scan.key
      const { vendor, source } = yield* attempt(() => resolveScanVendor(path, meta, ctx.params.vendor))
      const trainingText = yield* attemptPromise(() => readFile(ctx.inputs.training.path, "utf8"))
      const training = JSON.parse(trainingText) as Partial<CaseInfo>
      const matching = yield* attempt(() => matchingOf(ctx.inputs.training.path, training, vendor))

      const datasetCase = caseOfScan(ctx.inputs.scan, vendor)
      const { oct, labels } = yield* attemptPromise(() => loadCase(datasetCase))
      if (ctx.params.strictGeometry) yield* attempt(() => checkGeometry(datasetCase.octPath, vendor, oct))
      ctx.progress(1, 3, "loaded")

      const volume = yield* attempt(() => preprocessVolume(oct, vendor, matching))
      const labelVolume: Volume<Uint8Array> = labels ?? makeVolume("uint8", oct.dims, oct.spacingMm)
      if (labels === undefined) labelVolume.data.fill(UNLABELLED)
      yield* attemptPromise(() => writeMetaImage(ctx.outputs.volume, volume))
      yield* attemptPromise(() =>
        writeMetaImage(ctx.outputs.labels, { ...labelVolume, spacingMm: oct.spacingMm }, { compress: true })
      )
      ctx.progress(2, 3, "preprocessed")

      const matched = vendor !== "Spectralis"
      const info: PreparedScanInfo = {
        key: ctx.inputs.scan.key,
        vendor,
        vendorSource: source,
        dims: oct.dims,
        spacingMm: oct.spacingMm,
        sourceDtype: oct.dtype,
        scheme: datasetCase.scheme,
        hasReference: labels !== undefined,
        labelledSlices: summarizeSlices(labelVolume, datasetCase.scheme).filter((slice) => slice.labelled).length,
        histogramMatched: matched,
        zMedian: matched && matching.zMedianVendors.includes(vendor),
        trainingInfo: ctx.inputs.training.hash
      }
      yield* attemptPromise(() => writeFile(ctx.outputs.info, JSON.stringify(info, null, 2)))
      ctx.progress(3, 3, "done")
    })
})
