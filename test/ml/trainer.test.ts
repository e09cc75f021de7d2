import { spawn } from "node:child_process"
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import * as tf from "@tensorflow/tfjs-core"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../../src/ml/backend.ts"
import { loadModel } from "../../src/ml/model-io.ts"
import {
  type BatchSampler,
  BatchShapeError,
  CheckpointMismatchError,
  cropLabels,
  type EpochMetrics,
  methodAdversarial,
  methodOptimizer,
  type TrainConfig,
  TrainOptionsError,
  train
} from "../../src/ml/trainer.ts"
import type { PatchSampler } from "../../src/ml/patches.ts"
import { SyntheticSampler, tinyConfig } from "./fixtures/synthetic.ts"

// The patch sampler must satisfy the trainer's interface; tsc checks this assignment.
export const acceptsPatchSampler = (sampler: PatchSampler): BatchSampler => sampler

const here = dirname(fileURLToPath(import.meta.url))
const repoRoot = resolve(here, "../..")
const config: TrainConfig = { model: tinyConfig, optimizer: { ...methodOptimizer, learningRate: 1e-2 } }
const temporaryDirs: Array<string> = []

async function temporaryDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "octflow-train-"))
  temporaryDirs.push(dir)
  return dir
}

function sampler(seed = 5) {
  return new SyntheticSampler(seed, 4, tinyConfig.patchHeight, tinyConfig.patchWidth)
}

function validationBatches() {
  const source = new SyntheticSampler(99, 4, tinyConfig.patchHeight, tinyConfig.patchWidth)
  return [source.nextBatch(), source.nextBatch()]
}

function flatWeights(model: { getWeights(): Array<tf.Tensor> }): Float32Array {
  const parts = model.getWeights().map((w) => w.dataSync() as Float32Array)
  const joined = new Float32Array(parts.reduce((n, p) => n + p.length, 0))
  let offset = 0
  for (const part of parts) {
    joined.set(part, offset)
    offset += part.length
  }
  return joined
}

afterEach(async () => {
  for (const dir of temporaryDirs.splice(0)) await rm(dir, { recursive: true, force: true })
})

describe("cropLabels", () => {
  it("centre 2x2 of 4x4", () => {
    const labels = Uint8Array.from({ length: 16 }, (_, i) => i)
    expect(Array.from(cropLabels(labels, 1, 4, 4, 2, 2))).toEqual([5, 6, 9, 10])
  })

  it("odd margin drops more at the end", () => {
    const labels = Uint8Array.from({ length: 15 }, (_, i) => i)
    // 3 rows x 5 columns to 1 x 2: top 1, left 1.
    expect(Array.from(cropLabels(labels, 1, 3, 5, 1, 2))).toEqual([6, 7])
  })
})

describe("train on cpu", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
  })

  it("lowers the loss", async () => {
    const epochs: Array<EpochMetrics> = []
    const result = await train(config, sampler(), {
      epochs: 4,
      stepsPerEpoch: 8,
      validation: validationBatches(),
      checkpointDir: await temporaryDir(),
      seed: 3,
      onEpoch: (metrics) => {
        epochs.push(metrics)
      }
    })
    expect(epochs.length).toBe(4)
    expect(epochs[3]!.loss).toBeLessThan(epochs[0]!.loss)
    expect(epochs[3]!.valLoss).toBeLessThan(epochs[0]!.valLoss)
    result.model.dispose()
  })

  it("same seed same weights", async () => {
    const run = async () => {
      const result = await train(config, sampler(), {
        epochs: 1,
        stepsPerEpoch: 3,
        validation: validationBatches(),
        checkpointDir: await temporaryDir(),
        seed: 8
      })
      const weights = flatWeights(result.model)
      result.model.dispose()
      return weights
    }
    const first = await run()
    const second = await run()
    expect(Buffer.from(second.buffer).equals(Buffer.from(first.buffer))).toBe(true)
  })

  it("other seed other weights", async () => {
    const run = async (seed: number) => {
      const result = await train(config, sampler(), { epochs: 1, stepsPerEpoch: 1, validation: validationBatches(), checkpointDir: await temporaryDir(), seed })
      const weights = flatWeights(result.model)
      result.model.dispose()
      return weights
    }
    const first = await run(1)
    const second = await run(2)
    expect(Buffer.from(second.buffer).equals(Buffer.from(first.buffer))).toBe(false)
  })

  it("tensor count flat across epochs", async () => {
    const counts: Array<number> = []
    const result = await train(config, sampler(), {
      epochs: 4,
      stepsPerEpoch: 2,
      validation: validationBatches(),
      checkpointDir: await temporaryDir(),
      seed: 4,
      onEpoch: () => {
        counts.push(tf.memory().numTensors)
      }
    })
    // Adam creates its moment variables on the first step, so epochs 2..4 must match epoch 1.
    for (const count of counts.slice(1)) expect(count).toBe(counts[0])
    result.model.dispose()
  })

  it("reports progress per batch", async () => {
    const done: Array<number> = []
    const result = await train(config, sampler(), {
      epochs: 1,
      stepsPerEpoch: 3,
      validation: validationBatches(),
      checkpointDir: await temporaryDir(),
      seed: 4,
      onProgress: (progress) => {
        done.push(progress.batchesDone)
        expect(progress.batchesPerSecond).toBeGreaterThan(0)
      }
    })
    expect(done).toEqual([1, 2, 3])
    result.model.dispose()
  })

  it("writes epoch, best and last checkpoints", async () => {
    const dir = await temporaryDir()
    const result = await train(config, sampler(), { epochs: 2, stepsPerEpoch: 2, validation: validationBatches(), checkpointDir: dir, seed: 4 })
    const entries = (await readdir(dir)).sort()
    expect(entries).toEqual(["best", "epoch-0001", "epoch-0002", "last.json"])
    const last = JSON.parse(await readFile(join(dir, "last.json"), "utf8"))
    expect(last.epoch).toBe(2)
    const loaded = await loadModel(join(dir, "epoch-0002", "model"))
    expect(Buffer.from(flatWeights(loaded).buffer).equals(Buffer.from(flatWeights(result.model).buffer))).toBe(true)
    loaded.dispose()
    result.model.dispose()
  })

  it("rejects a checkpoint of another config", async () => {
    const dir = await temporaryDir()
    const first = await train(config, sampler(), { epochs: 1, stepsPerEpoch: 1, validation: validationBatches(), checkpointDir: dir, seed: 4 })
    first.model.dispose()
    const other = { ...config, optimizer: { ...config.optimizer, learningRate: 1e-3 } }
    await expect(train(other, sampler(), { epochs: 2, stepsPerEpoch: 1, validation: validationBatches(), checkpointDir: dir, seed: 4 })).rejects.toThrow(CheckpointMismatchError)
  })

  it("rejects a batch of the wrong size", async () => {
    const wrong = new SyntheticSampler(1, 4, 20, 20)
    await expect(train(config, wrong, { epochs: 1, stepsPerEpoch: 1, validation: validationBatches(), checkpointDir: await temporaryDir(), seed: 4 })).rejects.toThrow(BatchShapeError)
  })

  it("micro-batches lower the loss", async () => {
    const counts: Array<number> = []
    const result = await train({ ...config, microBatchSize: 2 }, sampler(), {
      epochs: 3,
      stepsPerEpoch: 8,
      validation: validationBatches(),
      checkpointDir: await temporaryDir(),
      seed: 3,
      onEpoch: () => {
        counts.push(tf.memory().numTensors)
      }
    })
    expect(result.history[2]!.loss).toBeLessThan(result.history[0]!.loss)
    expect(counts[2]).toBe(counts[1])
    result.model.dispose()
  })

  it("one micro-batch equals the whole batch", async () => {
    const run = async (microBatchSize?: number) => {
      const result = await train({ ...config, microBatchSize }, sampler(), { epochs: 1, stepsPerEpoch: 2, validation: validationBatches(), checkpointDir: await temporaryDir(), seed: 6 })
      const weights = flatWeights(result.model)
      result.model.dispose()
      return weights
    }
    const whole = await run(undefined)
    const single = await run(4)
    expect(Buffer.from(single.buffer).equals(Buffer.from(whole.buffer))).toBe(true)
  })

  it("threads do not change the weights", async () => {
    const run = async (threads: number) => {
      const result = await train({ ...config, microBatchSize: 1 }, sampler(), {
        epochs: 2,
        stepsPerEpoch: 2,
        validation: validationBatches(),
        checkpointDir: await temporaryDir(),
        seed: 8,
        threads
      })
      const weights = flatWeights(result.model)
      const topology = JSON.stringify(result.model.toJSON(null, false))
      result.model.dispose()
      return { weights, topology, losses: result.history.map((epoch) => epoch.loss) }
    }
    const one = await run(1)
    const two = await run(2)
    const three = await run(3)
    expect(two.losses).toEqual(one.losses)
    expect(three.losses).toEqual(one.losses)
    // The saved model.json holds each Dropout layer's seed, which must not depend on threads either.
    expect(two.topology).toBe(one.topology)
    expect(three.topology).toBe(one.topology)
    expect(Buffer.from(two.weights.buffer).equals(Buffer.from(one.weights.buffer))).toBe(true)
    expect(Buffer.from(three.weights.buffer).equals(Buffer.from(one.weights.buffer))).toBe(true)
  })

  it("weight decay of a second discriminator", async () => {
    const { buildDiscriminator, weightDecayLoss } = await import("../../src/ml/discriminator.ts")
    const build = () => buildDiscriminator({ height: 8, width: 8, numClasses: 2, convLayers: 2, filters: 4, weightDecay: 1e-3, seed: 3 })
    const first = build()
    const second = build()
    // The second model's weights get suffixed names; both must count their kernels.
    const [a, b] = [weightDecayLoss(first, 1e-3), weightDecayLoss(second, 1e-3)]
    expect(await b.data()).toEqual(await a.data())
    expect((await a.data())[0]).toBeGreaterThan(0)
    tf.dispose([a, b])
    first.dispose()
    second.dispose()
  })

  it("adversarial threads equal one", async () => {
    const adversarial: TrainConfig = { ...config, microBatchSize: 2, adversarial: { ...methodAdversarial, filters: 4 } }
    const run = async (threads: number) => {
      const result = await train(adversarial, sampler(), {
        epochs: 1,
        stepsPerEpoch: 2,
        validation: validationBatches(),
        checkpointDir: await temporaryDir(),
        seed: 9,
        threads
      })
      const weights = flatWeights(result.model)
      result.model.dispose()
      return { weights, history: result.history.map(({ seconds: _seconds, ...epoch }) => epoch) }
    }
    const one = await run(1)
    const two = await run(2)
    expect(two.history).toEqual(one.history)
    expect(Buffer.from(two.weights.buffer).equals(Buffer.from(one.weights.buffer))).toBe(true)
  })

  it("threads keep the tensor count flat", async () => {
    const counts: Array<number> = []
    const result = await train({ ...config, microBatchSize: 2 }, sampler(), {
      epochs: 3,
      stepsPerEpoch: 2,
      validation: validationBatches(),
      checkpointDir: await temporaryDir(),
      seed: 3,
      threads: 2,
      onEpoch: () => {
        counts.push(tf.memory().numTensors)
      }
    })
    expect(counts[2]).toBe(counts[1])
    result.model.dispose()
  })

  it("rejects zero threads", async () => {
    await expect(
      train(config, sampler(), { epochs: 1, stepsPerEpoch: 1, validation: validationBatches(), checkpointDir: await temporaryDir(), seed: 4, threads: 0 })
    ).rejects.toThrow(TrainOptionsError)
  })

  it("rejects a zero micro-batch size", async () => {
    await expect(train({ ...config, microBatchSize: 0 }, sampler(), { epochs: 1, stepsPerEpoch: 1, validation: validationBatches(), checkpointDir: await temporaryDir(), seed: 4 })).rejects.toThrow(TrainOptionsError)
  })

  it("adversarial variant trains both networks", async () => {
    const adversarial: TrainConfig = { ...config, adversarial: { ...methodAdversarial, filters: 4 } }
    const dir = await temporaryDir()
    const result = await train(adversarial, sampler(), { epochs: 2, stepsPerEpoch: 2, validation: validationBatches(), checkpointDir: dir, seed: 4 })
    expect(result.history[1]!.discriminatorLoss).toBeGreaterThan(0)
    expect((await readdir(join(dir, "epoch-0002"))).includes("discriminator")).toBe(true)
    result.model.dispose()
  })
})

function runChild(args: ReadonlyArray<string>, killOn?: string): Promise<{ code: number | null; signal: string | null; stdout: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(here, "fixtures", "train-child.ts"), ...args], { cwd: repoRoot })
    let stdout = ""
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString()
      if (killOn !== undefined && stdout.includes(killOn)) child.kill("SIGKILL")
    })
    child.on("error", reject)
    child.on("close", (code, signal) => resolvePromise({ code, signal, stdout }))
  })
}

describe("resume", () => {
  it("after SIGKILL matches uninterrupted run", async () => {
    const dir = await temporaryDir()
    const straightDir = join(dir, "straight")
    const resumedDir = join(dir, "resumed")
    const straight = await runChild([straightDir, join(dir, "straight.bin"), "3"])
    expect(straight.code).toBe(0)

    const killed = await runChild([resumedDir, join(dir, "unused.bin"), "3", "--pause-after-epoch-1"], "epoch 1\n")
    expect(killed.signal).toBe("SIGKILL")
    const resumed = await runChild([resumedDir, join(dir, "resumed.bin"), "3"])
    expect(resumed.code).toBe(0)
    expect(resumed.stdout).toContain("resumed=1")
    // The resume is reported before the first epoch it trains, not after training.
    expect(resumed.stdout).toMatch(/^resuming after epoch 1\nepoch 2\n/)

    const a = await readFile(join(dir, "straight.bin"))
    const b = await readFile(join(dir, "resumed.bin"))
    expect(b.length).toBe(a.length)
    expect(b.equals(a)).toBe(true)
  }, 120_000)
})
