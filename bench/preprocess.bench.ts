/**
 * Preprocess throughput: B-scans per second of `preprocessVolume` on synthetic volumes of
 * full-size Cirrus (512 x 1024, uint8), Spectralis (512 x 496, uint16) and Topcon
 * (512 x 885, uint8) B-scans, against the original Python method on the same volumes
 * (outputs compared voxel for voxel), and the peak memory on a full-size Cirrus volume.
 * Targets: at least 10x the Python reference's speed with equal outputs; peak growth at
 * most 4x the volume's bytes. Writes bench/results/preprocess.json.
 * Usage: npx tsx bench/preprocess.bench.ts [slicesPerVolume]
 */
import { mkdirSync, writeFileSync } from "node:fs"
import path from "node:path"
import { histogram256 } from "../src/kernels/histogram.ts"
import { preprocessVolume } from "../src/kernels/preprocess.ts"
import type { Volume } from "../src/volume/volume.ts"
import { benchVendors, fullSizeGeometry } from "./support/geometry.ts"
import { describeMachine, finishMachineRecord, timeCall } from "./support/machine.ts"
import { probeMemory } from "./support/memory.ts"
import { benchDir, runPythonReference } from "./support/python-reference.ts"
import { syntheticVolume } from "./support/synthetic-bscan.ts"

const slicesPerVolume = Number(process.argv[2] ?? 16)
const speedTarget = 10
const memoryTarget = 4
const runs = 5
const machine = describeMachine()
// The Spectralis reference the Cirrus and Topcon volumes are matched to, as 8-bit values.
const referenceDims = [512, 496, 4] as const
const reference = syntheticVolume(...referenceDims, 99, 255) as Uint8Array
const referenceHistogram = histogram256(reference)

const cases = benchVendors.map((vendor, i) => {
  const { width, height, maxValue } = fullSizeGeometry[vendor]
  const data = syntheticVolume(width, height, slicesPerVolume, 20 + i, maxValue)
  const volume: Volume = {
    dims: [width, height, slicesPerVolume],
    spacingMm: [1, 1, 1],
    dtype: data instanceof Uint16Array ? "uint16" : "uint8",
    data
  }
  let best = Infinity
  let bestCpu = Infinity
  let output: Uint8Array = new Uint8Array(0)
  for (let run = 0; run < runs; run++) {
    const timed = timeCall(() => preprocessVolume(volume, vendor, { referenceHistogram }).data)
    output = timed.result
    best = Math.min(best, timed.seconds)
    bestCpu = Math.min(bestCpu, timed.cpuSeconds)
  }
  process.stderr.write(`preprocess: ${vendor} ${width} x ${height} x ${slicesPerVolume}: ${(bestCpu * 1000).toFixed(1)} ms CPU\n`)
  return { vendor, width, height, data, seconds: best, cpuSeconds: bestCpu, output }
})

process.stderr.write("preprocess: running the Python reference on the same volumes\n")
const python = runPythonReference(
  cases.map((c) => ({
    kind: "preprocess" as const,
    data: c.data,
    dims: [c.width, c.height, slicesPerVolume] as const,
    vendor: c.vendor,
    template: reference,
    templateDims: referenceDims
  }))
)

const records = cases.map((c, i) => {
  const base = {
    vendor: c.vendor,
    width: c.width,
    height: c.height,
    slices: slicesPerVolume,
    seconds: Number(c.seconds.toFixed(4)),
    cpuSeconds: Number(c.cpuSeconds.toFixed(4)),
    slicesPerSecond: Number((slicesPerVolume / c.seconds).toFixed(1)),
    slicesPerCpuSecond: Number((slicesPerVolume / c.cpuSeconds).toFixed(1))
  }
  if (!python.available) return base
  const expected = python.results[i]
  let differences = 0
  for (let v = 0; v < c.output.length; v++) if (c.output[v] !== expected.output[v]) differences++
  return {
    ...base,
    pythonSeconds: Number(expected.seconds.toFixed(3)),
    pythonCpuSeconds: Number(expected.cpuSeconds.toFixed(3)),
    speedup: Number((expected.cpuSeconds / c.cpuSeconds).toFixed(1)),
    wallSpeedup: Number((expected.seconds / c.seconds).toFixed(1)),
    outputDifferences: differences
  }
})

process.stderr.write("preprocess: measuring peak memory of a full-size Cirrus volume\n")
const memory = probeMemory("preprocess", "Cirrus")
const memoryRatio = memory.peakGrowthBytes / memory.volumeBytes

const speedMet = python.available
  ? records.every((r) => "speedup" in r && r.speedup >= speedTarget && r.outputDifferences === 0)
  : null
const result = {
  benchmark: "preprocess",
  date: new Date().toISOString(),
  machine: finishMachineRecord(machine),
  method: `fastest of ${runs} runs per volume, single thread; speedup is the ratio of CPU times, which a shared machine inflates less than wall times (wallSpeedup); Python reference: the original method's preprocess on the same volume, one process, OMP_NUM_THREADS=1`,
  python: python.available ? { versions: python.versions } : { unavailable: python.reason },
  cases: records,
  memory: { ...memory, peakGrowthPerVolumeByte: Number(memoryRatio.toFixed(3)) },
  targets: {
    speedupAtLeast: speedTarget,
    equalOutputs: true,
    peakGrowthPerVolumeByteAtMost: memoryTarget
  },
  met: {
    speed: speedMet,
    memory: memoryRatio <= memoryTarget
  }
}
mkdirSync(path.join(benchDir, "results"), { recursive: true })
writeFileSync(path.join(benchDir, "results", "preprocess.json"), JSON.stringify(result, null, 2) + "\n")
process.stderr.write(`preprocess: wrote bench/results/preprocess.json\n`)
