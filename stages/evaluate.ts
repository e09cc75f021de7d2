/**
 * evaluate (whole): tiled inference of the trained model over every B-scan of each test
 * case, then the RETOUCH measures (Dice, absolute volume difference in mm^3, detection AUC)
 * per case and class, per vendor and overall (see src/eval/metrics.ts). Writes the label
 * volumes (MetaImage and NIfTI, with the input's spacing), overlay PNGs and metrics.json,
 * and records the metrics in the database.
 */
import { readFile, writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stage from "../src/runtime/stage.ts"
import type { VolumeEvaluationInput } from "../src/eval/metrics.ts"
import { readMetaImage } from "../src/volume/metaimage.ts"
import type { Volume } from "../src/volume/volume.ts"
import type { CaseInfo } from "./preprocess.ts"
import { readSplitFile, testCases } from "./split.ts"
import { computeThreads, plannedBackend } from "./support/backend.ts"
import { attempt, attemptPromise } from "./support/effect.ts"
import { caseFileName, loadTiledPredictor, TileParams } from "./support/inference.ts"

export const EvaluateParams = Schema.Struct({
  /** Model of the train stage to evaluate: the best by validation loss, or the last. */
  model: Schema.Literals(["best", "last"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("best" as const))),
  /**
   * Rule for a class absent from both the reference and the prediction of a case: "skip"
   * leaves the case out of that class's mean Dice, "one" counts it as Dice 1.
   */
  absentClassRule: Schema.Literals(["skip", "one"]).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed("skip" as const))
  ),
  /** Overlays per case: the B-scans with the most fluid in the reference or prediction. */
  overlaySlices: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(3))
  ),
  /** Explicit B-scan indices to draw, in place of the most-fluid choice, when not empty. */
  overlayZ: Schema.Array(Schema.Int).pipe(Schema.withDecodingDefaultKey(Effect.succeed<ReadonlyArray<number>>([]))),
  /**
   * Labels voxels outside the case's ROI mask as background. Training patches come from
   * inside the ROI only, so the network has never seen the vitreous or the choroid.
   */
  restrictToRoi: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))),
  ...TileParams
})

export { caseFileName, snapTileSize } from "./support/inference.ts"

export const evaluate = Stage.make({
  name: "evaluate",
  module: import.meta.url,
  params: EvaluateParams,
  inputs: {
    best: Stage.output("train", "best"),
    history: Stage.output("train", "history"),
    last: Stage.output("train", "model"),
    split: Stage.output("split", "split"),
    info: Stage.outputMap("preprocess", "info", { itemsFrom: testCases }),
    volumes: Stage.outputMap("preprocess", "volume", { itemsFrom: testCases }),
    labels: Stage.outputMap("preprocess", "labels", { itemsFrom: testCases }),
    rois: Stage.outputMap("roi", "mask", { itemsFrom: testCases })
  },
  outputs: {
    metrics: Stage.file(".json"),
    labels: Stage.directory(),
    overlays: Stage.directory()
  },
  environment: () => attempt(() => plannedBackend()),
  run: (ctx) =>
    Effect.gen(function* () {
      const params = ctx.params
      const splitFile = yield* attemptPromise(() => readSplitFile(ctx.inputs.split.path))
      const { predictor, backend, dispose } = yield* loadTiledPredictor({
        modelDir: params.model === "best" ? ctx.inputs.best.path : ctx.inputs.last.path,
        historyPath: ctx.inputs.history.path,
        backendName: ctx.environment.backend,
        tileHeight: params.tileHeight,
        tileWidth: params.tileWidth,
        threads: yield* attempt(() => computeThreads()),
        log: ctx.log
      })
      const { predictVolume } = yield* attemptPromise(() => import("../src/eval/predict.ts"))
      const { evaluateVolumes, metricsTables } = yield* attemptPromise(() => import("../src/eval/metrics.ts"))

      const evaluations: VolumeEvaluationInput[] = []
      let scheme: "retouch" | "binary" = "binary"
      yield* Effect.gen(function* () {
        let slicesDone = 0
        const infos: CaseInfo[] = []
        for (const key of splitFile.test) {
          infos.push(JSON.parse(yield* attemptPromise(() => readFile(ctx.inputs.info[key]!.path, "utf8"))) as CaseInfo)
        }
        const slicesTotal = infos.reduce((sum, info) => sum + info.dims[2], 0)
        for (const info of infos) {
          const key = info.key
          const volume = yield* attemptPromise(() => readMetaImage(ctx.inputs.volumes[key]!.path))
          const reference = (yield* attemptPromise(() => readMetaImage(ctx.inputs.labels[key]!.path))) as Volume<Uint8Array>
          const roiMask = params.restrictToRoi
            ? yield* attemptPromise(() => readMetaImage(ctx.inputs.rois[key]!.path))
            : undefined
          const name = caseFileName(key)
          const done = slicesDone
          const result = yield* attemptPromise(() =>
            predictVolume({
              predictor,
              volume,
              vendor: info.vendor,
              caseId: name,
              reference,
              outputBase: join(ctx.outputs.labels, name),
              overlayDir: ctx.outputs.overlays,
              overlay: {
                selection: params.overlayZ.length > 0 ? { slices: params.overlayZ } : { mostFluid: params.overlaySlices }
              },
              inference: {
                batchSize: params.batchSize,
                ...(roiMask === undefined ? {} : { mask: roiMask }),
                onProgress: (slice) => ctx.progress(done + slice, slicesTotal, key)
              },
              absentClassRule: params.absentClassRule
            })
          )
          slicesDone += info.dims[2]
          scheme = result.scheme
          evaluations.push({
            caseId: key,
            vendor: info.vendor,
            reference,
            prediction: result.labels,
            scores: result.scores
          })
          ctx.log("info", "case evaluated", { case: key, slices: info.dims[2] })
        }
      }).pipe(Effect.ensuring(Effect.promise(dispose)))

      const references =
        scheme === "binary"
          ? yield* attemptPromise(async () => {
              const { toBinaryFluid } = await import("../src/volume/labels.ts")
              return evaluations.map((input) => ({
                ...input,
                reference: toBinaryFluid(input.reference as Volume<Uint8Array>)
              }))
            })
          : evaluations
      const report = yield* attempt(() =>
        evaluateVolumes(references, { scheme, absentClassRule: params.absentClassRule })
      )
      const tables = metricsTables(report)
      const file = { backend, model: params.model, test: splitFile.test, ...report, tables }
      yield* attemptPromise(() => writeFile(ctx.outputs.metrics, JSON.stringify(file, null, 2)))
      ctx.emit("metrics", [
        ...tables.volumeClasses.flatMap((row) => [
          ...(row.dice === null ? [] : [{ name: "dice", value: row.dice, item: row.caseId, class: row.className, split: "test" }]),
          { name: "avd_mm3", value: row.absoluteVolumeDifferenceMm3, item: row.caseId, class: row.className, split: "test" },
          ...(row.sliceAuc === null ? [] : [{ name: "slice_auc", value: row.sliceAuc, item: row.caseId, class: row.className, split: "test" }])
        ]),
        ...tables.groupClasses.flatMap((row) => [
          ...(row.meanDice === null ? [] : [{ name: "mean_dice", value: row.meanDice, group: row.group, class: row.className, split: "test" }]),
          ...(row.meanAbsoluteVolumeDifferenceMm3 === null
            ? []
            : [{ name: "mean_avd_mm3", value: row.meanAbsoluteVolumeDifferenceMm3, group: row.group, class: row.className, split: "test" }]),
          ...(row.sliceAuc === null ? [] : [{ name: "slice_auc", value: row.sliceAuc, group: row.group, class: row.className, split: "test" }]),
          ...(row.volumeAuc === null ? [] : [{ name: "volume_auc", value: row.volumeAuc, group: row.group, class: row.className, split: "test" }])
        ])
      ])
    })
})
