/**
 * Replicas of the networks in worker threads, so that a training step's chunks (see
 * step.ts) run on several cores. The trainer's own thread is replica 0 and computes chunks
 * 0, R, 2R, ...; worker w computes chunks w, w + R, ... of every step.
 *
 * Data crosses threads through SharedArrayBuffers:
 * - `weights`: every weight of the networks (pairWeights order), written by the trainer
 *   after each update and read by the workers at the start of each step;
 * - `grads[k]`: chunk k's gradients (trainable variables in order), written by the worker
 *   that computed it;
 * - `state[k]`: chunk k's updated stateful weights (batch-norm moving statistics);
 * - `losses[k]`: chunk k's weighted loss.
 * Each step is one message to each worker and one reply back, so the trainer reads the
 * slots only after the worker has finished writing them.
 */
import type { Worker } from "node:worker_threads"
import * as tf from "@tensorflow/tfjs-core"
import type * as tfl from "@tensorflow/tfjs-layers"
import * as Data from "effect/Data"
import type { BackendName } from "./backend.ts"
import type { TrainConfig } from "./trainer.ts"
import { type BatchTensors, type NetworkPair, pairWeights, statefulWeights } from "./step.ts"
import { startModuleWorker } from "./threads.ts"

const workerModule = new URL("./replica-worker.ts", import.meta.url).href

export class ReplicaError extends Data.TaggedError("ReplicaError")<{
  readonly replica: number
  readonly reason: string
}> {
  override get message() {
    return `Training replica thread ${this.replica} failed: ${this.reason}. The last epoch checkpoint is kept; rerun to resume, or set OCTFLOW_TRAIN_THREADS=1 to train on one thread.`
  }
}

/** Offsets and sizes of the weights in the shared buffers, identical on every thread. */
export interface WeightLayout {
  readonly shapes: ReadonlyArray<ReadonlyArray<number>>
  /** Index into `shapes` of each trainable weight, in trainable order. */
  readonly trainable: ReadonlyArray<number>
  /** Index into `shapes` of each stateful weight. */
  readonly stateful: ReadonlyArray<number>
}

export interface SharedBuffers {
  readonly weights: SharedArrayBuffer
  readonly grads: ReadonlyArray<SharedArrayBuffer>
  readonly state: ReadonlyArray<SharedArrayBuffer>
  readonly losses: SharedArrayBuffer
}

export interface ReplicaInit {
  readonly type: "init"
  readonly replica: number
  readonly backend: BackendName
  readonly config: TrainConfig
  readonly seed: number
  readonly layout: WeightLayout
  readonly buffers: SharedBuffers
}

export interface ChunkData {
  readonly index: number
  readonly x: Float32Array
  readonly xShape: [number, number, number, number]
  readonly y: Int32Array
  readonly yShape: [number, number, number]
}

export interface ReplicaStep {
  readonly type: "step"
  readonly step: number
  readonly seed: number
  readonly batchSize: number
  readonly chunkCount: number
  readonly chunks: ReadonlyArray<ChunkData>
}

export type ReplicaReply = { readonly type: "ready" } | { readonly type: "done" } | { readonly type: "failed"; readonly message: string }

const size = (shape: ReadonlyArray<number | null>) => shape.reduce<number>((a, b) => a * (b ?? 1), 1)

/** A layer weight's shape; weights always have concrete dimensions. */
const shapeOf = (weight: tfl.LayerVariable): Array<number> => weight.shape.map((dim) => dim ?? 1)

export function layoutOf(networks: NetworkPair): WeightLayout {
  const weights = pairWeights(networks)
  const indexOf = new Map(weights.map((weight, index) => [weight, index]))
  const trainable = [...networks.model.trainableWeights].map((weight) => indexOf.get(weight)!)
  return {
    shapes: weights.map(shapeOf),
    trainable,
    stateful: statefulWeights(networks).map((weight) => indexOf.get(weight)!)
  }
}

/** Float offsets of `indexes` packed one after another, and their total. */
export function packedOffsets(layout: WeightLayout, indexes: ReadonlyArray<number>): { offsets: Array<number>; total: number } {
  const offsets: Array<number> = []
  let total = 0
  for (const index of indexes) {
    offsets.push(total)
    total += size(layout.shapes[index]!)
  }
  return { offsets, total }
}

/** Copies the values of `weights` (all of one network pair, pairWeights order) into `target`. */
export function writeWeights(weights: ReadonlyArray<tfl.LayerVariable>, target: Float32Array): void {
  let offset = 0
  for (const weight of weights) {
    const values = weight.read().dataSync() as Float32Array
    target.set(values, offset)
    offset += values.length
  }
}

/** Sets `weights` from `source`, the layout writeWeights produces. */
export function readWeights(weights: ReadonlyArray<tfl.LayerVariable>, source: Float32Array): void {
  let offset = 0
  for (const weight of weights) {
    const count = size(weight.shape)
    const value = tf.tensor(source.subarray(offset, offset + count), shapeOf(weight), "float32")
    weight.write(value)
    value.dispose()
    offset += count
  }
}

/** Tensors of the values in `buffer` at the packed offsets of `indexes`. */
export function tensorsFromBuffer(layout: WeightLayout, indexes: ReadonlyArray<number>, buffer: SharedArrayBuffer): Array<tf.Tensor> {
  const view = new Float32Array(buffer)
  const { offsets } = packedOffsets(layout, indexes)
  return indexes.map((index, position) => {
    const shape = layout.shapes[index]!
    return tf.tensor(view.subarray(offsets[position]!, offsets[position]! + size(shape)), [...shape], "float32")
  })
}

/** Writes tensors (shapes of `indexes`, in order) into `buffer` at their packed offsets. */
export function tensorsToBuffer(tensors: ReadonlyArray<tf.Tensor>, buffer: SharedArrayBuffer): void {
  const view = new Float32Array(buffer)
  let offset = 0
  for (const tensor of tensors) {
    const values = tensor.dataSync() as Float32Array
    view.set(values, offset)
    offset += values.length
  }
}

interface WorkerSlot {
  readonly worker: Worker
  readonly replica: number
  pending: { resolve: () => void; reject: (error: ReplicaError) => void } | undefined
  failure: ReplicaError | undefined
}

/** The worker threads of replicas 1..R-1 and the buffers they share with the trainer. */
export class ReplicaPool {
  readonly buffers: SharedBuffers
  private readonly slots: Array<WorkerSlot> = []

  private constructor(
    readonly replicas: number,
    readonly layout: WeightLayout,
    buffers: SharedBuffers
  ) {
    this.buffers = buffers
  }

  /** Starts replicas - 1 workers with networks like `networks`, and waits until each has built them. */
  static async start(
    replicas: number,
    networks: NetworkPair,
    config: TrainConfig,
    seed: number,
    backend: BackendName,
    chunkCount: number
  ): Promise<ReplicaPool> {
    const layout = layoutOf(networks)
    const all = layout.shapes.map((_, index) => index)
    const floats = (indexes: ReadonlyArray<number>) => packedOffsets(layout, indexes).total * 4
    const buffers: SharedBuffers = {
      weights: new SharedArrayBuffer(floats(all)),
      grads: Array.from({ length: chunkCount }, () => new SharedArrayBuffer(floats(layout.trainable))),
      state: Array.from({ length: chunkCount }, () => new SharedArrayBuffer(Math.max(4, floats(layout.stateful)))),
      losses: new SharedArrayBuffer(8 * chunkCount)
    }
    const pool = new ReplicaPool(replicas, layout, buffers)
    try {
      await Promise.all(
        Array.from({ length: replicas - 1 }, (_, w) => pool.spawn({ type: "init", replica: w + 1, backend, config, seed, layout, buffers }))
      )
    } catch (error) {
      await pool.close()
      throw error
    }
    return pool
  }

  /** Copies the trainer's current weights into the shared buffer the workers read. */
  publishWeights(networks: NetworkPair): void {
    writeWeights(pairWeights(networks), new Float32Array(this.buffers.weights))
  }

  /** Replica that computes chunk `index`. */
  replicaOf(index: number): number {
    return index % this.replicas
  }

  /**
   * Sends each worker its chunks of this step; the promise settles when all have written
   * their slots, or rejects with the first failure.
   */
  runStep(step: number, seed: number, batchSize: number, chunks: ReadonlyArray<BatchTensors>): Promise<void> {
    const runs = this.slots.map((slot) => {
      const mine: Array<ChunkData> = []
      chunks.forEach((chunk, index) => {
        if (this.replicaOf(index) !== slot.replica) return
        mine.push({
          index,
          x: chunk.x.dataSync() as Float32Array,
          xShape: chunk.x.shape,
          y: Int32Array.from(chunk.y.dataSync()),
          yShape: chunk.y.shape
        })
      })
      const message: ReplicaStep = { type: "step", step, seed, batchSize, chunkCount: chunks.length, chunks: mine }
      return this.request(slot, message)
    })
    return Promise.all(runs).then(() => undefined)
  }

  lossOf(index: number): number {
    return new Float64Array(this.buffers.losses)[index]!
  }

  async close(): Promise<void> {
    const slots = this.slots.splice(0)
    await Promise.all(slots.map((slot) => slot.worker.terminate()))
  }

  private spawn(init: ReplicaInit): Promise<void> {
    const worker = startModuleWorker(workerModule)
    const slot: WorkerSlot = { worker, replica: init.replica, pending: undefined, failure: undefined }
    this.slots.push(slot)
    worker.on("message", (reply: ReplicaReply) => {
      const pending = slot.pending
      slot.pending = undefined
      if (reply.type === "failed") pending?.reject(new ReplicaError({ replica: slot.replica, reason: reply.message }))
      else pending?.resolve()
    })
    const fail = (reason: string) => {
      slot.failure ??= new ReplicaError({ replica: slot.replica, reason })
      const pending = slot.pending
      slot.pending = undefined
      pending?.reject(slot.failure)
    }
    worker.on("error", (error) => fail(error instanceof Error ? error.message : String(error)))
    worker.on("exit", (code) => fail(`the thread exited with code ${code}`))
    return this.request(slot, init)
  }

  private request(slot: WorkerSlot, message: ReplicaInit | ReplicaStep): Promise<void> {
    if (slot.failure !== undefined) return Promise.reject(slot.failure)
    return new Promise((resolve, reject) => {
      slot.pending = { resolve, reject }
      slot.worker.postMessage(message)
    })
  }
}
