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
import { FusedAdamOptimizer } from "./adam.ts"
import type { BackendName } from "./backend.ts"
import { discriminatorPair, methodDiscriminator, weightDecayLoss } from "./discriminator.ts"
import { type AdversarialWeights, discriminatorLoss, methodAdversarialWeights, segmentationLossParts, UNLABELLED } from "./loss.ts"
import { loadModel, loadNamedTensors, replaceDir, saveModel, saveNamedTensors, writeFileAtomic } from "./model-io.ts"
import { ReplicaPool, tensorsFromBuffer } from "./replicas.ts"
import {
  type BatchTensors,
  buildNetworkPair,
  chunkGradients,
  dropoutSeedsOf,
  generatorObjective,
  type NetworkPair,
  restore,
  restoreDropoutSeeds,
  setDropoutSeeds,
  snapshot,
  splitBatch,
  statefulWeights,
  trainableVariables
} from "./step.ts"
import { outputSize, type UnetConfig } from "./unet.ts"

export { dropoutSeed } from "./step.ts"

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
  /** Called once, before the first step, when training resumes after epoch `epoch` of a checkpoint. */
  readonly onResume?: (epoch: number) => void
  /**
   * Threads that compute a step's micro-batches (default 1): this thread and threads - 1
   * worker threads, each with its own copy of the networks. The result does not depend
   * on it. Used with the wasm and cpu backends when a batch has several micro-batches.
   */
  readonly threads?: number
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
  return new FusedAdamOptimizer(config.learningRate, config.beta1, config.beta2, config.epsilon)
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

interface Networks extends NetworkPair {
  readonly optimizer: tf.AdamOptimizer
  readonly discriminatorOptimizer?: tf.AdamOptimizer
  /** The U-Net's dropout seeds as built, restored after every step. */
  readonly dropoutSeeds: ReadonlyArray<number>
}

interface StepResult {
  readonly loss: number
  readonly discriminatorLoss?: number
}

/**
 * Updates the U-Net once and returns its loss. With config.microBatchSize below the batch
 * size, the batch is split into chunks whose gradients are summed before one Adam update,
 * each chunk's loss weighted by its share of the batch. step.ts gives the exact rule, and
 * `replicas` spreads the chunks over threads without changing the result.
 * NOTE: batch norm then normalises with micro-batch statistics, and the class-balanced
 * cross-entropy is balanced per micro-batch, so this is close to, not equal to, a
 * whole-batch step.
 */
async function generatorUpdate(
  networks: Networks,
  config: TrainConfig,
  batch: BatchTensors,
  seed: number,
  step: number,
  replicas: ReplicaPool | undefined,
  whileWaiting: () => void
): Promise<number> {
  const variables = trainableVariables(networks.model)
  const total = batch.x.shape[0]
  const microBatchSize = config.microBatchSize ?? total
  if (microBatchSize >= total) {
    setDropoutSeeds(networks.model, seed, step)
    const loss = tf.tidy(() => {
      const cost = networks.optimizer.minimize(() => generatorObjective(networks, config, batch), true, variables)
      return cost!.dataSync()[0]!
    })
    whileWaiting()
    return loss
  }

  const chunks = splitBatch(batch, microBatchSize)
  let remote: Promise<void> | undefined
  if (replicas !== undefined) {
    replicas.publishWeights(networks)
    remote = replicas.runStep(step, seed, total, chunks)
    // A rejection is raised by the await below; this keeps it from counting as unhandled meanwhile.
    remote.catch(() => undefined)
  }
  const isLocal = (index: number) => replicas === undefined || replicas.replicaOf(index) === 0
  const stateful = statefulWeights(networks)
  const start = snapshot(stateful)
  const local = new Map<number, { loss: number; grads: Array<tf.Tensor>; state: Array<tf.Tensor> }>()
  try {
    for (const [index, chunk] of chunks.entries()) {
      if (!isLocal(index)) continue
      restore(stateful, start)
      const result = chunkGradients(networks, config, chunk, total, seed, step, index, chunks.length)
      local.set(index, { ...result, state: snapshot(stateful) })
    }
    // Work for the next step fills the time until the replicas are done.
    whileWaiting()
    await remote
  } catch (error) {
    tf.dispose([...start, ...[...local.values()].flatMap((r) => [...r.grads, ...r.state])])
    throw error
  } finally {
    tf.dispose(chunks.flatMap((chunk) => [chunk.x, chunk.y]))
  }

  // Gradients and statistics are combined in chunk order, whichever thread computed them.
  let lossSum = 0
  let gradSums: Array<tf.Tensor> | undefined
  let stateSums: Array<tf.Tensor> | undefined
  const accumulate = (sums: Array<tf.Tensor> | undefined, next: Array<tf.Tensor>) => {
    if (sums === undefined) return next
    const added = sums.map((sum, position) => tf.add(sum, next[position]!))
    tf.dispose([...sums, ...next])
    return added
  }
  for (let index = 0; index < chunks.length; index++) {
    const mine = local.get(index)
    const part = mine ?? {
      loss: replicas!.lossOf(index),
      grads: tensorsFromBuffer(replicas!.layout, replicas!.layout.trainable, replicas!.buffers.grads[index]!),
      state: tensorsFromBuffer(replicas!.layout, replicas!.layout.stateful, replicas!.buffers.state[index]!)
    }
    lossSum += part.loss
    gradSums = accumulate(gradSums, part.grads)
    stateSums = accumulate(stateSums, part.state)
  }
  const means = stateSums!.map((sum) => tf.div(sum, chunks.length))
  restore(stateful, means)
  tf.dispose([...start, ...stateSums!, ...means])
  networks.optimizer.applyGradients(variables.map((variable, position) => ({ name: variable.name, tensor: gradSums![position]! })))
  tf.dispose(gradSums!)
  return lossSum
}

/** One optimisation step on one batch; returns the generator (segmentation) loss. */
async function trainStep(
  networks: Networks,
  config: TrainConfig,
  batch: BatchTensors,
  seed: number,
  step: number,
  replicas: ReplicaPool | undefined,
  whileWaiting: () => void
): Promise<StepResult> {
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
  const loss = await generatorUpdate(networks, config, batch, seed, generatorStep, replicas, whileWaiting)
  restoreDropoutSeeds(model, networks.dropoutSeeds)
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
  const pair = buildNetworkPair(config, seed)
  return {
    ...pair,
    dropoutSeeds: dropoutSeedsOf(pair.model),
    optimizer: makeAdam(config.optimizer),
    ...(pair.discriminator === undefined ? {} : { discriminatorOptimizer: makeAdam(config.optimizer) })
  }
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

/**
 * Starts the worker replicas when options.threads > 1 and a batch splits into several
 * micro-batches, on the wasm or cpu backend (the native backends use their own threads).
 */
async function startReplicas(networks: Networks, config: TrainConfig, options: TrainOptions): Promise<ReplicaPool | undefined> {
  const batchSize = options.validation[0]!.batchSize
  const chunkCount = Math.ceil(batchSize / (config.microBatchSize ?? batchSize))
  const replicas = Math.min(options.threads ?? 1, chunkCount)
  const backend = tf.getBackend()
  if (replicas < 2 || (backend !== "wasm" && backend !== "cpu")) return undefined
  return ReplicaPool.start(replicas, networks, config, options.seed, backend as BackendName, chunkCount)
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
  const threads = options.threads
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new TrainOptionsError({ field: "threads", expected: "an integer >= 1", actual: threads })
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
    options.onResume?.(startEpoch)
  }

  const replicas = await startReplicas(networks, config, options)
  try {
    await trainEpochs()
  } finally {
    await replicas?.close()
  }

  async function trainEpochs(): Promise<void> {
  for (let epoch = startEpoch + 1; epoch <= options.epochs; epoch++) {
    const started = performance.now()
    let lossSum = 0
    let discriminatorLossSum = 0
    // The next batch of the epoch is drawn while replicas compute this one. Draws stop at the
    // epoch's end, so the checkpointed sampler state is the one after the epoch's last batch.
    let nextBatch: Batch | undefined = sampler.nextBatch()
    for (let batchIndex = 0; batchIndex < options.stepsPerEpoch; batchIndex++) {
      const tensors = toTensors(nextBatch ?? sampler.nextBatch(), config.model)
      nextBatch = undefined
      const drawNext = () => {
        if (batchIndex + 1 < options.stepsPerEpoch) nextBatch = sampler.nextBatch()
      }
      const result = await trainStep(networks, config, tensors, options.seed, step, replicas, drawNext)
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
  }

  networks.optimizer.dispose()
  networks.discriminatorOptimizer?.dispose()
  networks.discriminator?.dispose()
  return { model: networks.model, history, bestEpoch, bestValLoss, resumedFromEpoch: startEpoch }
}

export { loadModel } from "./model-io.ts"
