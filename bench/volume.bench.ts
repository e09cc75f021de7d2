/**
 * Speed and memory of the phantom generator and the volume readers and writers at full
 * RETOUCH size.
 *
 * Phantom generation runs once per vendor at full geometry (Cirrus 512 x 1024 x 128 uint8 =
 * 64 MiB, Spectralis 512 x 496 x 49 uint16, Topcon 512 x 885 x 128 uint8). The Cirrus
 * phantom is then written and read back as `.mhd` + `.raw`, `.mha` with zlib, and
 * `.nii.gz`. Files go to a temporary directory and stay in the page cache, so the rates are
 * parse and copy rates, not disk rates. Each I/O case runs `repeats` times and the fastest
 * run counts. Memory is the growth of resident set size (RSS) when a fresh child process
 * reads the raw `.mhd` once, in multiples of the volume's size, measured while the volume is
 * still referenced.
 *
 * Targets: a full-size Cirrus phantom in at most 5 s. Raw `.mhd` read and write at least
 * 200 MB/s. `.mha` zlib and `.nii.gz` reads at least 30 MB/s of voxel data. A raw read's RSS
 * growth at most 1.5 x the volume size (the typed array plus working memory). A missed target
 * is recorded with `met: false`; the exit status is non-zero only when a run fails or a round
 * trip changes a voxel.
 *
 * Usage: npx tsx bench/volume.bench.ts   (writes bench/results/volume.json)
 */
import { spawnSync } from "node:child_process"
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { generatePhantom } from "../src/phantom/phantom.ts"
import { vendors } from "../src/volume/dataset.ts"
import { readMetaImage, writeMetaImage } from "../src/volume/metaimage.ts"
import { readNifti, writeNifti } from "../src/volume/nifti.ts"
import type { Volume } from "../src/volume/volume.ts"
import { describeMachine, finishMachineRecord } from "./support/machine.ts"

const repeats = 3
const round = (value: number, digits: number): number => Math.round(value * 10 ** digits) / 10 ** digits

const fastest = async (task: () => Promise<unknown>): Promise<number> => {
  let best = Number.POSITIVE_INFINITY
  for (let i = 0; i < repeats; i++) {
    const started = performance.now()
    await task()
    best = Math.min(best, (performance.now() - started) / 1000)
  }
  return best
}

const sameVoxels = (a: Volume, b: Volume): boolean =>
  Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength))

/**
 * Child mode: reads one MetaImage and prints the growth of RSS in bytes as JSON, measured
 * while the volume is still referenced. Max RSS would be the better measure, but on Linux a
 * spawned child can report its parent's high-water mark, so current RSS is used.
 */
const measureRead = async (path: string): Promise<void> => {
  const before = process.memoryUsage().rss
  const volume = await readMetaImage(path)
  const after = process.memoryUsage().rss
  process.stdout.write(JSON.stringify({ growthBytes: after - before, voxels: volume.data.length }) + "\n")
}

/** Runs this file in a child process in read-measuring mode and returns its RSS growth in bytes. */
const measureReadInChild = (path: string): number => {
  const child = spawnSync(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--measure-read", path], {
    encoding: "utf8"
  })
  if (child.status !== 0) throw new Error(`read measurement failed: ${child.stderr}`)
  return (JSON.parse(child.stdout.trim().split("\n").pop() ?? "{}") as { growthBytes: number }).growthBytes
}

const main = async (): Promise<void> => {
  const machine = describeMachine()
  const work = await mkdtemp(join(tmpdir(), "octflow-volume-bench-"))
  let failed = false
  try {
    const phantoms = []
    for (const vendor of vendors) {
      const started = performance.now()
      const phantom = generatePhantom({ vendor, seed: 1 })
      const seconds = (performance.now() - started) / 1000
      phantoms.push({ vendor, dims: phantom.oct.dims, seconds: round(seconds, 3), phantom })
    }
    const cirrus = phantoms[0].phantom.oct
    const volumeBytes = cirrus.data.byteLength
    const megabytes = volumeBytes / 1e6

    const cases: { name: string; write: () => Promise<void>; read: () => Promise<Volume>; readTarget: number; writeTarget?: number }[] = [
      {
        name: ".mhd + .raw",
        write: () => writeMetaImage(join(work, "oct.mhd"), cirrus),
        read: () => readMetaImage(join(work, "oct.mhd")),
        readTarget: 200,
        writeTarget: 200
      },
      {
        name: ".mha zlib",
        write: () => writeMetaImage(join(work, "oct.mha"), cirrus, { compress: true }),
        read: () => readMetaImage(join(work, "oct.mha")),
        readTarget: 30
      },
      {
        name: ".nii.gz",
        write: () => writeNifti(join(work, "oct.nii.gz"), cirrus),
        read: () => readNifti(join(work, "oct.nii.gz")),
        readTarget: 30
      }
    ]
    const io = []
    for (const entry of cases) {
      const writeSeconds = await fastest(entry.write)
      let back: Volume | undefined
      const readSeconds = await fastest(async () => {
        back = await entry.read()
      })
      const intact = back !== undefined && sameVoxels(back, cirrus)
      if (!intact) failed = true
      const readRate = megabytes / readSeconds
      const writeRate = megabytes / writeSeconds
      io.push({
        name: entry.name,
        writeSeconds: round(writeSeconds, 3),
        readSeconds: round(readSeconds, 3),
        writeMBPerSecond: round(writeRate, 1),
        readMBPerSecond: round(readRate, 1),
        roundTripIntact: intact,
        targets: {
          readMBPerSecond: { target: entry.readTarget, met: readRate >= entry.readTarget },
          ...(entry.writeTarget === undefined ? {} : { writeMBPerSecond: { target: entry.writeTarget, met: writeRate >= entry.writeTarget } })
        }
      })
    }

    await writeMetaImage(join(work, "oct.mhd"), cirrus)
    const rssGrowth = measureReadInChild(join(work, "oct.mhd")) / volumeBytes

    const cirrusSeconds = phantoms[0].seconds
    const result = {
      benchmark: "volume",
      date: new Date().toISOString(),
      machine: finishMachineRecord(machine),
      method: `phantoms generated once per vendor at full size; I/O on the Cirrus phantom (${round(megabytes, 1)} MB), fastest of ${repeats} runs, files in the page cache`,
      phantom: phantoms.map(({ vendor, dims, seconds }) => ({ vendor, dims, seconds })),
      phantomTarget: { cirrusSeconds: { target: 5, actual: cirrusSeconds, met: cirrusSeconds <= 5 } },
      io,
      memory: {
        what: "growth of RSS when a fresh process reads the raw Cirrus .mhd, divided by the volume size",
        rssGrowthPerVolumeSize: round(rssGrowth, 2),
        target: 1.5,
        met: rssGrowth <= 1.5
      }
    }
    const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "results")
    await mkdir(resultsDir, { recursive: true })
    await writeFile(join(resultsDir, "volume.json"), JSON.stringify(result, null, 2) + "\n")
    process.stderr.write(`volume bench: wrote ${join(resultsDir, "volume.json")}\n`)
  } finally {
    await rm(work, { recursive: true, force: true })
  }
  if (failed) {
    process.stderr.write("volume bench: a round trip changed voxels\n")
    process.exitCode = 1
  }
}

const measureIndex = process.argv.indexOf("--measure-read")
if (measureIndex >= 0) await measureRead(process.argv[measureIndex + 1])
else await main()
