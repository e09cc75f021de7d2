/**
 * Inference set-up shared by the evaluate and predict stages: the tile params, the tfjs
 * backend, and the trained U-Net rebuilt for large tiles with its weights.
 *
 * TensorFlow.js loads lazily inside `loadTiledPredictor`, so importing this module keeps
 * planning fast.
 */
import { readFile } from "node:fs/promises"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { Predictor } from "../../src/eval/infer.ts"
import type { BackendInfo } from "../../src/ml/backend.ts"
import type { UnetConfig } from "../../src/ml/unet.ts"
import type { StageLog } from "../../src/runtime/stage.ts"
import { threadsWarning } from "./backend.ts"
import { attempt, attemptPromise } from "./effect.ts"

/** Tile params of the evaluate and predict stages. */
export const TileParams = {
  /** Tiles per inference call. */
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(2))),
  /**
   * Input size in pixels of the inference tiles. The trained weights are loaded into a
   * network built for this size (rounded to the nearest size the U-Net accepts), because
   * a few large tiles waste far less of the valid convolutions' margin than patch-sized ones.
   */
  tileHeight: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(512))),
  tileWidth: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(512)))
}

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

/** The part of the train stage's history.json that inference reads. */
export interface TrainHistory {
  readonly model: UnetConfig
}

export interface TiledPredictor {
  readonly predictor: Predictor
  readonly backend: BackendInfo
  readonly tileHeight: number
  readonly tileWidth: number
  /** Frees the rebuilt model's tensors and stops any inference threads. */
  readonly dispose: () => Promise<void>
}

/**
 * Initialises `backendName`, loads the trained model from `modelDir` and rebuilds it for
 * tiles of about `tileHeight` x `tileWidth` pixels, with the U-Net config from the train
 * stage's history file. On the wasm and cpu backends with `threads` > 1, inference threads
 * each do that, and the predictor spreads B-scans over them.
 */
export const loadTiledPredictor = (options: {
  readonly modelDir: string
  readonly historyPath: string
  readonly backendName: string | undefined
  readonly tileHeight: number
  readonly tileWidth: number
  readonly threads: number
  readonly log: StageLog
}) =>
  Effect.gen(function* () {
    const { initBackend } = yield* attemptPromise(() => import("../../src/ml/backend.ts"))
    const backend = yield* attemptPromise(() => initBackend({ backend: options.backendName }))
    options.log("info", "tfjs backend", {
      backend: backend.name,
      version: backend.version,
      ...(backend.simdKernels === undefined ? {} : { simdKernels: backend.simdKernels })
    })
    const tooMany = threadsWarning(options.threads)
    if (tooMany !== undefined) options.log("warn", "more threads than cores, which slows inference down and holds a model per thread", tooMany)
    const { loadModel } = yield* attemptPromise(() => import("../../src/ml/model-io.ts"))
    const { predictorFromModel } = yield* attemptPromise(() => import("../../src/eval/infer.ts"))
    const { buildUnetForInput } = yield* attemptPromise(() => import("../../src/ml/unet.ts"))
    const history = JSON.parse(yield* attemptPromise(() => readFile(options.historyPath, "utf8"))) as TrainHistory
    const trained = yield* attemptPromise(() => loadModel(options.modelDir))
    const tileHeight = snapTileSize(options.tileHeight, history.model.patchHeight, history.model.depth)
    const tileWidth = snapTileSize(options.tileWidth, history.model.patchWidth, history.model.depth)
    if (options.threads > 1 && (backend.name === "wasm" || backend.name === "cpu")) {
      trained.dispose()
      const { startPredictorPool } = yield* attemptPromise(() => import("../../src/eval/predictor-pool.ts"))
      const pool = yield* attemptPromise(() =>
        startPredictorPool({
          threads: options.threads,
          backend: backend.name,
          modelDir: options.modelDir,
          config: history.model,
          tileHeight,
          tileWidth
        })
      )
      options.log("info", "inference tiles", { height: tileHeight, width: tileWidth, threads: pool.threads })
      const result: TiledPredictor = { predictor: pool.predictor, backend, tileHeight, tileWidth, dispose: () => pool.close() }
      return result
    }
    const model = yield* attempt(() => buildUnetForInput(history.model, trained, tileHeight, tileWidth))
    trained.dispose()
    options.log("info", "inference tiles", { height: tileHeight, width: tileWidth, threads: 1 })
    const predictor = yield* attempt(() => predictorFromModel(model))
    const result: TiledPredictor = {
      predictor,
      backend,
      tileHeight,
      tileWidth,
      dispose: async () => {
        model.dispose()
      }
    }
    return result
  })
