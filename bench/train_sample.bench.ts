/**
 * Trains the cpu config on the shipped sample (data/sample: three Spectralis cases with
 * binary fluid masks) on the wasm backend, to show how long a short run takes on this
 * machine and whether it learns. Trains on DUKE01 and UMN24 and validates on UMN26, with
 * the train stage's micro-batches of 4 on one thread per core.
 * Writes bench/results/train_sample.json with per-epoch loss, validation loss and fluid Dice.
 *
 * NOTE: the ROI here is the whole B-scan (the workflow's roi stage is not run), so patches
 * also come from outside the retina; Spectralis needs no preprocessing.
 * Usage: npx tsx bench/train_sample.bench.ts [EPOCHS] [STEPS_PER_EPOCH]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { availableParallelism, cpus, tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { initBackend } from "../src/ml/backend.ts"
import { makePatchSampler, type SamplerCase } from "../src/ml/patches.ts"
import { type EpochMetrics, methodOptimizer, train } from "../src/ml/trainer.ts"
import { cpuConfig, outputSize } from "../src/ml/unet.ts"
import { discoverDataset, loadCase } from "../src/volume/dataset.ts"
import type { Volume } from "../src/volume/volume.ts"

const benchDir = dirname(fileURLToPath(import.meta.url))
const sampleDir = resolve(benchDir, "../data/sample")
const epochs = Number(process.argv[2] ?? 8)
const stepsPerEpoch = Number(process.argv[3] ?? 25)
const validationCase = "Spectralis/UMN26"

async function loadSamplerCases(): Promise<{ training: Array<SamplerCase>; validation: Array<SamplerCase> }> {
  const training: Array<SamplerCase> = []
  const validation: Array<SamplerCase> = []
  for (const datasetCase of await discoverDataset(sampleDir, { scheme: "binary" })) {
    const { oct, labels } = await loadCase(datasetCase)
    if (labels === undefined) continue
    const roi: Volume = { dims: oct.dims, spacingMm: oct.spacingMm, dtype: "uint8", data: new Uint8Array(oct.data.length).fill(1) }
    const sample: SamplerCase = { id: datasetCase.key, vendor: datasetCase.vendor ?? "Spectralis", image: oct, roi, labels }
    if (datasetCase.key === validationCase) validation.push(sample)
    else training.push(sample)
  }
  return { training, validation }
}

const backend = await initBackend({ backend: "wasm" })
const { training, validation } = await loadSamplerCases()
const model = { ...cpuConfig, numClasses: 2 }
const out = outputSize(model, model.patchHeight, model.patchWidth)
const samplerOptions = {
  batchSize: 8,
  classCount: 2,
  patchHeight: model.patchHeight,
  patchWidth: model.patchWidth,
  outputHeight: out.height,
  outputWidth: out.width
}
const sampler = makePatchSampler(training, { ...samplerOptions, seed: 1 })
const validationSampler = makePatchSampler(validation, { ...samplerOptions, seed: 2 })
const validationBatches = Array.from({ length: 4 }, () => validationSampler.nextBatch())

const checkpointDir = mkdtempSync(join(tmpdir(), "octflow-train-sample-"))
const history: Array<EpochMetrics> = []
const started = performance.now()
await train({ model, optimizer: methodOptimizer, microBatchSize: 4 }, sampler, {
  epochs,
  threads: availableParallelism(),
  stepsPerEpoch,
  validation: validationBatches,
  checkpointDir,
  seed: 1,
  resume: false,
  onEpoch: (metrics) => {
    history.push(metrics)
    process.stderr.write(
      `train_sample.bench: epoch ${metrics.epoch} loss ${metrics.loss.toFixed(4)} val ${metrics.valLoss.toFixed(4)} dice ${metrics.valFluidDice.toFixed(3)}\n`
    )
  }
})
const seconds = (performance.now() - started) / 1000
rmSync(checkpointDir, { recursive: true, force: true })

const trainingSeconds = history.reduce((sum, epoch) => sum + epoch.seconds, 0)
const report = {
  benchmark: "train_sample",
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, node: process.version },
  backend,
  config: { ...model, output: [out.height, out.width], batchSize: 8, microBatchSize: 4, threads: availableParallelism(), epochs, stepsPerEpoch },
  data: { training: training.map((c) => c.id), validation: validation.map((c) => c.id), roi: "whole B-scan" },
  target: "a few minutes on 2 cores, and validation fluid Dice rises above its first-epoch value",
  seconds,
  stepsPerSecond: (epochs * stepsPerEpoch) / trainingSeconds,
  history,
  met: seconds < 600 && history.length > 1 && history[history.length - 1]!.valFluidDice > history[0]!.valFluidDice
}
mkdirSync(join(benchDir, "results"), { recursive: true })
writeFileSync(join(benchDir, "results", "train_sample.json"), JSON.stringify(report, null, 2) + "\n")
process.stderr.write(`train_sample.bench: wrote bench/results/train_sample.json (target met: ${report.met})\n`)
