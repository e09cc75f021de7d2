/**
 * Benchmarks U-Net training steps (through `train`, so trainer overhead counts) and
 * whole-B-scan inference on the wasm backend, against the same architecture, loss,
 * optimiser and batch in PyTorch on the CPU (bench/torch_unet_step.py, one and two
 * threads), for the cpu and paper configs. Writes bench/results/train.json.
 *
 * Training runs with the train stage's defaults: micro-batches of 4 (cpu) or 2 (paper)
 * spread over one thread per core, and again on one thread for the scaling. The cpu config
 * is also timed on one thread with the package's own forward kernels in place of this
 * project's. Inference segments a 496 x 512 B-scan (Spectralis size) with 512 x 512 tiles,
 * as the evaluate stage does, through the inference thread pool; PyTorch's tile time gives
 * its B-scans per second for the same tiling.
 *
 * Target: a wasm training step is no slower than a one-thread PyTorch step.
 * Usage: npx tsx bench/train.bench.ts [--quick]   (--quick: the cpu config only)
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { availableParallelism, tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import * as tf from "@tensorflow/tfjs-core"
// Imported before initBackend so that the package's own kernels can be read for comparison.
import "@tensorflow/tfjs-backend-wasm"
import { inferVolume, tileStarts } from "../src/eval/infer.ts"
import { startPredictorPool } from "../src/eval/predictor-pool.ts"
import { initBackend } from "../src/ml/backend.ts"
import { wasmForwardKernels } from "../src/ml/kernels/index.ts"
import { saveModel } from "../src/ml/model-io.ts"
import { type Batch, type BatchSampler, methodOptimizer, train } from "../src/ml/trainer.ts"
import { cpuConfig, outputSize, paperConfig, type UnetConfig } from "../src/ml/unet.ts"
import { makeVolume } from "../src/volume/volume.ts"
import { describeMachine, finishMachineRecord } from "./support/machine.ts"

const benchDir = dirname(fileURLToPath(import.meta.url))
const batchSize = 8
const bscan = { height: 496, width: 512 }
const tileSize = 512
const threads = availableParallelism()
const packageKernels = wasmForwardKernels.map((config) => tf.getKernel(config.kernelName, "wasm")!)

interface TorchResult {
  readonly torch: string
  readonly threads: number
  readonly output: [number, number]
  readonly step_ms: number
  readonly inference_batch_ms: number
  readonly tile_ms: number
}

interface Plan {
  readonly name: "cpu" | "paper"
  readonly config: UnetConfig
  readonly microBatchSize: number
  readonly warmupSteps: number
  readonly timedSteps: number
  /** B-scans segmented in the inference timing. */
  readonly bscans: number
}

function median(values: ReadonlyArray<number>): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/** Random patches and labels of the config's patch size, from a fixed seed. */
class RandomSampler implements BatchSampler {
  private readonly batch: Batch

  constructor(config: UnetConfig) {
    const pixels = batchSize * config.patchHeight * config.patchWidth
    const x = new Float32Array(pixels * 3)
    const y = new Uint8Array(pixels)
    let state = 12345
    for (let i = 0; i < x.length; i++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0
      x[i] = state / 2 ** 31 - 1
    }
    for (let i = 0; i < y.length; i++) y[i] = (i >> 7) % config.numClasses
    this.batch = { x, y, batchSize }
  }

  nextBatch(): Batch {
    return this.batch
  }

  getState(): unknown {
    return null
  }

  setState(): void {}
}

function useKernels(configs: ReadonlyArray<tf.KernelConfig>): void {
  for (const config of configs) {
    tf.unregisterKernel(config.kernelName, "wasm")
    tf.registerKernel(config)
  }
}

/** Trains through `train` and returns the median step time after the warm-up steps; saves the model when asked. */
async function timeTrainingSteps(plan: Plan, stepThreads: number, modelDir?: string): Promise<number> {
  const { config } = plan
  const sampler = new RandomSampler(config)
  const checkpointDir = mkdtempSync(join(tmpdir(), "octflow-train-bench-"))
  const stepMs: Array<number> = []
  let last = performance.now()
  const result = await train({ model: config, optimizer: methodOptimizer, microBatchSize: plan.microBatchSize }, sampler, {
    epochs: 1,
    stepsPerEpoch: plan.warmupSteps + plan.timedSteps,
    validation: [sampler.nextBatch()],
    checkpointDir,
    seed: 1,
    resume: false,
    threads: stepThreads,
    onProgress: (progress) => {
      const now = performance.now()
      if (progress.batchesDone > plan.warmupSteps) stepMs.push(now - last)
      last = now
    }
  })
  if (modelDir !== undefined) await saveModel(result.model, modelDir)
  result.model.dispose()
  rmSync(checkpointDir, { recursive: true, force: true })
  return median(stepMs)
}

/** Segments `plan.bscans` random 496 x 512 B-scans with 512 x 512 tiles on `poolThreads` threads. */
async function timeInference(plan: Plan, modelDir: string, poolThreads: number) {
  const pool = await startPredictorPool({
    threads: poolThreads,
    backend: "wasm",
    modelDir,
    config: plan.config,
    tileHeight: tileSize,
    tileWidth: tileSize
  })
  try {
    const volume = makeVolume("uint8", [bscan.width, bscan.height, plan.bscans], [0.0057, 0.0039, 0.12])
    for (let i = 0; i < volume.data.length; i++) volume.data[i] = (i * 2654435761) >>> 24
    const options = { heightScale: 1, batchSize: 1 }
    // One warm-up B-scan per thread, so every thread has compiled its kernels.
    await inferVolume({ ...volume, dims: [bscan.width, bscan.height, poolThreads], data: volume.data.subarray(0, bscan.width * bscan.height * poolThreads) }, pool.predictor, options)
    const started = performance.now()
    await inferVolume(volume, pool.predictor, options)
    const seconds = (performance.now() - started) / 1000
    return { threads: poolThreads, bscans: plan.bscans, bscansPerSecond: plan.bscans / seconds }
  } finally {
    await pool.close()
  }
}

function timeTorch(plan: Plan, torchThreads: number): TorchResult | { error: string } {
  const { config } = plan
  const args = [
    join(benchDir, "torch_unet_step.py"),
    ...["--threads", torchThreads, "--base", config.baseFilters, "--depth", config.depth].map(String),
    ...["--height", config.patchHeight, "--width", config.patchWidth, "--classes", config.numClasses].map(String),
    ...["--batch", batchSize, "--steps", plan.timedSteps, "--warmup", plan.warmupSteps, "--tile", tileSize].map(String)
  ]
  const result = spawnSync("/usr/bin/python3", args, { encoding: "utf8" })
  if (result.status !== 0) return { error: (result.stderr || result.error?.message || "python3 failed").trim().slice(-500) }
  return JSON.parse(result.stdout.trim().split("\n").pop()!) as TorchResult
}

/** Output tiles per B-scan, placed as inferVolume places them with its default overlap. */
function tilesPerBscan(config: UnetConfig): number {
  const out = outputSize(config, tileSize, tileSize)
  const overlap = Math.min(8, Math.floor(Math.min(out.height, out.width) / 4))
  return tileStarts(bscan.height, out.height, out.height - overlap).length * tileStarts(bscan.width, out.width, out.width - overlap).length
}

const quick = process.argv.includes("--quick")
// V8 compiles wasm and JavaScript with its fast tiers first and optimises hot functions
// later; cpu-config steps settle after about 15 (on Node 20.20), hence the long warm-up.
const plans: Array<Plan> = [{ name: "cpu", config: cpuConfig, microBatchSize: 4, warmupSteps: 20, timedSteps: 30, bscans: 16 }]
// A whole paper-config batch of 8 needs more than the 4 GiB wasm heap, so it trains in passes of 2.
if (!quick) plans.push({ name: "paper", config: paperConfig, microBatchSize: 2, warmupSteps: 1, timedSteps: 3, bscans: 4 })

const machine = describeMachine()
const backend = await initBackend({ backend: "wasm" })
const results = []
for (const plan of plans) {
  process.stderr.write(`train.bench: ${plan.name} config on wasm, ${threads} threads\n`)
  const modelDir = mkdtempSync(join(tmpdir(), "octflow-train-bench-model-"))
  const stepMs = await timeTrainingSteps(plan, threads, modelDir)
  process.stderr.write(`train.bench: ${plan.name} config on wasm, 1 thread\n`)
  const oneThreadStepMs = await timeTrainingSteps(plan, 1)
  let packageKernelsStepMs: number | undefined
  if (plan.name === "cpu") {
    useKernels(packageKernels)
    packageKernelsStepMs = await timeTrainingSteps(plan, 1)
    useKernels(wasmForwardKernels)
  }
  process.stderr.write(`train.bench: ${plan.name} config inference\n`)
  const inference = await timeInference(plan, modelDir, threads)
  const oneThreadInference = await timeInference(plan, modelDir, 1)
  rmSync(modelDir, { recursive: true, force: true })

  process.stderr.write(`train.bench: ${plan.name} config in PyTorch\n`)
  const torch1 = timeTorch(plan, 1)
  const torch2 = timeTorch(plan, 2)
  const tiles = tilesPerBscan(plan.config)
  const torchBscansPerSecond = (torch: TorchResult | { error: string }) => ("tile_ms" in torch ? 1000 / (torch.tile_ms * tiles) : null)
  const torchStep1 = "step_ms" in torch1 ? torch1.step_ms : undefined
  const out = outputSize(plan.config, plan.config.patchHeight, plan.config.patchWidth)
  results.push({
    config: plan.name,
    architecture: {
      baseFilters: plan.config.baseFilters,
      depth: plan.config.depth,
      patch: [plan.config.patchHeight, plan.config.patchWidth],
      output: [out.height, out.width],
      classes: plan.config.numClasses,
      batchSize,
      microBatchSize: plan.microBatchSize
    },
    wasm: {
      threads,
      stepMs,
      stepsPerSecond: 1000 / stepMs,
      oneThreadStepMs,
      ...(packageKernelsStepMs === undefined ? {} : { oneThreadPackageKernelsStepMs: packageKernelsStepMs }),
      stepsTimed: plan.timedSteps,
      inference: { tile: [tileSize, tileSize], tilesPerBscan: tiles, ...inference, oneThreadBscansPerSecond: oneThreadInference.bscansPerSecond }
    },
    torch: {
      oneThread: torch1,
      twoThreads: torch2,
      oneThreadBscansPerSecond: torchBscansPerSecond(torch1),
      twoThreadsBscansPerSecond: torchBscansPerSecond(torch2)
    },
    stepRatioWasmOverTorch1: torchStep1 === undefined ? null : stepMs / torchStep1,
    stepRatioWasmOverTorch2: "step_ms" in torch2 ? stepMs / torch2.step_ms : null,
    targetMet: torchStep1 === undefined ? null : stepMs <= torchStep1
  })
}

const report = {
  benchmark: "train",
  date: new Date().toISOString(),
  machine: finishMachineRecord(machine),
  backend,
  target: "wasm training step time <= PyTorch (1 thread) step time, same architecture, loss, optimiser and batch",
  note: "Step times are medians of the timed steps. Wall times: other processes on the cores inflate them (see machine.underLoad).",
  results,
  met: results.every((r) => r.targetMet === true)
}
mkdirSync(join(benchDir, "results"), { recursive: true })
writeFileSync(join(benchDir, "results", "train.json"), JSON.stringify(report, null, 2) + "\n")
process.stderr.write(`train.bench: wrote bench/results/train.json (target met: ${report.met})\n`)
