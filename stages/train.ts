/**
 * train (whole): fits the U-Net (optionally with the adversarial discriminator) on
 * ROI-guided patches of the training cases of the split, validating every epoch on one
 * fold of them. Writes the last and the best model (tfjs model.json + weights.bin) and
 * the per-epoch history, and records every epoch's metrics in the database.
 *
 * TensorFlow.js loads lazily inside `run`, so planning a workflow stays fast. Checkpoints
 * go to the run's scratch folder, which outlives a killed run, so a rerun resumes there.
 */
import { cp, readFile, writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { paperConfig, planUnet, UnetConfigError, UnetShapeError, validateConfig } from "../src/ml/unet-shape.ts"
import * as Stage from "../src/runtime/stage.ts"
import { usableFolds, validationSplit } from "../src/split/split.ts"
import { readMetaImage } from "../src/volume/metaimage.ts"
import type { CaseInfo } from "./preprocess.ts"
import { readSplitFile, trainingCases } from "./split.ts"
import { computeThreads, plannedBackend, threadsWarning } from "./support/backend.ts"
import { attempt, attemptPromise } from "./support/effect.ts"
import { MixedSchemeError, ValidationFoldError } from "./support/errors.ts"

const withDefault = <S extends Schema.Top & { readonly "~type.make.in": unknown }>(schema: S, value: S["Type"]) =>
  schema.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value as S["Encoded"])))

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))
const Probability = Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 }))

/**
 * Checks that the U-Net these params describe can be built, so that a patch too small for
 * its depth, or dropout rates that do not match it, fail before any stage runs.
 */
function checkNetworkShape(params: {
  readonly baseFilters: number
  readonly depth: number
  readonly patchHeight: number
  readonly patchWidth: number
  readonly dropoutRates: ReadonlyArray<number>
  readonly firstKernelSize: number
}): true | string {
  const config = { ...paperConfig, ...params, numClasses: 4 }
  try {
    validateConfig(config)
    planUnet(config, params.patchHeight, params.patchWidth)
    return true
  } catch (error) {
    if (error instanceof UnetShapeError || error instanceof UnetConfigError) return error.message
    throw error
  }
}

export const TrainParams = Schema.Struct({
  /** Filters of the first encoder block; block i has baseFilters * 2^i. */
  baseFilters: withDefault(PositiveInt, 8),
  /** Encoder blocks, the bottleneck included. */
  depth: withDefault(PositiveInt, 3),
  /** Patch height and width in pixels (the model's input size). */
  patchHeight: withDefault(PositiveInt, 128),
  patchWidth: withDefault(PositiveInt, 64),
  firstKernelSize: withDefault(PositiveInt, 7),
  /** Spatial dropout rate of each decoder block, deepest first; depth - 1 values. */
  dropoutRates: withDefault(Schema.Array(Probability), [0.25, 0.5]),
  epochs: withDefault(PositiveInt, 20),
  stepsPerEpoch: withDefault(PositiveInt, 40),
  batchSize: withDefault(PositiveInt, 8),
  /**
   * Samples per forward/backward pass; 0 means the whole batch at once. A batch's passes
   * run in parallel on OCTFLOW_THREADS threads (default one per core).
   */
  microBatchSize: withDefault(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), 4),
  /** Fixed validation batches drawn once from the validation cases. */
  validationBatches: withDefault(PositiveInt, 4),
  /** Fold of the split's training cases held out for validation. */
  validationFold: withDefault(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), 0),
  learningRate: withDefault(Schema.Number.check(Schema.isGreaterThan(0)), 2e-4),
  beta1: withDefault(Probability, 0.5),
  /** Trains with the adversarial discriminator when true. */
  adversarial: withDefault(Schema.Boolean, false),
  /** Patches per B-scan centred on the ROI's vertical middle of random columns. */
  centredPerSlice: withDefault(PositiveInt, 12),
  /** Extra patches at random ROI pixels, as a fraction of centredPerSlice. */
  randomFraction: withDefault(Schema.Number.check(Schema.isGreaterThanOrEqualTo(0)), 0.2),
  /** Probability that a patch without fluid is dropped. */
  emptyDropProbability: withDefault(Probability, 0.75)
}).check(Schema.makeFilter(checkNetworkShape))
export type TrainParams = typeof TrainParams.Type

const readInfo = async (path: string): Promise<CaseInfo> => JSON.parse(await readFile(path, "utf8")) as CaseInfo

export const train = Stage.make({
  name: "train",
  module: import.meta.url,
  params: TrainParams,
  inputs: {
    split: Stage.output("split", "split"),
    // Only the training cases: an edit to a test case neither reruns training nor shows in the model's lineage.
    info: Stage.outputMap("preprocess", "info", { itemsFrom: trainingCases }),
    volumes: Stage.outputMap("preprocess", "volume", { itemsFrom: trainingCases }),
    labels: Stage.outputMap("preprocess", "labels", { itemsFrom: trainingCases }),
    rois: Stage.outputMap("roi", "mask", { itemsFrom: trainingCases })
  },
  outputs: {
    model: Stage.directory(),
    best: Stage.directory(),
    history: Stage.file(".json")
  },
  environment: () => attempt(() => plannedBackend()),
  run: (ctx) =>
    Effect.gen(function* () {
      const params = ctx.params
      const splitFile = yield* attemptPromise(() => readSplitFile(ctx.inputs.split.path))
      const split = { test: splitFile.test, train: splitFile.train, folds: splitFile.folds }
      const usable = usableFolds(split)
      if (split.train.length >= 2 && usable.length >= 2 && !usable.includes(params.validationFold)) {
        return yield* new ValidationFoldError({ fold: params.validationFold, folds: split.folds.length, usable })
      }
      const { fit, validation } = validationSplit(split, params.validationFold)
      const infos = new Map<string, CaseInfo>()
      for (const key of [...fit, ...validation]) {
        infos.set(key, yield* attemptPromise(() => readInfo(ctx.inputs.info[key]!.path)))
      }
      const trainingKeys = [...infos.keys()].sort()
      const schemeOf = (key: string) => infos.get(key)!.scheme
      const schemes = [...new Set(trainingKeys.map(schemeOf))].sort()
      if (schemes.length > 1) {
        const casesByScheme = Object.fromEntries(
          schemes.map((scheme) => [scheme, trainingKeys.filter((key) => schemeOf(key) === scheme)])
        )
        return yield* new MixedSchemeError({ casesByScheme })
      }
      const scheme = schemes[0] ?? "binary"
      const classCount = scheme === "retouch" ? 4 : 2

      const loadCases = (keys: readonly string[]) =>
        attemptPromise(() =>
          Promise.all(
            keys.map(async (key) => ({
              id: key,
              vendor: infos.get(key)!.vendor,
              image: await readMetaImage(ctx.inputs.volumes[key]!.path),
              roi: await readMetaImage(ctx.inputs.rois[key]!.path),
              labels: await readMetaImage(ctx.inputs.labels[key]!.path)
            }))
          )
        )
      const fitCases = yield* loadCases(fit)
      const validationCases = validation.length > 0 ? yield* loadCases(validation) : fitCases
      if (validation.length === 0) {
        ctx.log("warn", "no validation cases: validating on patches of the training cases", { fit: fit.length })
      }

      const { initBackend } = yield* attemptPromise(() => import("../src/ml/backend.ts"))
      const backend = yield* attemptPromise(() => initBackend({ backend: ctx.environment.backend }))
      ctx.log("info", "tfjs backend", {
        backend: backend.name,
        version: backend.version,
        ...(backend.simdKernels === undefined ? {} : { simdKernels: backend.simdKernels })
      })
      const threads = yield* attempt(() => computeThreads())
      const tooMany = threadsWarning(threads)
      if (tooMany !== undefined) ctx.log("warn", "more threads than cores, which slows training down", tooMany)
      const passes = params.microBatchSize > 0 ? Math.ceil(params.batchSize / params.microBatchSize) : 1
      ctx.log("info", "training threads", { threads: Math.min(threads, passes), passesPerBatch: passes })

      const { outputSize, paperConfig } = yield* attemptPromise(() => import("../src/ml/unet.ts"))
      const { makePatchSampler } = yield* attemptPromise(() => import("../src/ml/patches.ts"))
      const trainer = yield* attemptPromise(() => import("../src/ml/trainer.ts"))
      const modelConfig = {
        ...paperConfig,
        baseFilters: params.baseFilters,
        depth: params.depth,
        numClasses: classCount,
        patchHeight: params.patchHeight,
        patchWidth: params.patchWidth,
        dropoutRates: params.dropoutRates,
        firstKernelSize: params.firstKernelSize,
        seed: ctx.seed
      }
      const output = yield* attempt(() => outputSize(modelConfig, params.patchHeight, params.patchWidth))
      const samplerOptions = {
        batchSize: params.batchSize,
        classCount,
        patchHeight: params.patchHeight,
        patchWidth: params.patchWidth,
        outputHeight: output.height,
        outputWidth: output.width,
        centredPerSlice: params.centredPerSlice,
        randomFraction: params.randomFraction,
        emptyDropProbability: params.emptyDropProbability
      }
      const sampler = yield* attempt(() => makePatchSampler(fitCases, { ...samplerOptions, seed: ctx.seed }))
      const validationSampler = yield* attempt(() =>
        makePatchSampler(validationCases, { ...samplerOptions, seed: (ctx.seed ^ 0x5bd1e995) >>> 0 })
      )
      const validationBatches = Array.from({ length: params.validationBatches }, () => validationSampler.nextBatch())

      const config = {
        model: modelConfig,
        optimizer: { ...trainer.methodOptimizer, learningRate: params.learningRate, beta1: params.beta1 },
        ...(params.adversarial ? { adversarial: trainer.methodAdversarial } : {}),
        ...(params.microBatchSize > 0 ? { microBatchSize: params.microBatchSize } : {})
      }
      const totalSteps = params.epochs * params.stepsPerEpoch
      const result = yield* attemptPromise(() =>
        trainer.train(config, sampler, {
          epochs: params.epochs,
          stepsPerEpoch: params.stepsPerEpoch,
          validation: validationBatches,
          checkpointDir: join(ctx.scratchDir, "checkpoints"),
          seed: ctx.seed,
          threads,
          onProgress: (progress) =>
            ctx.progress(
              (progress.epoch - 1) * params.stepsPerEpoch + progress.batchesDone,
              totalSteps,
              `epoch ${progress.epoch}/${params.epochs} loss ${progress.loss.toFixed(4)} ` +
                `${progress.batchesPerSecond.toFixed(2)} batches/s`
            ),
          onResume: (epoch) => ctx.log("info", "resumed from checkpoint", { epoch }),
          onEpoch: (metrics) =>
            ctx.log("info", "epoch finished", {
              epoch: metrics.epoch,
              loss: metrics.loss,
              valLoss: metrics.valLoss,
              valFluidDice: metrics.valFluidDice,
              seconds: metrics.seconds,
              best: metrics.isBest
            })
        })
      )

      const { saveModel } = yield* attemptPromise(() => import("../src/ml/model-io.ts"))
      yield* attemptPromise(() => saveModel(result.model, ctx.outputs.model))
      yield* attemptPromise(() =>
        cp(join(ctx.scratchDir, "checkpoints", "best", "model"), ctx.outputs.best, { recursive: true })
      )
      result.model.dispose()

      const history = {
        backend,
        scheme,
        classCount,
        fit,
        validation,
        model: modelConfig,
        outputSize: output,
        bestEpoch: result.bestEpoch,
        bestValLoss: result.bestValLoss,
        // Seconds per epoch stay out of this file, which evaluate and predict read: the same
        // model must give the same file, or they would rerun after every retraining.
        epochs: result.history.map(({ seconds: _seconds, ...epoch }) => epoch)
      }
      yield* attemptPromise(() => writeFile(ctx.outputs.history, JSON.stringify(history, null, 2)))
      ctx.emit(
        "metrics",
        result.history.flatMap((epoch) => [
          { name: "loss", value: epoch.loss, epoch: epoch.epoch, split: "train" },
          { name: "loss", value: epoch.valLoss, epoch: epoch.epoch, split: "validation" },
          { name: "fluid_dice", value: epoch.valFluidDice, epoch: epoch.epoch, split: "validation" },
          ...(epoch.discriminatorLoss === undefined
            ? []
            : [{ name: "discriminator_loss", value: epoch.discriminatorLoss, epoch: epoch.epoch, split: "train" }]),
          { name: "seconds", value: epoch.seconds, epoch: epoch.epoch, split: "train" }
        ])
      )
    })
})
