/**
 * Benchmarks whole-tile U-Net inference on the wasm backend: the cpu config rebuilt for a
 * 512 x 512 input by `buildUnetForInput`, one tile per forward pass, with this project's
 * wasm data-movement kernels (Slice, SplitV, Concat, Identity) and with the package's own.
 * For each it records the median pass time and a tf.profile breakdown by kernel.
 * Writes bench/results/infer_unet.json.
 *
 * Target: with our kernels a tile is faster than with the package's, and Slice plus Concat
 * take under 20% of the tile's kernel time.
 * Usage: npx tsx bench/infer_unet.bench.ts [PASSES]   (default 7)
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus, loadavg, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import * as tf from "@tensorflow/tfjs-core"
// Imported before initBackend so that the package's own kernels can be read for comparison.
import "@tensorflow/tfjs-backend-wasm"
import type * as tfl from "@tensorflow/tfjs-layers"
import { initBackend } from "../src/ml/backend.ts"
import { wasmForwardKernels } from "../src/ml/kernels/index.ts"
import { buildUnet, buildUnetForInput, cpuConfig, outputSize } from "../src/ml/unet.ts"

const benchDir = dirname(fileURLToPath(import.meta.url))
const passes = Number(process.argv[2] ?? 7)
const tile = { height: 512, width: 512 }
const packageKernels = wasmForwardKernels.map((config) => tf.getKernel(config.kernelName, "wasm")!)

function median(values: ReadonlyArray<number>): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

function useKernels(configs: ReadonlyArray<tf.KernelConfig>): void {
  for (const config of configs) {
    tf.unregisterKernel(config.kernelName, "wasm")
    tf.registerKernel(config)
  }
}

/**
 * Runs one pass and reads the probabilities. The tidy returns the tensor, not its values,
 * because tf.tidy walks every element of a returned typed array in search of tensors.
 */
function predictTile(model: tfl.LayersModel, x: tf.Tensor): void {
  const probabilities = tf.tidy(() => model.predict(x) as tf.Tensor)
  probabilities.dataSync()
  probabilities.dispose()
}

async function measure(model: tfl.LayersModel, x: tf.Tensor) {
  predictTile(model, x)
  const times: Array<number> = []
  for (let i = 0; i < passes; i++) {
    const started = performance.now()
    predictTile(model, x)
    times.push(performance.now() - started)
  }
  const profile = await tf.profile(() => predictTile(model, x))
  const kernelMs: Record<string, number> = {}
  for (const kernel of profile.kernels) {
    // Op wrappers such as fusedConv2d__op contain the kernel they call, so only kernels count.
    if (kernel.name.endsWith("__op")) continue
    kernelMs[kernel.name] = (kernelMs[kernel.name] ?? 0) + (kernel.kernelTimeMs as number)
  }
  const totalKernelMs = Object.values(kernelMs).reduce((a, b) => a + b, 0)
  const dataMovementMs = (kernelMs.Slice ?? 0) + (kernelMs.Concat ?? 0)
  const byKernel = Object.fromEntries(Object.entries(kernelMs).sort((a, b) => b[1] - a[1]))
  const tileMs = median(times)
  return {
    tileMs,
    tilesPerSecond: 1000 / tileMs,
    totalKernelMs,
    sliceConcatShare: dataMovementMs / totalKernelMs,
    kernelMs: byKernel
  }
}

const backend = await initBackend({ backend: "wasm" })
const config = cpuConfig
const model = buildUnetForInput(config, buildUnet(config), tile.height, tile.width)
const x = tf.randomNormal([1, tile.height, tile.width, 3], 0, 1, "float32", 3)
process.stderr.write("infer_unet.bench: this project's kernels\n")
const ours = await measure(model, x)
useKernels(packageKernels)
process.stderr.write("infer_unet.bench: the package's kernels\n")
const packaged = await measure(model, x)
useKernels(wasmForwardKernels)
x.dispose()
model.dispose()

const out = outputSize(config, tile.height, tile.width)
const met = ours.tileMs < packaged.tileMs && ours.sliceConcatShare < 0.2
const report = {
  benchmark: "infer_unet",
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
  target: "512 x 512 cpu-config tile faster with this project's wasm kernels than with the package's, and Slice + Concat < 20% of kernel time",
  note: "Timings are medians of wall time; other processes shared the cores, so treat them as estimates. Kernel times come from one tf.profile pass.",
  model: { config: "cpu", baseFilters: config.baseFilters, depth: config.depth, classes: config.numClasses, input: [tile.height, tile.width], output: [out.height, out.width] },
  passesTimed: passes,
  ours,
  packageKernels: packaged,
  speedup: packaged.tileMs / ours.tileMs,
  met
}
mkdirSync(join(benchDir, "results"), { recursive: true })
writeFileSync(join(benchDir, "results", "infer_unet.json"), JSON.stringify(report, null, 2) + "\n")
process.stderr.write(`infer_unet.bench: wrote bench/results/infer_unet.json (target met: ${met})\n`)
