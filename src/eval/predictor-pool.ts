/**
 * Tiled inference on several threads: worker threads that each load the trained model,
 * rebuild it for the inference tile size, and predict the tile batches they are sent. The
 * returned Predictor hands each predictBatch call to an idle worker, and its
 * `concurrency` is the number of B-scans inferVolume keeps in flight. A tile's
 * probabilities do not depend on the worker that computed them.
 */
import type { Worker } from "node:worker_threads"
import * as Data from "effect/Data"
import type { BackendName } from "../ml/backend.ts"
import { startModuleWorker } from "../ml/threads.ts"
import type { UnetConfig } from "../ml/unet.ts"
import type { Predictor } from "./infer.ts"

const workerModule = new URL("./predictor-worker.ts", import.meta.url).href

export class PredictorThreadError extends Data.TaggedError("PredictorThreadError")<{
  readonly thread: number
  readonly reason: string
}> {
  override get message() {
    return `Inference thread ${this.thread} failed: ${this.reason}. Rerun, or set OCTFLOW_THREADS=1 to predict on one thread.`
  }
}

export interface PredictorPoolOptions {
  readonly threads: number
  readonly backend: BackendName
  /** Folder with the trained model's model.json and weights.bin. */
  readonly modelDir: string
  readonly config: UnetConfig
  readonly tileHeight: number
  readonly tileWidth: number
}

export interface PredictorWorkerInit {
  readonly type: "init"
  readonly backend: BackendName
  readonly modelDir: string
  readonly config: UnetConfig
  readonly tileHeight: number
  readonly tileWidth: number
}

export interface PredictorWorkerRequest {
  readonly type: "predict"
  readonly x: Float32Array
}

export type PredictorWorkerReply =
  | {
      readonly type: "ready"
      readonly outputHeight: number
      readonly outputWidth: number
      readonly classCount: number
    }
  | { readonly type: "probabilities"; readonly values: Float32Array }
  | { readonly type: "failed"; readonly message: string }

interface Job {
  readonly x: Float32Array
  readonly resolve: (values: Float32Array) => void
  readonly reject: (error: PredictorThreadError) => void
}

interface Thread {
  readonly index: number
  readonly worker: Worker
  job: Job | undefined
  failure: PredictorThreadError | undefined
}

export interface PredictorPool {
  readonly predictor: Predictor
  readonly threads: number
  close(): Promise<void>
}

/** Starts `threads` inference workers and waits until each has built the model. */
export async function startPredictorPool(options: PredictorPoolOptions): Promise<PredictorPool> {
  const threads: Array<Thread> = []
  const queue: Array<Job> = []
  const readies: Array<Promise<Extract<PredictorWorkerReply, { type: "ready" }>>> = []

  const dispatch = () => {
    for (const thread of threads) {
      if (queue.length === 0) return
      if (thread.job !== undefined || thread.failure !== undefined) continue
      const job = queue.shift()!
      thread.job = job
      const request: PredictorWorkerRequest = { type: "predict", x: job.x }
      thread.worker.postMessage(request, [job.x.buffer as ArrayBuffer])
    }
    if (queue.length > 0 && threads.every((thread) => thread.failure !== undefined)) {
      for (const job of queue.splice(0)) job.reject(threads[0]!.failure!)
    }
  }

  for (let index = 0; index < options.threads; index++) {
    const worker = startModuleWorker(workerModule)
    const thread: Thread = { index, worker, job: undefined, failure: undefined }
    threads.push(thread)
    readies.push(
      new Promise((resolve, reject) => {
        let ready = false
        const fail = (reason: string) => {
          thread.failure ??= new PredictorThreadError({ thread: index, reason })
          if (!ready) reject(thread.failure)
          const job = thread.job
          thread.job = undefined
          job?.reject(thread.failure)
          dispatch()
        }
        worker.on("message", (reply: PredictorWorkerReply) => {
          if (reply.type === "failed") return fail(reply.message)
          if (reply.type === "ready") {
            ready = true
            resolve(reply)
            return
          }
          const job = thread.job
          thread.job = undefined
          job?.resolve(reply.values)
          dispatch()
        })
        worker.on("error", (error) => fail(error instanceof Error ? error.message : String(error)))
        worker.on("exit", (code) => fail(`the thread exited with code ${code}`))
      })
    )
    const init: PredictorWorkerInit = {
      type: "init",
      backend: options.backend,
      modelDir: options.modelDir,
      config: options.config,
      tileHeight: options.tileHeight,
      tileWidth: options.tileWidth
    }
    worker.postMessage(init)
  }

  const close = async () => {
    const stopping = threads.splice(0)
    for (const thread of stopping) thread.failure ??= new PredictorThreadError({ thread: thread.index, reason: "the pool was closed" })
    await Promise.all(stopping.map((thread) => thread.worker.terminate()))
  }

  let shape: Extract<PredictorWorkerReply, { type: "ready" }>
  try {
    shape = (await Promise.all(readies))[0]!
  } catch (error) {
    await close()
    throw error
  }

  const predictor: Predictor = {
    inputHeight: options.tileHeight,
    inputWidth: options.tileWidth,
    outputHeight: shape.outputHeight,
    outputWidth: shape.outputWidth,
    classCount: shape.classCount,
    concurrency: options.threads,
    predictBatch: (x) =>
      new Promise<Float32Array>((resolve, reject) => {
        // The input is transferred to the worker, so the caller's array is copied first.
        queue.push({ x: x.slice(), resolve, reject })
        dispatch()
      })
  }
  return { predictor, threads: options.threads, close }
}
