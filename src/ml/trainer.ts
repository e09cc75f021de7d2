/**
 * Trains the U-Net (optionally with the adversarial discriminator) on batches from a
 * patch sampler, validates every epoch, and checkpoints so a killed run resumes exactly.
 *
 * Batch layout: x is float32 NHWC [batchSize, height, width, 3] (normalised intensities),
 * y holds labels [batchSize, height, width] at input size (0..C-1, or 255 unlabelled);
 * the trainer centre-crops y to the network's output size (see `outputSize` in unet.ts).
 *
 * Checkpoint folder layout (`checkpointDir`):
 * - `epoch-0001/`, `epoch-0002/`, ...: one folder per finished epoch. Each contains
 *   `model/` (model.json, weights.bin), `optimizer.json` and `optimizer.bin`, and
 *   `state.json` (epoch, step, sampler state, history, best so far). The adversarial
 *   variant adds `discriminator/` and `discriminator-optimizer.*`.
 * - `best/`: a copy of the epoch folder with the lowest validation loss.
 * - `last.json`: the name of the newest complete epoch folder, written last and atomically.
 * Determinism: initialisers are seeded from the config, and before every step each dropout
 * layer gets a seed derived from (seed, step, layer), so the same seed on the same backend
 * gives the same weights, and resuming replays the same masks.
 */
import { cp, mkdir, readFile, rm } from "node:fs/promises"
import { join } from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import type * as tfl from "@tensorflow/tfjs-layers"
import * as Data from "effect/Data"
import { buildDiscriminator, type DiscriminatorConfig, discriminatorPair, methodDiscriminator, weightDecayLoss } from "./discriminator.ts"
import {
  type AdversarialWeights,
  discriminatorLoss,
  generatorLoss,
  methodAdversarialWeights,
  segmentationLossParts,
  UNLABELLED
} from "./loss.ts"
import { loadModel, loadNamedTensors, replaceDir, saveModel, saveNamedTensors, writeFileAtomic } from "./model-io.ts"
import { buildUnet, dropoutLayers, outputSize, type UnetConfig } from "./unet.ts"

/** One batch from the sampler; see the module header for the layout. */
export interface Batch {
  /** float32 [batchSize, height, width, 3], NHWC. */
  readonly x: Float32Array
  /** [batchSize, height, width] labels at input size: 0..C-1, or 255 for unlabelled. */
  readonly y: Int32Array | Uint8Array
  /** Optional per-patch flags (1 if the patch contains fluid); not used by the loss. */
  readonly presence?: Uint8Array
  readonly batchSize: number
}

/** The interface the patch sampler implements so the trainer can draw and resume it. */
export interface BatchSampler {
  /** Returns the next training batch; its height and width equal the model's patch size. */
  nextBatch(): Batch
  /** A JSON-serialisable snapshot that `setState` restores, so resumed runs draw the same batches. */
  getState(): unknown
  setState(state: unknown): void
}

export interface OptimizerConfig {
  readonly learningRate: number
  readonly beta1: number
  readonly beta2: number
  readonly epsilon: number
}

/** Adam with learning rate 2e-4 and beta1 0.5, as the method trains both networks. */
export const methodOptimizer: OptimizerConfig = { learningRate: 2e-4, beta1: 0.5, beta2: 0.999, epsilon: 1e-7 }

export interface AdversarialConfig {
  readonly weights: AdversarialWeights
  readonly convLayers: number
  readonly filters: number
  readonly weightDecay: number
}

export const methodAdversarial: AdversarialConfig = { weights: methodAdversarialWeights, ...methodDiscriminator }

export interface TrainConfig {
  readonly model: UnetConfig
  readonly optimizer: OptimizerConfig
  /** Present for the adversarial variant. */
  readonly adversarial?: AdversarialConfig
  readonly diceEpsilon?: number
  /**
   * Samples per forward/backward pass; gradients of the passes of one batch are averaged
   * before the update. The wasm heap is 32-bit (at most 4 GiB), and a paper-config batch of
   * 8 needs more, so it trains there as 4 passes of 2.
   */
  readonly microBatchSize?: number
}

export interface EpochMetrics {
  /** 1-based epoch number. */
  readonly epoch: number
  /** Mean training loss over the epoch's batches. */
  readonly loss: number
  readonly valLoss: number
  /** Hard Dice of fluid (argmax > 0) against label > 0, pooled over all validation pixels. */
  readonly valFluidDice: number
  /** Mean discriminator loss (adversarial variant only). */
  readonly discriminatorLoss?: number
  readonly seconds: number
  readonly isBest: boolean
}

export interface BatchProgress {
  readonly epoch: number
  readonly batchesDone: number
  readonly batchesTotal: number
  readonly loss: number
  readonly batchesPerSecond: number
}

export interface TrainOptions {
  readonly epochs: number
  readonly stepsPerEpoch: number
  /** Fixed validation batches, evaluated after every epoch. */
  readonly validation: ReadonlyArray<Batch>
  readonly checkpointDir: string
  readonly seed: number
  /** Resume from the newest checkpoint in checkpointDir when there is one (default true). */
  readonly resume?: boolean
  readonly onProgress?: (progress: BatchProgress) => void
  readonly onEpoch?: (metrics: EpochMetrics) => void | Promise<void>
}

export interface TrainResult {
  readonly model: tfl.LayersModel
  readonly history: ReadonlyArray<EpochMetrics>
  readonly bestEpoch: number
  readonly bestValLoss: number
  /** Epoch the run resumed after, 0 for a fresh start. */
  readonly resumedFromEpoch: number
}

export class BatchShapeError extends Data.TaggedError("BatchShapeError")<{
  readonly field: string
  readonly expected: number
  readonly actual: number
}> {
  override get message() {
    return `Invalid training batch: ${this.field} has ${this.actual} values, expected ${this.expected}. The sampler's patch size and batch size must match the model config.`
  }
}

export class CheckpointMismatchError extends Data.TaggedError("CheckpointMismatchError")<{
  readonly path: string
  readonly expected: string
  readonly actual: string
}> {
  override get message() {
    return `Checkpoint ${this.path} was written for another training config (${this.actual}), expected ${this.expected}. Use a new checkpoint folder or pass resume: false.`
  }
}

export class TrainOptionsError extends Data.TaggedError("TrainOptionsError")<{
  readonly field: string
  readonly expected: string
  readonly actual: unknown
}> {
  override get message() {
    return `Invalid training option ${this.field}: expected ${this.expected}, got ${JSON.stringify(this.actual)}.`
  }
}

interface TrainerState {
  readonly fingerprint: string
  readonly epoch: number
  readonly step: number
  readonly samplerState: unknown
  readonly history: ReadonlyArray<EpochMetrics>
  readonly bestEpoch: number
  readonly bestValLoss: number
  /** Adam's running beta powers, restored bit for bit (tfjs recomputes them with pow). */
  readonly accBeta: ReadonlyArray<number>
  readonly discriminatorAccBeta?: ReadonlyArray<number>
}

interface AdamInternals {
  accBeta1: tf.Variable
  accBeta2: tf.Variable
}

/** A stable string of everything that must match for a checkpoint to be resumable. */
function fingerprintOf(config: TrainConfig, options: TrainOptions): string {
  return JSON.stringify({ config, stepsPerEpoch: options.stepsPerEpoch, seed: options.seed })
}

/** Seed of dropout layer `layer` at global step `step` (an integer hash, 31 bits). */
export function dropoutSeed(seed: number, step: number, layer: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0
  for (const value of [step, layer]) {
    h = Math.imul(h ^ value, 0x85ebca6b) >>> 0
    h = (h ^ (h >>> 13)) >>> 0
    h = Math.imul(h, 0xc2b2ae35) >>> 0
    h = (h ^ (h >>> 16)) >>> 0
  }
  return h & 0x7fffffff
}

function setDropoutSeeds(model: tfl.LayersModel, seed: number, step: number): void {
  for (const [index, layer] of dropoutLayers(model).entries()) {
    // tfjs-layers' Dropout reads `seed` on every call, so setting it per step varies the mask.
    ;(layer as unknown as { seed: number }).seed = dropoutSeed(seed, step, index)
  }
}

/** Centre-crops labels [b, h, w] to [b, outH, outW]. */
export function cropLabels(
  labels: Int32Array | Uint8Array,
  batchSize: number,
  height: number,
  width: number,
  outHeight: number,
  outWidth: number
): Int32Array {
  const top = Math.floor((height - outHeight) / 2)
  const left = Math.floor((width - outWidth) / 2)
  const cropped = new Int32Array(batchSize * outHeight * outWidth)
  for (let b = 0; b < batchSize; b++) {
    for (let y = 0; y < outHeight; y++) {
      const source = (b * height + y + top) * width + left
      const target = (b * outHeight + y) * outWidth
      for (let x = 0; x < outWidth; x++) cropped[target + x] = labels[source + x]!
    }
  }
  return cropped
}

interface BatchTensors {
  readonly x: tf.Tensor4D
  readonly y: tf.Tensor3D
}

function toTensors(batch: Batch, model: UnetConfig): BatchTensors {
  const { patchHeight: h, patchWidth: w } = model
  const b = batch.batchSize
  if (batch.x.length !== b * h * w * 3) throw new BatchShapeError({ field: "x", expected: b * h * w * 3, actual: batch.x.length })
  if (batch.y.length !== b * h * w) throw new BatchShapeError({ field: "y", expected: b * h * w, actual: batch.y.length })
  const out = outputSize(model, h, w)
  const labels = cropLabels(batch.y, b, h, w, out.height, out.width)
  return { x: tf.tensor4d(batch.x, [b, h, w, 3]), y: tf.tensor3d(labels, [b, out.height, out.width], "int32") }
}

function makeAdam(config: OptimizerConfig): tf.AdamOptimizer {
  return tf.train.adam(config.learningRate, config.beta1, config.beta2, config.epsilon)
}

async function readAccBeta(optimizer: tf.AdamOptimizer): Promise<Array<number>> {
  const internals = optimizer as unknown as AdamInternals
  return [(await internals.accBeta1.data())[0]!, (await internals.accBeta2.data())[0]!]
}

function writeAccBeta(optimizer: tf.AdamOptimizer, values: ReadonlyArray<number>): void {
  const internals = optimizer as unknown as AdamInternals
  tf.tidy(() => {
    internals.accBeta1.assign(tf.scalar(values[0]!))
    internals.accBeta2.assign(tf.scalar(values[1]!))
  })
}

interface Networks {
  model: tfl.LayersModel
  optimizer: tf.AdamOptimizer
  discriminator?: tfl.LayersModel
  discriminatorOptimizer?: tf.AdamOptimizer
}

function trainableVariables(model: tfl.LayersModel): Array<tf.Variable> {
  return model.trainableWeights.map((w) => (w as unknown as { val: tf.Variable }).val)
}

interface StepResult {
  readonly loss: number
  readonly discriminatorLoss?: number
}

/** Computes the U-Net's loss on one (micro-)batch: segmentation loss plus any adversarial term. */
function generatorObjective(networks: Networks, config: TrainConfig, chunk: BatchTensors): tf.Scalar {
  const probabilities = networks.model.apply(chunk.x, { training: true }) as tf.Tensor4D
  const segmentation = segmentationLossParts(probabilities, chunk.y, { diceEpsilon: config.diceEpsilon }).loss
  if (networks.discriminator === undefined || config.adversarial === undefined) return segmentation
  const judged = networks.discriminator.apply(discriminatorPair(chunk.x, probabilities), { training: true }) as tf.Tensor
  return generatorLoss(segmentation, judged, config.adversarial.weights)
}

/** Splits a batch along axis 0 into chunks of at most `size` samples (the caller disposes them). */
function splitBatch(batch: BatchTensors, size: number): Array<BatchTensors> {
  const total = batch.x.shape[0]
  const chunks: Array<BatchTensors> = []
  for (let start = 0; start < total; start += size) {
    const count = Math.min(size, total - start)
    chunks.push({
      x: tf.slice(batch.x, [start, 0, 0, 0], [count, -1, -1, -1]),
      y: tf.slice(batch.y, [start, 0, 0], [count, -1, -1])
    })
  }
  return chunks
}

/**
 * Updates the U-Net once and returns its loss. With config.microBatchSize below the batch
 * size, gradients of the micro-batches are averaged (weighted by their sizes) before one
 * Adam update. NOTE: batch norm then normalises with micro-batch statistics, and the
 * class-balanced cross-entropy is balanced per micro-batch, so this is close to, not equal
 * to, a whole-batch step.
 */
function generatorUpdate(networks: Networks, config: TrainConfig, batch: BatchTensors, seed: number, step: number): number {
  const variables = trainableVariables(networks.model)
  const total = batch.x.shape[0]
  const microBatchSize = config.microBatchSize ?? total
  if (microBatchSize >= total) {
    setDropoutSeeds(networks.model, seed, step)
    return tf.tidy(() => {
      const cost = networks.optimizer.minimize(() => generatorObjective(networks, config, batch), true, variables)
      return cost!.dataSync()[0]!
    })
  }

  const chunks = splitBatch(batch, microBatchSize)
  let sums: Record<string, tf.Tensor> | undefined
  let lossSum = 0
  for (const [index, chunk] of chunks.entries()) {
    // Micro-batch k of step t uses the dropout seeds of (t * chunks + k).
    setDropoutSeeds(networks.model, seed, step * chunks.length + index)
    const weight = chunk.x.shape[0] / total
    const { value, grads } = tf.variableGrads(() => tf.mul(weight, generatorObjective(networks, config, chunk)) as tf.Scalar, variables)
    lossSum += value.dataSync()[0]!
    value.dispose()
    if (sums === undefined) {
      sums = grads
    } else {
      const previous: Record<string, tf.Tensor> = sums
      sums = Object.fromEntries(Object.entries(grads).map(([name, grad]) => [name, tf.add(previous[name]!, grad)]))
      tf.dispose([...Object.values(previous), ...Object.values(grads)])
    }
  }
  tf.dispose(chunks.flatMap((chunk) => [chunk.x, chunk.y]))
  networks.optimizer.applyGradients(sums as Parameters<tf.AdamOptimizer["applyGradients"]>[0])
  tf.dispose(Object.values(sums!))
  return lossSum
}

/** One optimisation step on one batch; returns the generator (segmentation) loss. */
function trainStep(networks: Networks, config: TrainConfig, batch: BatchTensors, seed: number, step: number): StepResult {
  const { model } = networks
  const numClasses = config.model.numClasses
  let dLoss: number | undefined
  if (networks.discriminator !== undefined && networks.discriminatorOptimizer !== undefined && config.adversarial !== undefined) {
    const discriminator = networks.discriminator
    const adversarial = config.adversarial
    // Discriminator step: reference masks are real, the U-Net's current probabilities fake.
    // NOTE: this forward pass runs in training mode, so batch-norm moving statistics are
    // updated twice per adversarial step (here and in the U-Net's own update).
    setDropoutSeeds(model, seed, 2 * step + 1)
    const value = tf.tidy(() => {
      const fakeMask = model.apply(batch.x, { training: true }) as tf.Tensor4D
      const labelled = tf.notEqual(batch.y, UNLABELLED)
      const clean = tf.where(labelled, batch.y, tf.zerosLike(batch.y))
      const realMask = tf.mul(tf.oneHot(clean, numClasses), tf.expandDims(tf.cast(labelled, "float32"), -1)) as tf.Tensor4D
      const real = discriminatorPair(batch.x, realMask)
      const fake = discriminatorPair(batch.x, fakeMask)
      const cost = networks.discriminatorOptimizer!.minimize(
        () =>
          tf.add(
            discriminatorLoss(discriminator.apply(real, { training: true }) as tf.Tensor, discriminator.apply(fake, { training: true }) as tf.Tensor),
            weightDecayLoss(discriminator, adversarial.weightDecay)
          ) as tf.Scalar,
        true,
        trainableVariables(discriminator)
      )
      return cost!.dataSync()[0]!
    })
    dLoss = value
  }
  const generatorStep = networks.discriminator === undefined ? step : 2 * step
  const loss = generatorUpdate(networks, config, batch, seed, generatorStep)
  return dLoss === undefined ? { loss } : { loss, discriminatorLoss: dLoss }
}

interface ValidationResult {
  readonly loss: number
  readonly fluidDice: number
}

async function validate(model: tfl.LayersModel, config: TrainConfig, batches: ReadonlyArray<Batch>): Promise<ValidationResult> {
  let lossSum = 0
  let truePositive = 0
  let falsePositive = 0
  let falseNegative = 0
  for (const batch of batches) {
    const tensors = toTensors(batch, config.model)
    const [loss, counts] = tf.tidy(() => {
      // Forward passes in micro-batches bound the memory; the loss is of the whole batch.
      const chunkSize = config.microBatchSize ?? batch.batchSize
      const parts = splitBatch(tensors, chunkSize).map((chunk) => model.apply(chunk.x, { training: false }) as tf.Tensor4D)
      const probabilities = parts.length === 1 ? parts[0]! : tf.concat(parts, 0)
      const lossParts = segmentationLossParts(probabilities, tensors.y, { diceEpsilon: config.diceEpsilon })
      const labelled = tf.notEqual(tensors.y, UNLABELLED)
      const predicted = tf.logicalAnd(tf.greater(tf.argMax(probabilities, 3), 0), labelled)
      const truth = tf.logicalAnd(tf.greater(tensors.y, 0), labelled)
      const tp = tf.sum(tf.cast(tf.logicalAnd(predicted, truth), "float32"))
      const fp = tf.sum(tf.cast(tf.logicalAnd(predicted, tf.logicalNot(truth)), "float32"))
      const fn = tf.sum(tf.cast(tf.logicalAnd(tf.logicalNot(predicted), truth), "float32"))
      return [lossParts.loss.dataSync()[0]!, tf.stack([tp, fp, fn]).dataSync()]
    })
    tf.dispose([tensors.x, tensors.y])
    lossSum += loss
    truePositive += counts[0]!
    falsePositive += counts[1]!
    falseNegative += counts[2]!
  }
  const denominator = 2 * truePositive + falsePositive + falseNegative
  return {
    loss: batches.length === 0 ? Number.NaN : lossSum / batches.length,
    // Dice is 1 when neither prediction nor reference has fluid.
    fluidDice: denominator === 0 ? 1 : (2 * truePositive) / denominator
  }
}

function epochDirName(epoch: number): string {
  return `epoch-${String(epoch).padStart(4, "0")}`
}

async function saveOptimizer(optimizer: tf.AdamOptimizer, dir: string, baseName: string): Promise<void> {
  const weights = await optimizer.getWeights()
  await saveNamedTensors(dir, baseName, weights)
  // getWeights makes a new scalar for the iteration count; the moments are live variables.
  tf.dispose(weights.filter((w) => w.name === "iter").map((w) => w.tensor))
}

async function writeCheckpoint(dir: string, networks: Networks, state: TrainerState): Promise<void> {
  const name = epochDirName(state.epoch)
  const temporary = join(dir, `.${name}.tmp-${process.pid}`)
  await rm(temporary, { recursive: true, force: true })
  await mkdir(temporary, { recursive: true })
  await saveModel(networks.model, join(temporary, "model"))
  await saveOptimizer(networks.optimizer, temporary, "optimizer")
  if (networks.discriminator !== undefined && networks.discriminatorOptimizer !== undefined) {
    await saveModel(networks.discriminator, join(temporary, "discriminator"))
    await saveOptimizer(networks.discriminatorOptimizer, temporary, "discriminator-optimizer")
  }
  await writeFileAtomic(join(temporary, "state.json"), JSON.stringify(state))
  await replaceDir(temporary, join(dir, name))
  const isBest = state.bestEpoch === state.epoch
  if (isBest) {
    const bestTemporary = join(dir, `.best.tmp-${process.pid}`)
    await rm(bestTemporary, { recursive: true, force: true })
    await cp(join(dir, name), bestTemporary, { recursive: true })
    await replaceDir(bestTemporary, join(dir, "best"))
  }
  await writeFileAtomic(join(dir, "last.json"), JSON.stringify({ epoch: state.epoch, dir: name }))
}

async function readLastCheckpoint(dir: string): Promise<string | undefined> {
  try {
    const last = JSON.parse(await readFile(join(dir, "last.json"), "utf8")) as { dir: string }
    return join(dir, last.dir)
  } catch {
    return undefined
  }
}

async function restoreOptimizer(optimizer: tf.AdamOptimizer, dir: string, baseName: string, accBeta: ReadonlyArray<number>): Promise<void> {
  const tensors = await loadNamedTensors(dir, baseName)
  await optimizer.setWeights(tensors)
  // setWeights keeps the moment tensors (as variables) and the iteration count; the
  // loaded iteration tensor is not kept, so it is freed here.
  tf.dispose(tensors.filter((t) => t.name === "iter").map((t) => t.tensor))
  writeAccBeta(optimizer, accBeta)
}

function buildNetworks(config: TrainConfig, seed: number): Networks {
  const model = buildUnet({ ...config.model, seed })
  const networks: Networks = { model, optimizer: makeAdam(config.optimizer) }
  if (config.adversarial !== undefined) {
    const out = outputSize(config.model, config.model.patchHeight, config.model.patchWidth)
    const discriminatorConfig: DiscriminatorConfig = {
      height: out.height,
      width: out.width,
      numClasses: config.model.numClasses,
      convLayers: config.adversarial.convLayers,
      filters: config.adversarial.filters,
      weightDecay: config.adversarial.weightDecay,
      seed: seed + 1000
    }
    networks.discriminator = buildDiscriminator(discriminatorConfig)
    networks.discriminatorOptimizer = makeAdam(config.optimizer)
  }
  return networks
}

async function restoreNetworks(networks: Networks, checkpoint: string, state: TrainerState): Promise<void> {
  const loaded = await loadModel(join(checkpoint, "model"))
  networks.model.setWeights(loaded.getWeights())
  loaded.dispose()
  await restoreOptimizer(networks.optimizer, checkpoint, "optimizer", state.accBeta)
  if (networks.discriminator !== undefined && networks.discriminatorOptimizer !== undefined) {
    const loadedDiscriminator = await loadModel(join(checkpoint, "discriminator"))
    networks.discriminator.setWeights(loadedDiscriminator.getWeights())
    loadedDiscriminator.dispose()
    await restoreOptimizer(networks.discriminatorOptimizer, checkpoint, "discriminator-optimizer", state.discriminatorAccBeta ?? [])
  }
}

function validateOptions(config: TrainConfig, options: TrainOptions): void {
  const micro = config.microBatchSize
  if (micro !== undefined && (!Number.isInteger(micro) || micro < 1)) {
    throw new TrainOptionsError({ field: "microBatchSize", expected: "an integer >= 1", actual: micro })
  }
  for (const field of ["epochs", "stepsPerEpoch"] as const) {
    const value = options[field]
    if (!Number.isInteger(value) || value < 1) throw new TrainOptionsError({ field, expected: "an integer >= 1", actual: value })
  }
  if (options.validation.length === 0) {
    throw new TrainOptionsError({ field: "validation", expected: "at least one batch", actual: 0 })
  }
}

/**
 * Trains for `options.epochs` epochs of `options.stepsPerEpoch` batches, resuming from the
 * newest checkpoint in `options.checkpointDir` when one exists and `resume` is not false.
 */
export async function train(config: TrainConfig, sampler: BatchSampler, options: TrainOptions): Promise<TrainResult> {
  validateOptions(config, options)
  const fingerprint = fingerprintOf(config, options)
  const networks = buildNetworks(config, options.seed)
  let history: Array<EpochMetrics> = []
  let step = 0
  let startEpoch = 0
  let bestEpoch = 0
  let bestValLoss = Number.POSITIVE_INFINITY

  await mkdir(options.checkpointDir, { recursive: true })
  const checkpoint = options.resume === false ? undefined : await readLastCheckpoint(options.checkpointDir)
  if (checkpoint !== undefined) {
    const state = JSON.parse(await readFile(join(checkpoint, "state.json"), "utf8")) as TrainerState
    if (state.fingerprint !== fingerprint) throw new CheckpointMismatchError({ path: checkpoint, expected: fingerprint, actual: state.fingerprint })
    await restoreNetworks(networks, checkpoint, state)
    sampler.setState(state.samplerState)
    history = [...state.history]
    step = state.step
    startEpoch = state.epoch
    bestEpoch = state.bestEpoch
    bestValLoss = state.bestValLoss ?? Number.POSITIVE_INFINITY
  }

  for (let epoch = startEpoch + 1; epoch <= options.epochs; epoch++) {
    const started = performance.now()
    let lossSum = 0
    let discriminatorLossSum = 0
    for (let batchIndex = 0; batchIndex < options.stepsPerEpoch; batchIndex++) {
      const tensors = toTensors(sampler.nextBatch(), config.model)
      const result = trainStep(networks, config, tensors, options.seed, step)
      tf.dispose([tensors.x, tensors.y])
      step += 1
      lossSum += result.loss
      discriminatorLossSum += result.discriminatorLoss ?? 0
      const elapsedSeconds = (performance.now() - started) / 1000
      options.onProgress?.({
        epoch,
        batchesDone: batchIndex + 1,
        batchesTotal: options.stepsPerEpoch,
        loss: result.loss,
        batchesPerSecond: (batchIndex + 1) / elapsedSeconds
      })
    }
    const validation = await validate(networks.model, config, options.validation)
    const isBest = validation.loss < bestValLoss
    if (isBest) {
      bestValLoss = validation.loss
      bestEpoch = epoch
    }
    const metrics: EpochMetrics = {
      epoch,
      loss: lossSum / options.stepsPerEpoch,
      valLoss: validation.loss,
      valFluidDice: validation.fluidDice,
      ...(networks.discriminator === undefined ? {} : { discriminatorLoss: discriminatorLossSum / options.stepsPerEpoch }),
      seconds: (performance.now() - started) / 1000,
      isBest
    }
    history.push(metrics)
    const state: TrainerState = {
      fingerprint,
      epoch,
      step,
      samplerState: sampler.getState(),
      history,
      bestEpoch,
      bestValLoss,
      accBeta: await readAccBeta(networks.optimizer),
      ...(networks.discriminatorOptimizer === undefined ? {} : { discriminatorAccBeta: await readAccBeta(networks.discriminatorOptimizer) })
    }
    await writeCheckpoint(options.checkpointDir, networks, state)
    await options.onEpoch?.(metrics)
  }

  networks.optimizer.dispose()
  networks.discriminatorOptimizer?.dispose()
  networks.discriminator?.dispose()
  return { model: networks.model, history, bestEpoch, bestValLoss, resumedFromEpoch: startEpoch }
}

export { loadModel } from "./model-io.ts"
