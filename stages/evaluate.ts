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
import { readSplitFile } from "./split.ts"
import { plannedBackend } from "./support/backend.ts"
import { attempt, attemptPromise } from "./support/effect.ts"

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
  /** Tiles per inference call. */
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(2))),
  /**
   * Input size in pixels of the inference tiles. The trained weights are loaded into a
   * network built for this size (rounded to the nearest size the U-Net accepts), because
   * a few large tiles waste far less of the valid convolutions' margin than patch-sized ones.
   */
  tileHeight: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(512))),
  tileWidth: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(512)))
})

/**
 * Rounds a requested tile side to the nearest size the U-Net built for `patch` accepts:
 * the patch size plus a multiple of 2^(depth - 1), never below the patch size.
 */
export const snapTileSize = (requested: number, patch: number, depth: number): number => {
  const step = 2 ** (depth - 1)
  return patch + step * Math.max(0, Math.round((requested - patch) / step))
}

/** File-name form of a case key: "Spectralis/TRAIN025" -> "Spectralis_TRAIN025". */
export const caseFileName = (key: string): string => key.replace(/[^A-Za-z0-9._-]+/g, "_")

export const evaluate = Stage.make({
  name: "evaluate",
  module: import.meta.url,
  params: EvaluateParams,
  inputs: {
    best: Stage.output("train", "best"),
    history: Stage.output("train", "history"),
    last: Stage.output("train", "model"),
    split: Stage.output("split", "split"),
    info: Stage.outputMap("preprocess", "info"),
    volumes: Stage.outputMap("preprocess", "volume"),
    labels: Stage.outputMap("preprocess", "labels")
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
      const { initBackend } = yield* attemptPromise(() => import("../src/ml/backend.ts"))
      const backend = yield* attemptPromise(() => initBackend({ backend: ctx.environment.backend }))
      ctx.log("info", "tfjs backend", { backend: backend.name, version: backend.version })
      const { loadModel } = yield* attemptPromise(() => import("../src/ml/model-io.ts"))
      const { predictorFromModel } = yield* attemptPromise(() => import("../src/eval/infer.ts"))
      const { predictVolume } = yield* attemptPromise(() => import("../src/eval/predict.ts"))
      const { evaluateVolumes, metricsTables } = yield* attemptPromise(() => import("../src/eval/metrics.ts"))
      const modelDir = params.model === "best" ? ctx.inputs.best.path : ctx.inputs.last.path
      const { buildUnetForInput } = yield* attemptPromise(() => import("../src/ml/unet.ts"))
      const history = JSON.parse(yield* attemptPromise(() => readFile(ctx.inputs.history.path, "utf8"))) as {
        readonly model: import("../src/ml/unet.ts").UnetConfig
      }
      const trained = yield* attemptPromise(() => loadModel(modelDir))
      const tileHeight = snapTileSize(params.tileHeight, history.model.patchHeight, history.model.depth)
      const tileWidth = snapTileSize(params.tileWidth, history.model.patchWidth, history.model.depth)
      const model = yield* attempt(() => buildUnetForInput(history.model, trained, tileHeight, tileWidth))
      trained.dispose()
      ctx.log("info", "inference tiles", { height: tileHeight, width: tileWidth })
      const predictor = yield* attempt(() => predictorFromModel(model))

      const evaluations: VolumeEvaluationInput[] = []
      let scheme: "retouch" | "binary" = "binary"
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
      model.dispose()

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
