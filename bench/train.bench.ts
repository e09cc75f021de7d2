/**
 * Benchmarks U-Net training steps (through `train`, so trainer overhead counts) and
 * inference on the wasm backend against the same architecture, loss, optimiser and batch in
 * PyTorch on the CPU (bench/torch_unet_step.py, one and two threads), for the cpu and paper
 * configs. Writes bench/results/train.json.
 *
 * Target: a wasm training step is no slower than a one-thread PyTorch step.
 * Inference B-scans per second assume a 496 x 512 Spectralis B-scan covered by tiles of the
 * model's output size (tiles per B-scan = ceil(496 / outH) * ceil(512 / outW)).
 * For the cpu config it also times whole-tile inference at 512 x 512, through the model that
 * `buildUnetForInput` rebuilds for that size. Those tiles and the cpu-config training steps
 * are timed twice: with this project's wasm data-movement kernels (Slice, SplitV, Concat,
 * Identity) and with the package's own, so both numbers come from one run.
 * Usage: npx tsx bench/train.bench.ts [--quick]   (--quick: the cpu config only)
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { cpus, loadavg, tmpdir, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import * as tf from "@tensorflow/tfjs-core"
// Imported before initBackend so that the package's own kernels can be read for comparison.
import "@tensorflow/tfjs-backend-wasm"
import type * as tfl from "@tensorflow/tfjs-layers"
import { initBackend } from "../src/ml/backend.ts"
import { wasmForwardKernels } from "../src/ml/kernels/index.ts"
import { type Batch, type BatchSampler, methodOptimizer, train } from "../src/ml/trainer.ts"
import { buildUnet, buildUnetForInput, cpuConfig, outputSize, paperConfig, type UnetConfig } from "../src/ml/unet.ts"

const benchDir = dirname(fileURLToPath(import.meta.url))
const batchSize = 8
const bscan = { height: 496, width: 512 }
const wholeTile = { height: 512, width: 512 }
const packageKernels = wasmForwardKernels.map((config) => tf.getKernel(config.kernelName, "wasm")!)

interface TorchResult {
  readonly torch: string
  readonly threads: number
  readonly output: [number, number]
  readonly step_ms: number
  readonly inference_batch_ms: number
}

interface Plan {
  readonly name: "cpu" | "paper"
  readonly config: UnetConfig
  readonly warmupSteps: number
  readonly timedSteps: number
  /** Samples per forward/backward pass on wasm (the batch of 8 is split into passes). */
  readonly microBatchSize?: number
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

/** Trains through `train` and returns the model with the step times after the warm-up steps. */
async function timeTrainingSteps(plan: Plan): Promise<{ model: tfl.LayersModel; stepMs: Array<number> }> {
  const { config } = plan
  const sampler = new RandomSampler(config)
  const checkpointDir = mkdtempSync(join(tmpdir(), "octflow-train-bench-"))
  const stepMs: Array<number> = []
  let last = performance.now()
  const result = await train(
    { model: config, optimizer: methodOptimizer, ...(plan.microBatchSize === undefined ? {} : { microBatchSize: plan.microBatchSize }) },
    sampler,
    {
      epochs: 1,
      stepsPerEpoch: plan.warmupSteps + plan.timedSteps,
      validation: [sampler.nextBatch()],
      checkpointDir,
      seed: 1,
      resume: false,
      onProgress: (progress) => {
        const now = performance.now()
        if (progress.batchesDone > plan.warmupSteps) stepMs.push(now - last)
        last = now
      }
    }
  )
  rmSync(checkpointDir, { recursive: true, force: true })
  return { model: result.model, stepMs }
}

async function timeWasm(plan: Plan) {
  const { config } = plan
  const { model, stepMs } = await timeTrainingSteps(plan)
  // The cpu config is small enough to repeat with the package's data-movement kernels.
  let packageKernelsStepMs: number | undefined
  if (plan.name === "cpu") {
    useKernels(packageKernels)
    const baseline = await timeTrainingSteps(plan)
    useKernels(wasmForwardKernels)
    baseline.model.dispose()
    packageKernelsStepMs = median(baseline.stepMs)
  }

  const out = outputSize(config, config.patchHeight, config.patchWidth)
  const chunk = plan.microBatchSize ?? batchSize
  const x = tf.randomNormal([chunk, config.patchHeight, config.patchWidth, 3], 0, 1, "float32", 1) as tf.Tensor4D
  const infer = () => readPrediction(model, x)
  infer()
  const inferenceMs: Array<number> = []
  for (let i = 0; i < plan.timedSteps; i++) {
    const started = performance.now()
    for (let done = 0; done < batchSize; done += chunk) infer()
    inferenceMs.push(performance.now() - started)
  }
  x.dispose()
  const tile = plan.name === "cpu" ? timeWholeTile(config, model) : undefined
  model.dispose()
  return { output: out, stepMs: median(stepMs), packageKernelsStepMs, inferenceBatchMs: median(inferenceMs), stepsTimed: plan.timedSteps, tile }
}

/**
 * Runs one forward pass and reads the probabilities back. The tidy returns the tensor, not
 * its values: a typed array returned from tf.tidy is walked element by element in search
 * of tensors, which for a 512 x 512 tile took longer than the forward pass itself.
 */
function readPrediction(model: tfl.LayersModel, x: tf.Tensor): void {
  const probabilities = tf.tidy(() => model.predict(x) as tf.Tensor)
  probabilities.dataSync()
  probabilities.dispose()
}

function useKernels(configs: ReadonlyArray<tf.KernelConfig>): void {
  for (const config of configs) {
    tf.unregisterKernel(config.kernelName, "wasm")
    tf.registerKernel(config)
  }
}

/** Times one 512 x 512 tile through the model rebuilt for that size, with our and the package's kernels. */
function timeWholeTile(config: UnetConfig, trained: tfl.LayersModel) {
  const model = buildUnetForInput(config, trained, wholeTile.height, wholeTile.width)
  const x = tf.randomNormal([1, wholeTile.height, wholeTile.width, 3], 0, 1, "float32", 2)
  const timeTiles = (passes: number): number => {
    readPrediction(model, x)
    const times: Array<number> = []
    for (let i = 0; i < passes; i++) {
      const started = performance.now()
      readPrediction(model, x)
      times.push(performance.now() - started)
    }
    return median(times)
  }
  const oursMs = timeTiles(7)
  useKernels(packageKernels)
  const packageMs = timeTiles(3)
  useKernels(wasmForwardKernels)
  const out = outputSize(config, wholeTile.height, wholeTile.width)
  x.dispose()
  model.dispose()
  return {
    input: [wholeTile.height, wholeTile.width],
    output: [out.height, out.width],
    tileMs: oursMs,
    tilesPerSecond: 1000 / oursMs,
    packageKernelsTileMs: packageMs,
    packageKernelsTilesPerSecond: 1000 / packageMs,
    passesTimed: 7
  }
}

function timeTorch(plan: Plan, threads: number): TorchResult | { error: string } {
  const { config } = plan
  const args = [
    join(benchDir, "torch_unet_step.py"),
    ...["--threads", threads, "--base", config.baseFilters, "--depth", config.depth].map(String),
    ...["--height", config.patchHeight, "--width", config.patchWidth, "--classes", config.numClasses].map(String),
    ...["--batch", batchSize, "--steps", plan.timedSteps, "--warmup", plan.warmupSteps].map(String)
  ]
  const result = spawnSync("/usr/bin/python3", args, { encoding: "utf8" })
  if (result.status !== 0) return { error: (result.stderr || result.error?.message || "python3 failed").trim().slice(-500) }
  return JSON.parse(result.stdout.trim().split("\n").pop()!) as TorchResult
}

function tilesPerBscan(out: { height: number; width: number }): number {
  return Math.ceil(bscan.height / out.height) * Math.ceil(bscan.width / out.width)
}

const quick = process.argv.includes("--quick")
const plans: Array<Plan> = [{ name: "cpu", config: cpuConfig, warmupSteps: 2, timedSteps: 5 }]
// A whole paper-config batch of 8 needs more than the 4 GiB wasm heap, so it runs as 4 passes of 2.
if (!quick) plans.push({ name: "paper", config: paperConfig, warmupSteps: 1, timedSteps: 2, microBatchSize: 2 })

const backend = await initBackend({ backend: "wasm" })
const results = []
for (const plan of plans) {
  process.stderr.write(`train.bench: ${plan.name} config on wasm\n`)
  const wasm = await timeWasm(plan)
  process.stderr.write(`train.bench: ${plan.name} config in PyTorch\n`)
  const torch1 = timeTorch(plan, 1)
  const torch2 = timeTorch(plan, 2)
  const tiles = tilesPerBscan(wasm.output)
  const torchStep1 = "step_ms" in torch1 ? torch1.step_ms : undefined
  results.push({
    config: plan.name,
    architecture: {
      baseFilters: plan.config.baseFilters,
      depth: plan.config.depth,
      patch: [plan.config.patchHeight, plan.config.patchWidth],
      output: [wasm.output.height, wasm.output.width],
      classes: plan.config.numClasses,
      batchSize,
      wasmMicroBatchSize: plan.microBatchSize ?? batchSize
    },
    wasm: {
      stepMs: wasm.stepMs,
      ...(wasm.packageKernelsStepMs === undefined ? {} : { packageKernelsStepMs: wasm.packageKernelsStepMs }),
      stepsPerSecond: 1000 / wasm.stepMs,
      inferenceBatchMs: wasm.inferenceBatchMs,
      tilesPerBscan: tiles,
      inferenceBscansPerSecond: (1000 / wasm.inferenceBatchMs) * (batchSize / tiles),
      stepsTimed: wasm.stepsTimed,
      ...(wasm.tile === undefined ? {} : { wholeTileInference: wasm.tile })
    },
    torch: { oneThread: torch1, twoThreads: torch2 },
    stepRatioWasmOverTorch1: torchStep1 === undefined ? null : wasm.stepMs / torchStep1,
    stepRatioWasmOverTorch2: "step_ms" in torch2 ? wasm.stepMs / torch2.step_ms : null,
    targetMet: torchStep1 === undefined ? null : wasm.stepMs <= torchStep1
  })
}

const report = {
  benchmark: "train",
  date: new Date().toISOString(),
  machine: {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memoryBytes: totalmem(),
    node: process.version,
    // 1, 5 and 15 minute load averages when the report was written: above the core count,
    // other processes competed for the CPU and the timings are inflated.
    loadAverage: loadavg()
  },
  backend,
  target: "wasm training step time <= PyTorch (1 thread) step time, same architecture, loss, optimiser and batch",
  note: "Timings are medians; other processes shared the cores, so treat them as estimates.",
  results,
  met: results.every((r) => r.targetMet === true)
}
mkdirSync(join(benchDir, "results"), { recursive: true })
writeFileSync(join(benchDir, "results", "train.json"), JSON.stringify(report, null, 2) + "\n")
process.stderr.write(`train.bench: wrote bench/results/train.json (target met: ${report.met})\n`)
