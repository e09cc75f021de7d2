/**
 * The parts of a training step that the trainer and its replica threads share: the
 * networks, the generator objective, dropout seeding, and the gradients of one
 * micro-batch ("chunk").
 *
 * A batch of B samples with micro-batch size m is split into K = ceil(B / m) chunks. Chunk k
 * of step t computes the gradients of (size_k / B) * objective(chunk k) from the weights
 * at the start of step t, with the dropout seeds of (t * K + k). Each chunk's forward pass
 * starts from the step's batch-norm moving statistics. The step's gradient is the sum over
 * k in order, and its moving statistics the mean over k of each chunk's updated statistics. No chunk depends on another, so chunks may run on any thread and the
 * result is the same bit for bit.
 */
import * as tf from "@tensorflow/tfjs-core"
import type * as tfl from "@tensorflow/tfjs-layers"
import { buildDiscriminator, type DiscriminatorConfig, discriminatorPair } from "./discriminator.ts"
import { generatorLoss, segmentationLossParts } from "./loss.ts"
import type { TrainConfig } from "./trainer.ts"
import { buildUnet, dropoutLayers, outputSize } from "./unet.ts"

/** One (micro-)batch as tensors: x [b, h, w, 3] and labels y [b, outH, outW] (int32, 255 unlabelled). */
export interface BatchTensors {
  readonly x: tf.Tensor4D
  readonly y: tf.Tensor3D
}

/** The U-Net and, for the adversarial variant, the discriminator. */
export interface NetworkPair {
  readonly model: tfl.LayersModel
  readonly discriminator?: tfl.LayersModel
}

/** Builds the networks of `config` with initialisers seeded from `seed`. */
export function buildNetworkPair(config: TrainConfig, seed: number): NetworkPair {
  const model = buildUnet({ ...config.model, seed })
  if (config.adversarial === undefined) return { model }
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
  return { model, discriminator: buildDiscriminator(discriminatorConfig) }
}

/** Returns every weight of the pair in a fixed order: the U-Net's, then the discriminator's. */
export function pairWeights(networks: NetworkPair): Array<tfl.LayerVariable> {
  return [...networks.model.weights, ...(networks.discriminator?.weights ?? [])]
}

/** Non-trainable weights (batch-norm moving statistics) that a training forward pass updates. */
export function statefulWeights(networks: NetworkPair): Array<tfl.LayerVariable> {
  return [...networks.model.nonTrainableWeights, ...(networks.discriminator?.nonTrainableWeights ?? [])]
}

export function trainableVariables(model: tfl.LayersModel): Array<tf.Variable> {
  return model.trainableWeights.map((w) => (w as unknown as { val: tf.Variable }).val)
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

export function setDropoutSeeds(model: tfl.LayersModel, seed: number, step: number): void {
  for (const [index, layer] of dropoutLayers(model).entries()) {
    // tfjs-layers' Dropout reads `seed` on every call, so setting it per step varies the mask.
    ;(layer as unknown as { seed: number }).seed = dropoutSeed(seed, step, index)
  }
}

/** Returns the seed of each dropout layer, to put back with restoreDropoutSeeds. */
export function dropoutSeedsOf(model: tfl.LayersModel): Array<number> {
  return dropoutLayers(model).map((layer) => (layer as unknown as { seed: number }).seed)
}

/**
 * Puts back dropout seeds read by dropoutSeedsOf. The seeds are part of each Dropout
 * layer's config in a saved model.json, so the trainer restores the build's seeds after
 * every step: a saved model then does not depend on which thread ran the last micro-batch.
 */
export function restoreDropoutSeeds(model: tfl.LayersModel, seeds: ReadonlyArray<number>): void {
  for (const [index, layer] of dropoutLayers(model).entries()) (layer as unknown as { seed: number }).seed = seeds[index]!
}

/** Computes the U-Net's loss on one (micro-)batch: segmentation loss plus any adversarial term. */
export function generatorObjective(networks: NetworkPair, config: TrainConfig, chunk: BatchTensors): tf.Scalar {
  const probabilities = networks.model.apply(chunk.x, { training: true }) as tf.Tensor4D
  const segmentation = segmentationLossParts(probabilities, chunk.y, { diceEpsilon: config.diceEpsilon }).loss
  if (networks.discriminator === undefined || config.adversarial === undefined) return segmentation
  const judged = networks.discriminator.apply(discriminatorPair(chunk.x, probabilities), { training: true }) as tf.Tensor
  return generatorLoss(segmentation, judged, config.adversarial.weights)
}

/** Splits a batch along axis 0 into chunks of at most `size` samples (the caller disposes them). */
export function splitBatch(batch: BatchTensors, size: number): Array<BatchTensors> {
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

/** A chunk's weighted loss and the gradients of the U-Net's trainable variables, in their order. */
export interface ChunkGradients {
  readonly loss: number
  readonly grads: Array<tf.Tensor>
}

/**
 * Computes chunk `index` of `chunkCount` at step `step` (see the module header). The
 * caller restores the stateful weights before the call and disposes the gradients.
 */
export function chunkGradients(
  networks: NetworkPair,
  config: TrainConfig,
  chunk: BatchTensors,
  batchSize: number,
  seed: number,
  step: number,
  index: number,
  chunkCount: number
): ChunkGradients {
  setDropoutSeeds(networks.model, seed, step * chunkCount + index)
  const variables = trainableVariables(networks.model)
  const weight = chunk.x.shape[0] / batchSize
  const { value, grads } = tf.variableGrads(() => tf.mul(weight, generatorObjective(networks, config, chunk)) as tf.Scalar, variables)
  const loss = value.dataSync()[0]!
  value.dispose()
  return { loss, grads: variables.map((variable) => grads[variable.name]!) }
}

/** Copies each weight's current values into a new tensor. */
export function snapshot(weights: ReadonlyArray<tfl.LayerVariable>): Array<tf.Tensor> {
  return weights.map((weight) => tf.clone(weight.read()))
}

/** Writes values (same order and shapes) into the weights. */
export function restore(weights: ReadonlyArray<tfl.LayerVariable>, values: ReadonlyArray<tf.Tensor>): void {
  weights.forEach((weight, index) => weight.write(values[index]!))
}
