import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../../src/ml/backend.ts"
import { buildDiscriminator, discriminatorPair } from "../../src/ml/discriminator.ts"
import { binaryCrossEntropy, segmentationLoss } from "../../src/ml/loss.ts"
import { methodOptimizer, train } from "../../src/ml/trainer.ts"
import { buildUnet } from "../../src/ml/unet.ts"
import { SyntheticSampler, tinyConfig } from "./fixtures/synthetic.ts"

// Every variable gradient of one U-Net + discriminator step, on the current backend.
function modelGradients(): Array<Float32Array> {
  const unet = buildUnet(tinyConfig)
  const discriminator = buildDiscriminator({ height: 8, width: 8, numClasses: 2, convLayers: 5, filters: 4, weightDecay: 1e-3, seed: 3 })
  const batch = new SyntheticSampler(7, 2, 24, 24).nextBatch()
  const x = tf.tensor4d(batch.x, [2, 24, 24, 3])
  const fullLabels = tf.tensor3d(Int32Array.from(batch.y), [2, 24, 24], "int32")
  const labels = tf.slice(fullLabels, [0, 8, 8], [2, 8, 8])
  const variables = [...unet.trainableWeights, ...discriminator.trainableWeights].map((w) => (w as unknown as { val: tf.Variable }).val)
  const { grads } = tf.variableGrads(() => {
    // Inference mode keeps dropout off so both backends run the same graph.
    const probabilities = unet.apply(x, { training: false }) as tf.Tensor4D
    const judged = discriminator.apply(discriminatorPair(x, probabilities)) as tf.Tensor
    return tf.add(segmentationLoss(probabilities, labels), binaryCrossEntropy(judged, 1)) as tf.Scalar
  }, variables)
  const values = variables.map((v) => grads[v.name]!.dataSync() as Float32Array)
  tf.dispose([x, fullLabels, labels, ...Object.values(grads)])
  unet.dispose()
  discriminator.dispose()
  return values
}

describe("training on wasm", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
    await initBackend({ backend: "wasm" })
  })

  it("gradients match cpu", async () => {
    await tf.setBackend("cpu")
    const reference = modelGradients()
    await tf.setBackend("wasm")
    const wasm = modelGradients()
    expect(wasm.length).toBe(reference.length)
    for (const [index, values] of wasm.entries()) {
      const expected = reference[index]!
      let maxDifference = 0
      let maxMagnitude = 0
      for (let i = 0; i < values.length; i++) {
        maxDifference = Math.max(maxDifference, Math.abs(values[i]! - expected[i]!))
        maxMagnitude = Math.max(maxMagnitude, Math.abs(expected[i]!))
      }
      expect(maxDifference).toBeLessThanOrEqual(1e-4 + 1e-3 * maxMagnitude)
    }
  })

  it("lowers the loss", async () => {
    await tf.setBackend("wasm")
    const dir = await mkdtemp(join(tmpdir(), "octflow-wasm-"))
    const validation = new SyntheticSampler(99, 4, 24, 24)
    // Our kernels free their intermediates with disposeData, which tensor counts do not see,
    // so the backend's own count of live buffers is checked too.
    const buffers: Array<number> = []
    const result = await train(
      { model: tinyConfig, optimizer: { ...methodOptimizer, learningRate: 1e-2 } },
      new SyntheticSampler(5, 4, 24, 24),
      {
        epochs: 3,
        stepsPerEpoch: 8,
        validation: [validation.nextBatch()],
        checkpointDir: dir,
        seed: 3,
        onEpoch: () => {
          buffers.push(tf.engine().backend.numDataIds())
        }
      }
    )
    expect(tf.getBackend()).toBe("wasm")
    expect(result.history[2]!.loss).toBeLessThan(result.history[0]!.loss)
    expect(buffers[2]).toBe(buffers[1])
    result.model.dispose()
    await rm(dir, { recursive: true, force: true })
  })

  it("two threads equal one", async () => {
    await tf.setBackend("wasm")
    const run = async (threads: number) => {
      const dir = await mkdtemp(join(tmpdir(), "octflow-wasm-threads-"))
      const result = await train(
        { model: tinyConfig, optimizer: methodOptimizer, microBatchSize: 1 },
        new SyntheticSampler(5, 4, 24, 24),
        { epochs: 2, stepsPerEpoch: 3, validation: [new SyntheticSampler(99, 4, 24, 24).nextBatch()], checkpointDir: dir, seed: 3, threads }
      )
      const weights = result.model.getWeights().flatMap((w) => Array.from(w.dataSync()))
      result.model.dispose()
      await rm(dir, { recursive: true, force: true })
      return weights
    }
    const one = await run(1)
    const two = await run(2)
    expect(two).toEqual(one)
  })

  it("a failed replica names itself", async () => {
    await tf.setBackend("wasm")
    const { ReplicaPool } = await import("../../src/ml/replicas.ts")
    const { buildNetworkPair } = await import("../../src/ml/step.ts")
    const config = { model: tinyConfig, optimizer: methodOptimizer }
    const networks = buildNetworkPair(config, 1)
    // An unknown backend makes the worker's initBackend fail.
    const start = ReplicaPool.start(2, networks, config, 1, "no-such-backend" as never, 2)
    await expect(start).rejects.toThrow(/Training replica thread 1 failed: Unknown TensorFlow.js backend "no-such-backend"/)
    networks.model.dispose()
  })
})
