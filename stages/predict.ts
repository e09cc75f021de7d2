/**
 * predict (per scan): tiled inference of a trained model over every B-scan of a prepared
 * scan (src/eval/predict.ts), exactly as the evaluate stage runs it, with labels outside the
 * scan's ROI set to background. Writes the label volume
 * as MetaImage and NIfTI with the scan's dims and spacing, overlay PNGs, and metrics.json
 * with the predicted volume of each class in mm^3. When the scan has a reference, it also
 * holds the RETOUCH measures (Dice, absolute volume difference, detection AUC), which are
 * recorded in the database too.
 *
 * The model and its training history are run-time artifacts, so the lineage of every
 * output reaches the train execution and, through it, the training data.
 */
import { readFile, writeFile } from "node:fs/promises"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stage from "../src/runtime/stage.ts"
import { schemeClassNames } from "../src/volume/labels.ts"
import { readMetaImage } from "../src/volume/metaimage.ts"
import type { Volume } from "../src/volume/volume.ts"
import type { PreparedScanInfo } from "./predict-prepare.ts"
import { computeThreads, plannedBackend } from "./support/backend.ts"
import { attempt, attemptPromise } from "./support/effect.ts"
import { caseFileName, loadTiledPredictor, TileParams } from "./support/inference.ts"

export const PredictParams = Schema.Struct({
  /**
   * Rule for a class absent from both the reference and the prediction: "skip" leaves its
   * Dice null, "one" counts it as Dice 1.
   */
  absentClassRule: Schema.Literals(["skip", "one"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("skip" as const))),
  /** Overlays: the B-scans with the most fluid in the reference or prediction. */
  overlaySlices: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(3))),
  /** Explicit B-scan indices to draw, in place of the most-fluid choice, when not empty. */
  overlayZ: Schema.Array(Schema.Int).pipe(Schema.withDecodingDefaultKey(Effect.succeed<ReadonlyArray<number>>([]))),
  /**
   * Labels voxels outside the scan's ROI mask as background, as the evaluate stage does.
   * Training patches come from inside the ROI only, so the network never saw the rest.
   */
  restrictToRoi: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))),
  ...TileParams
})

/** Predicted voxels and volume per class, background excluded. */
const predictedVolumes = (labels: Volume<Uint8Array>, classNames: ReadonlyArray<string>) => {
  const counts = new Array<number>(classNames.length).fill(0)
  for (let i = 0; i < labels.data.length; i++) counts[labels.data[i]!]! += 1
  // Voxel volume in mm^3 = x spacing * y spacing * z spacing (all in mm).
  const voxelMm3 = labels.spacingMm[0] * labels.spacingMm[1] * labels.spacingMm[2]
  return classNames.slice(1).map((name, index) => ({
    className: name,
    voxels: counts[index + 1]!,
    volumeMm3: counts[index + 1]! * voxelMm3
  }))
}

export const predict = Stage.make({
  name: "predict",
  module: import.meta.url,
  params: PredictParams,
  forEach: "scan",
  inputs: {
    volume: Stage.output("prepare", "volume"),
    reference: Stage.output("prepare", "labels"),
    roi: Stage.output("prepare", "roi"),
    info: Stage.output("prepare", "info"),
    model: Stage.artifact("model", { producedBy: ["train.best", "train.model"] }),
    history: Stage.artifact("history", { producedBy: ["train.history"] })
  },
  outputs: {
    labels: Stage.file(".mha"),
    labelsNifti: Stage.file(".nii.gz"),
    overlays: Stage.directory(),
    metrics: Stage.file(".json")
  },
  environment: () => attempt(() => plannedBackend()),
  run: (ctx) =>
    Effect.gen(function* () {
      const params = ctx.params
      const info = JSON.parse(yield* attemptPromise(() => readFile(ctx.inputs.info.path, "utf8"))) as PreparedScanInfo
      const volume = yield* attemptPromise(() => readMetaImage(ctx.inputs.volume.path))
      const reference = info.hasReference
        ? ((yield* attemptPromise(() => readMetaImage(ctx.inputs.reference.path))) as Volume<Uint8Array>)
        : undefined
      const roiMask = params.restrictToRoi ? yield* attemptPromise(() => readMetaImage(ctx.inputs.roi.path)) : undefined

      const { predictor, backend, tileHeight, tileWidth, dispose } = yield* loadTiledPredictor({
        modelDir: ctx.inputs.model.path,
        historyPath: ctx.inputs.history.path,
        backendName: ctx.environment.backend,
        tileHeight: params.tileHeight,
        tileWidth: params.tileWidth,
        threads: yield* attempt(() => computeThreads()),
        log: ctx.log
      })
      const { predictVolume } = yield* attemptPromise(() => import("../src/eval/predict.ts"))
      const result = yield* attemptPromise(() =>
        predictVolume({
          predictor,
          volume,
          vendor: info.vendor,
          caseId: caseFileName(info.key),
          reference,
          overlayDir: ctx.outputs.overlays,
          overlay: {
            selection: params.overlayZ.length > 0 ? { slices: params.overlayZ } : { mostFluid: params.overlaySlices }
          },
          inference: {
            batchSize: params.batchSize,
            ...(roiMask === undefined ? {} : { mask: roiMask }),
            onProgress: (slice, total) => ctx.progress(slice, total, info.key)
          },
          absentClassRule: params.absentClassRule
        })
      ).pipe(Effect.ensuring(Effect.promise(dispose)))

      const { writeMetaImage } = yield* attemptPromise(() => import("../src/volume/metaimage.ts"))
      const { writeNifti } = yield* attemptPromise(() => import("../src/volume/nifti.ts"))
      yield* attemptPromise(() => writeMetaImage(ctx.outputs.labels, result.labels, { compress: true }))
      yield* attemptPromise(() => writeNifti(ctx.outputs.labelsNifti, result.labels, { description: "octflow predicted labels" }))

      const classes = predictedVolumes(result.labels, schemeClassNames[result.scheme])
      const evaluation = result.evaluation ?? null
      const file = {
        case: info.key,
        vendor: info.vendor,
        scheme: result.scheme,
        backend,
        model: ctx.inputs.model.hash,
        tile: { height: tileHeight, width: tileWidth },
        predicted: classes,
        overlays: result.overlays.map((overlay) => overlay.z),
        evaluation
      }
      yield* attemptPromise(() => writeFile(ctx.outputs.metrics, JSON.stringify(file, null, 2)))

      const rows = classes.map((row) => ({ name: "predicted_volume_mm3", value: row.volumeMm3, class: row.className, split: "predict" }))
      for (const metrics of evaluation?.metrics.classes ?? []) {
        if (metrics.dice !== null) rows.push({ name: "dice", value: metrics.dice, class: metrics.name, split: "predict" })
        rows.push({ name: "avd_mm3", value: metrics.absoluteVolumeDifferenceMm3, class: metrics.name, split: "predict" })
        if (metrics.sliceAuc.value !== null) {
          rows.push({ name: "slice_auc", value: metrics.sliceAuc.value, class: metrics.name, split: "predict" })
        }
      }
      ctx.emit("metrics", rows)
      ctx.log("info", "scan segmented", { case: info.key, slices: info.dims[2], reference: info.hasReference })
    })
})
