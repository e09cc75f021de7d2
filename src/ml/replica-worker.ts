/**
 * A training replica's thread (see replicas.ts). It builds the same networks as the
 * trainer. For every step it copies the shared weights in, computes its chunks' gradients
 * and updated batch-norm statistics from those weights, and writes them to the chunks'
 * shared slots.
 */
import { parentPort } from "node:worker_threads"
import * as tf from "@tensorflow/tfjs-core"
import { initBackend } from "./backend.ts"
import { readWeights, type ReplicaInit, type ReplicaReply, type ReplicaStep, tensorsToBuffer } from "./replicas.ts"
import { buildNetworkPair, chunkGradients, type NetworkPair, pairWeights, restore, snapshot, statefulWeights } from "./step.ts"

interface Replica {
  readonly init: ReplicaInit
  readonly networks: NetworkPair
}

let replica: Replica | undefined

async function start(init: ReplicaInit): Promise<void> {
  await initBackend({ backend: init.backend })
  replica = { init, networks: buildNetworkPair(init.config, init.seed) }
}

function runStep(message: ReplicaStep): void {
  if (replica === undefined) throw new Error("step before init")
  const { init, networks } = replica
  readWeights(pairWeights(networks), new Float32Array(init.buffers.weights))
  const stateful = statefulWeights(networks)
  const start = snapshot(stateful)
  const losses = new Float64Array(init.buffers.losses)
  for (const chunk of message.chunks) {
    restore(stateful, start)
    const tensors = { x: tf.tensor4d(chunk.x, chunk.xShape), y: tf.tensor3d(chunk.y, chunk.yShape, "int32") }
    const result = chunkGradients(networks, init.config, tensors, message.batchSize, message.seed, message.step, chunk.index, message.chunkCount)
    tensorsToBuffer(result.grads, init.buffers.grads[chunk.index]!)
    tensorsToBuffer(
      stateful.map((weight) => weight.read()),
      init.buffers.state[chunk.index]!
    )
    losses[chunk.index] = result.loss
    tf.dispose([tensors.x, tensors.y, ...result.grads])
  }
  tf.dispose(start)
}

if (parentPort !== null) {
  const port = parentPort
  port.on("message", (message: ReplicaInit | ReplicaStep) => {
    const reply = (value: ReplicaReply) => port.postMessage(value)
    const fail = (error: unknown) => reply({ type: "failed", message: error instanceof Error ? error.message : String(error) })
    if (message.type === "init") {
      start(message).then(() => reply({ type: "ready" }), fail)
      return
    }
    try {
      runStep(message)
      reply({ type: "done" })
    } catch (error) {
      fail(error)
    }
  })
}
