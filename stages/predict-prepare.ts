/**
 * prepare (per scan): preprocesses a new scan exactly as the model's training cases were,
 * with the kernels of src/kernels/preprocess.ts. Every vendor gets intensities to 0..255.
 * Cirrus and Topcon also get histogram matching to the training run's Spectralis reference
 * histogram, the z-median when the training run's `zMedianVendors` lists them, and the 3x3
 * median. Both settings come from a preprocess info artifact of the training run.
 *
 * Writes the uint8 volume, the label volume (the scan's reference, or 255 everywhere when
 * it has none), the entropy ROI mask (src/kernels/roi.ts) that the predict stage restricts
 * labels to, and a JSON summary.
 */
import { readFile, writeFile } from "node:fs/promises"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { preprocessVolume } from "../src/kernels/preprocess.ts"
import { roiVolume } from "../src/kernels/roi.ts"
import * as Stage from "../src/runtime/stage.ts"
import { fitsVendorGeometry, loadCase, type Vendor, vendorGeometry, vendors } from "../src/volume/dataset.ts"
import { summarizeSlices, UNLABELLED } from "../src/volume/labels.ts"
import { writeMetaImage } from "../src/volume/metaimage.ts"
import { makeVolume, type Volume } from "../src/volume/volume.ts"
import type { CaseInfo } from "./preprocess.ts"
import { RoiParams } from "./roi.ts"
import { caseOfScan, resolveScanVendor, scanPathOf, type ScanMeta, type VendorSource } from "./predict-scan.ts"
import { attempt, attemptPromise } from "./support/effect.ts"

/** The training run's preprocess info predates a field that matching this scan needs. */
export class TrainingInfoOutdatedError extends Data.TaggedError("TrainingInfoOutdatedError")<{
  readonly path: string
  readonly field: string
}> {
  override get message(): string {
    return (
      `training preprocess info ${this.path} has no ${this.field}, because an older octflow wrote it; ` +
      "rerun `npm run workflow -- full` so preprocess records it, then predict with the new model"
    )
  }
}

/** The model's training run matched no case, so it recorded no reference histogram. */
export class NoReferenceHistogramError extends Data.TaggedError("NoReferenceHistogramError")<{
  readonly path: string
  readonly vendor: Vendor
}> {
  override get message(): string {
    return (
      `a ${this.vendor} scan needs the Spectralis reference histogram of the model's training run, but its ` +
      `preprocess info ${this.path} has none because that run had no Cirrus or Topcon case; train with at ` +
      "least one Cirrus or Topcon case, or use this model only on Spectralis scans"
    )
  }
}

/** The training run's reference histogram does not have 256 bins. */
export class ReferenceHistogramInvalidError extends Data.TaggedError("ReferenceHistogramInvalidError")<{
  readonly path: string
  readonly bins: number
}> {
  override get message(): string {
    return (
      `training preprocess info ${this.path}: referenceHistogram has ${this.bins} bins, expected 256; ` +
      "the file is damaged, so rerun `npm run workflow -- full --force=preprocess`"
    )
  }
}

/** The scan's element type or B-scan height does not fit its vendor's scanner. */
export class ScanGeometryError extends Data.TaggedError("ScanGeometryError")<{
  readonly path: string
  readonly vendor: Vendor
  readonly actual: string
  readonly expected: string
  /** Vendors whose element type and B-scan height the scan has. */
  readonly fitting: ReadonlyArray<Vendor>
}> {
  override get message(): string {
    const hint = this.fitting.length === 0 ? "pass the right --vendor" : `pass --vendor ${this.fitting.join(" or --vendor ")}`
    return (
      `scan ${this.path}: ${this.actual} does not fit ${this.vendor} (${this.expected}); ${hint}, ` +
      "or --skip-geometry-check to preprocess it as it is"
    )
  }
}

export const PrepareParams = Schema.Struct({
  /** Cirrus, Spectralis or Topcon; "auto" takes the sidecar's vendor, else the parent folder's name. */
  vendor: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed("auto"))),
  /** Check element type and B-scan height against the vendor's scanner. */
  strictGeometry: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))),
  /** ROI params; `workflow predict` sets those of the model's training run. */
  roi: RoiParams.pipe(Schema.withDecodingDefaultKey(Effect.succeed({})))
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
export const matchingOf = (path: string, info: Partial<CaseInfo>, vendor: Vendor) => {
  if (vendor === "Spectralis") return { referenceHistogram: null, zMedianVendors: [] as ReadonlyArray<Vendor> }
  if (info.zMedianVendors === undefined) throw new TrainingInfoOutdatedError({ path, field: "zMedianVendors" })
  if (info.referenceHistogram === undefined) throw new TrainingInfoOutdatedError({ path, field: "referenceHistogram" })
  if (info.referenceHistogram === null) throw new NoReferenceHistogramError({ path, vendor })
  if (info.referenceHistogram.length !== 256) {
    throw new ReferenceHistogramInvalidError({ path, bins: info.referenceHistogram.length })
  }
  return { referenceHistogram: info.referenceHistogram, zMedianVendors: info.zMedianVendors }
}

const checkGeometry = (path: string, vendor: Vendor, volume: Volume): void => {
  if (fitsVendorGeometry(vendor, volume)) return
  const expected = vendorGeometry[vendor]
  throw new ScanGeometryError({
    path,
    vendor,
    actual: `${volume.dtype}, ${volume.dims[1]} voxels high`,
    expected: `${expected.dtypes.join(" or ")}, ${expected.heights.join(" or ")} voxels high`,
    fitting: vendors.filter((other) => fitsVendorGeometry(other, volume))
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
    roi: Stage.file(".mha"),
    info: Stage.file(".json")
  },
  run: (ctx) =>
    Effect.gen(function* () {
      const meta = ctx.inputs.scan.meta as unknown as ScanMeta
      const path = yield* attempt(() => scanPathOf(ctx.inputs.scan))
      const { vendor, source } = yield* attempt(() => resolveScanVendor(path, meta, ctx.params.vendor))
      const datasetCase = caseOfScan(ctx.inputs.scan, vendor)
      const { oct, labels } = yield* attemptPromise(() => loadCase(datasetCase))
      // The geometry comes first, because a wrong vendor otherwise shows up as a missing
      // reference histogram, whose message does not point at the vendor.
      if (ctx.params.strictGeometry) yield* attempt(() => checkGeometry(datasetCase.octPath, vendor, oct))
      ctx.progress(1, 3, "loaded")

      const trainingText = yield* attemptPromise(() => readFile(ctx.inputs.training.path, "utf8"))
      const training = JSON.parse(trainingText) as Partial<CaseInfo>
      const matching = yield* attempt(() => matchingOf(ctx.inputs.training.path, training, vendor))

      const volume = yield* attempt(() => preprocessVolume(oct, vendor, matching))
      const labelVolume: Volume<Uint8Array> = labels ?? makeVolume("uint8", oct.dims, oct.spacingMm)
      if (labels === undefined) labelVolume.data.fill(UNLABELLED)
      yield* attemptPromise(() => writeMetaImage(ctx.outputs.volume, volume))
      yield* attemptPromise(() =>
        writeMetaImage(ctx.outputs.labels, { ...labelVolume, spacingMm: oct.spacingMm }, { compress: true })
      )
      // NOTE: unlike the training roi stage, the mask is not OR-ed with the reference's fluid,
      // so a prediction never depends on the reference. Its metrics can therefore be lower
      // than the evaluate stage's on the same case.
      const roiMask = yield* attempt(() => roiVolume(volume, undefined, ctx.params.roi))
      yield* attemptPromise(() => writeMetaImage(ctx.outputs.roi, roiMask, { compress: true }))
      if (!roiMask.data.some((value) => value !== 0)) {
        // predict limits labels to the ROI by default, so an empty one yields an empty label volume.
        ctx.log("warn", "the scan's ROI is empty, so no fluid can be predicted; check that it is an OCT volume of the given vendor", {
          path: datasetCase.octPath
        })
      }
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
