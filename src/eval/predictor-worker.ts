/**
 * An inference thread of predictor-pool.ts: loads the trained model, rebuilds it for the
 * tile size, and replies to each batch of input tiles with their softmax probabilities.
 */
import { parentPort } from "node:worker_threads"
import { initBackend } from "../ml/backend.ts"
import { loadModel } from "../ml/model-io.ts"
import { buildUnetForInput } from "../ml/unet.ts"
import { type Predictor, predictorFromModel } from "./infer.ts"
import type { PredictorWorkerInit, PredictorWorkerReply, PredictorWorkerRequest } from "./predictor-pool.ts"

let predictor: Predictor | undefined

async function start(init: PredictorWorkerInit): Promise<Predictor> {
  await initBackend({ backend: init.backend })
  const trained = await loadModel(init.modelDir)
  const model = buildUnetForInput(init.config, trained, init.tileHeight, init.tileWidth)
  trained.dispose()
  return predictorFromModel(model)
}

if (parentPort !== null) {
  const port = parentPort
  const reply = (message: PredictorWorkerReply, transfer: Array<ArrayBuffer> = []) => port.postMessage(message, transfer)
  const fail = (error: unknown) => reply({ type: "failed", message: error instanceof Error ? error.message : String(error) })
  port.on("message", (message: PredictorWorkerInit | PredictorWorkerRequest) => {
    if (message.type === "init") {
      start(message).then((ready) => {
        predictor = ready
        reply({ type: "ready", outputHeight: ready.outputHeight, outputWidth: ready.outputWidth, classCount: ready.classCount })
      }, fail)
      return
    }
    if (predictor === undefined) return fail(new Error("predict request before the model was loaded"))
    predictor.predictBatch(message.x).then((values) => {
      // values may be a view of a larger buffer; send a compact copy.
      const compact = values.byteOffset === 0 && values.byteLength === values.buffer.byteLength ? values : values.slice()
      reply({ type: "probabilities", values: compact }, [compact.buffer as ArrayBuffer])
    }, fail)
  })
}
