/**
 * Throughput of tiled inference and of the patch sampler, without the U-Net.
 *
 * Inference runs `inferVolume` with a predictor that thresholds the centre channel, at the
 * full network's tile sizes (input 256 x 128, output 164 x 36, overlap 8). The volumes are
 * random, of Spectralis size (512 x 496, axial 0.0039 mm) and Cirrus size (512 x 1024,
 * axial 0.00195 mm, so rows are halved before tiling). That measures what tiling, channel
 * stacking, averaging, argmax and rescaling cost per B-scan, which is what this code adds
 * to a model's own time. The sampler draws default batches (8 x 256 x 128, augmentation
 * on) from one random Cirrus-size case with an ROI band; the time to build the sampler (one
scan of the ROI and label volumes) is measured apart and left out of the batch rate.
 * Targets: at least 10 B-scans/s of inference overhead at Spectralis size and at least 20
 * sampler batches/s, so neither is the bottleneck next to a CPU U-Net step that takes
 * seconds. Each case runs `repeats` times and the fastest run counts.
 *
 * Usage: npx tsx bench/infer.bench.ts   (writes bench/results/infer.json)
 */
import { mkdir, writeFile } from "node:fs/promises"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { inferVolume, type Predictor } from "../src/eval/infer.ts"
import { makePatchSampler } from "../src/ml/patches.ts"
import { makeVolume, type Volume } from "../src/volume/volume.ts"
import { describeMachine, finishMachineRecord } from "./support/machine.ts"

const repeats = 3
const slices = 4
const samplerBatches = 20

const round = (value: number, digits: number): number => Math.round(value * 10 ** digits) / 10 ** digits

/** Input 256 x 128, output 164 x 36 (the method's U-Net); fluid where the centre channel > 0. */
const thresholdPredictor: Predictor = {
  inputHeight: 256,
  inputWidth: 128,
  outputHeight: 164,
  outputWidth: 36,
  classCount: 4,
  predictBatch: async (x) => {
    const count = x.length / (256 * 128 * 3)
    const output = new Float32Array(count * 164 * 36 * 4)
    for (let n = 0; n < count; n++) {
      for (let i = 0; i < 164; i++) {
        for (let j = 0; j < 36; j++) {
          const fluid = x[(n * 256 * 128 + (i + 46) * 128 + j + 46) * 3 + 1] > 0
          output[((n * 164 + i) * 36 + j) * 4 + (fluid ? 1 : 0)] = 1
        }
      }
    }
    return output
  }
}

const randomVolume = (width: number, height: number, depth: number, axialMm: number): Volume => {
  const volume = makeVolume("uint8", [width, height, depth], [0.0117, axialMm, 0.047])
  let state = 12345
  for (let i = 0; i < volume.data.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    volume.data[i] = state >>> 24
  }
  return volume
}

const timeBest = async (task: () => Promise<unknown> | unknown): Promise<number> => {
  let best = Number.POSITIVE_INFINITY
  for (let run = 0; run < repeats; run++) {
    const start = process.hrtime.bigint()
    await task()
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9)
  }
  return best
}

const benchInference = async (name: string, width: number, height: number, axialMm: number) => {
  const volume = randomVolume(width, height, slices, axialMm)
  const seconds = await timeBest(() => inferVolume(volume, thresholdPredictor, { overlap: 8, batchSize: 8 }))
  return { name, dims: volume.dims, seconds: round(seconds, 3), bscansPerSecond: round(slices / seconds, 2) }
}

const benchSampler = async () => {
  const image = randomVolume(512, 1024, 8, 0.00195)
  const roi = makeVolume("uint8", image.dims, image.spacingMm)
  const labels = makeVolume("uint8", image.dims, image.spacingMm)
  for (let z = 0; z < 8; z++) {
    for (let y = 300; y < 700; y++) {
      const row = (z * 1024 + y) * 512
      roi.data.fill(1, row, row + 512)
      if (y >= 480 && y < 520) labels.data.fill(1 + (z % 3), row + 100, row + 200)
    }
  }
  const build = () => makePatchSampler([{ id: "bench", vendor: "Cirrus", image, roi, labels }], { seed: 1 })
  const buildSeconds = await timeBest(build)
  const seconds = await timeBest(() => {
    const sampler = build()
    for (let i = 0; i < samplerBatches; i++) sampler.nextBatch()
  })
  const batchSeconds = seconds - buildSeconds
  return {
    dims: image.dims,
    buildSeconds: round(buildSeconds, 3),
    batches: samplerBatches,
    batchSize: 8,
    batchSeconds: round(batchSeconds, 3),
    batchesPerSecond: round(samplerBatches / batchSeconds, 2)
  }
}

const main = async (): Promise<void> => {
  const machine = describeMachine()
  const spectralis = await benchInference("Spectralis size", 512, 496, 0.0039)
  const cirrus = await benchInference("Cirrus size", 512, 1024, 0.00195)
  const sampler = await benchSampler()

  const targets = [
    {
      name: "inference overhead, Spectralis size",
      target: ">= 10 B-scans/s",
      measured: spectralis.bscansPerSecond,
      met: spectralis.bscansPerSecond >= 10
    },
    {
      name: "patch sampler, default batches",
      target: ">= 20 batches/s",
      measured: sampler.batchesPerSecond,
      met: sampler.batchesPerSecond >= 20
    }
  ]
  const result = {
    benchmark: "infer",
    date: new Date().toISOString(),
    machine: finishMachineRecord(machine),
    method: `fastest of ${repeats} runs; inference over ${slices} B-scans with a thresholding predictor, no model`,
    inference: [spectralis, cirrus],
    sampler,
    targets,
    allTargetsMet: targets.every((target) => target.met)
  }

  const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "results")
  await mkdir(resultsDir, { recursive: true })
  await writeFile(join(resultsDir, "infer.json"), `${JSON.stringify(result, null, 2)}\n`)
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
}

await main()
