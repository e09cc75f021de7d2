/**
 * preprocess (per case): intensities to 0..255, histogram matching of Cirrus and Topcon to
 * a Spectralis reference volume, z-median and 3x3 median (see src/kernels/preprocess.ts).
 * Writes the uint8 volume, the case's label volume (255 on B-scans without a reference),
 * a small JSON summary, and one `slices` row per B-scan.
 */
import { writeFile } from "node:fs/promises"
import { basename } from "node:path"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { histogram256 } from "../src/kernels/histogram.ts"
import { preprocessVolume } from "../src/kernels/preprocess.ts"
import { toUint8Volume } from "../src/kernels/intensity.ts"
import * as Stage from "../src/runtime/stage.ts"
import { attempt, attemptPromise } from "./support/effect.ts"
import type { SourceItem } from "../src/runtime/stage.ts"
import { listImageFiles, readBscanFolder, readBscanSidecar } from "../src/volume/bscans.ts"
import { type DatasetCase, loadCase, type Vendor, vendors } from "../src/volume/dataset.ts"
import { summarizeSlices, UNLABELLED } from "../src/volume/labels.ts"
import { writeMetaImage } from "../src/volume/metaimage.ts"
import { makeVolume, type Volume } from "../src/volume/volume.ts"
import { type CaseItemMeta, caseOfItem, checkVendorGeometry } from "./support/dataset.ts"
import { MissingReferenceVolumeError } from "./support/errors.ts"

const VendorName = Schema.Literals(vendors)

export const PreprocessParams = Schema.Struct({
  /**
   * Case key of the Spectralis volume that Cirrus and Topcon volumes are histogram-matched
   * to; "auto" takes the first Spectralis case in key order.
   */
  reference: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed("auto"))),
  /** Vendors that get the z-median; ["Topcon"] reproduces the original code's behaviour. */
  zMedianVendors: Schema.Array(VendorName).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed<ReadonlyArray<Vendor>>(["Cirrus", "Topcon"]))
  ),
  /** Vendor per case key or case folder name, for folders whose name is not a vendor. */
  vendor: Schema.Record(Schema.String, Schema.String).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed<Readonly<Record<string, string>>>({}))
  ),
  /** Check element type and B-scan height against the vendor's scanner. */
  strictGeometry: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true)))
})
export type PreprocessParams = typeof PreprocessParams.Type

/** Picks the histogram reference: the named case, or the first Spectralis case. */
export const pickReference = (params: PreprocessParams, items: ReadonlyArray<SourceItem>): string => {
  if (params.reference !== "auto") return params.reference
  const spectralis = items.find((item) => {
    const meta = item.meta as unknown as CaseItemMeta
    return meta.vendor === "Spectralis" && meta.discoveryError === null
  })
  return (spectralis ?? items[0]).key
}

/** Per-case summary that split, train and evaluate read. */
export interface CaseInfo {
  readonly key: string
  readonly vendor: Vendor
  readonly dims: readonly [number, number, number]
  readonly spacingMm: readonly [number, number, number]
  readonly sourceDtype: string
  readonly scheme: "retouch" | "binary"
  readonly labelledSlices: number
  readonly fluidSlices: number
  readonly histogramMatched: boolean
  readonly zMedian: boolean
  /**
   * 256 bin counts of the Spectralis reference volume's 8-bit intensities that this case was
   * matched to; null for a Spectralis case, which is not matched. Prediction on a new Cirrus
   * or Topcon scan matches it to the same histogram.
   */
  readonly referenceHistogram: ReadonlyArray<number> | null
  /** The `zMedianVendors` param this case was preprocessed with. */
  readonly zMedianVendors: ReadonlyArray<Vendor>
}

/** Reads a case's OCT volume alone, without its reference labels. */
const loadOctOnly = async (datasetCase: DatasetCase): Promise<Volume> => {
  if (datasetCase.format === "bscans") {
    const sidecar = await readBscanSidecar(datasetCase.octPath)
    return readBscanFolder(sidecar.imagesDir, sidecar.spacingMm)
  }
  const { referencePath: _labels, ...octOnly } = datasetCase
  return (await loadCase(octOnly)).oct
}

const imageNames = async (octPath: string, format: string, key: string, slices: number): Promise<string[]> => {
  if (format === "bscans") {
    const sidecar = await readBscanSidecar(octPath)
    return (await listImageFiles(sidecar.imagesDir)).map((path) => basename(path))
  }
  return Array.from({ length: slices }, (_, z) => `${key}#${z}`)
}

export const preprocess = Stage.make({
  name: "preprocess",
  module: import.meta.url,
  params: PreprocessParams,
  forEach: "dataset",
  inputs: {
    scan: Stage.source("dataset"),
    reference: Stage.sourcePick("dataset", pickReference)
  },
  outputs: {
    volume: Stage.file(".mha"),
    labels: Stage.file(".mha"),
    info: Stage.file(".json")
  },
  run: (ctx) =>
    Effect.gen(function* () {
      const datasetCase = yield* attempt(() => caseOfItem(ctx.inputs.scan, ctx.params.vendor))
      const vendor = datasetCase.vendor!
      const { oct, labels } = yield* attemptPromise(() => loadCase(datasetCase))
      if (ctx.params.strictGeometry) {
        yield* attempt(() => checkVendorGeometry(datasetCase.key, datasetCase.octPath, vendor, oct))
      }
      ctx.progress(1, 4, "loaded")

      const matched = vendor !== "Spectralis"
      let referenceHistogram: Float64Array | null = null
      if (matched) {
        const referenceItem = ctx.inputs.reference
        const referenceCase = yield* attempt(() => caseOfItem(referenceItem, ctx.params.vendor))
        if (referenceCase.vendor !== "Spectralis") {
          return yield* new MissingReferenceVolumeError({
            item: datasetCase.key,
            reference: referenceItem.key,
            reason:
              ctx.params.reference === "auto"
                ? `is a ${referenceCase.vendor} volume, because the dataset has no readable Spectralis case`
                : `is a ${referenceCase.vendor} volume`
          })
        }
        // Only the reference's intensities matter here, so its labels are not read: a label
        // problem in that case fails that case alone, not every case matched to it.
        const referenceOct = yield* attemptPromise(() => loadOctOnly(referenceCase)).pipe(
          Effect.mapError(
            (cause) =>
              new MissingReferenceVolumeError({
                item: datasetCase.key,
                reference: referenceItem.key,
                reason: `cannot be read (${cause instanceof Error ? cause.message : String(cause)})`
              })
          )
        )
        referenceHistogram = histogram256(toUint8Volume(referenceOct))
      }
      const volume = yield* attempt(() =>
        preprocessVolume(oct, vendor, { referenceHistogram, zMedianVendors: ctx.params.zMedianVendors })
      )
      ctx.progress(2, 4, "preprocessed")

      const labelVolume: Volume<Uint8Array> = labels ?? makeVolume("uint8", oct.dims, oct.spacingMm)
      if (labels === undefined) labelVolume.data.fill(UNLABELLED)
      const summaries = summarizeSlices(labelVolume, datasetCase.scheme)
      yield* attemptPromise(() => writeMetaImage(ctx.outputs.volume, volume))
      yield* attemptPromise(() =>
        writeMetaImage(ctx.outputs.labels, { ...labelVolume, spacingMm: oct.spacingMm }, { compress: true })
      )
      ctx.progress(3, 4, "written")

      const info: CaseInfo = {
        key: datasetCase.key,
        vendor,
        dims: oct.dims,
        spacingMm: oct.spacingMm,
        sourceDtype: oct.dtype,
        scheme: datasetCase.scheme,
        labelledSlices: summaries.filter((slice) => slice.labelled).length,
        fluidSlices: summaries.filter((slice) => slice.hasFluid).length,
        histogramMatched: matched,
        zMedian: matched && ctx.params.zMedianVendors.includes(vendor),
        referenceHistogram: referenceHistogram === null ? null : Array.from(referenceHistogram),
        zMedianVendors: ctx.params.zMedianVendors
      }
      yield* attemptPromise(() => writeFile(ctx.outputs.info, JSON.stringify(info, null, 2)))

      const names = yield* attemptPromise(() =>
        imageNames(datasetCase.octPath, datasetCase.format, datasetCase.key, oct.dims[2])
      )
      const flag = (present: boolean | null): number | null => {
        if (present === null) return null
        return present ? 1 : 0
      }
      ctx.emit(
        "slices",
        summaries.map((slice) => ({
          item: datasetCase.key,
          image: names[slice.z] ?? `${datasetCase.key}#${slice.z}`,
          vendor,
          root: datasetCase.key,
          slice: slice.z,
          irf: flag(slice.hasIrf),
          srf: flag(slice.hasSrf),
          ped: flag(slice.hasPed),
          fluid: slice.labelled ? flag(slice.hasFluid) : null,
          labelled: slice.labelled
        }))
      )
      ctx.progress(4, 4, "done")
    })
})
