/**
 * Hashing throughput: `sha256sum`, a Node crypto stream and `hashFile` on one 1 GiB file,
 * `digestFile` with several read-buffer sizes, then 8 files of 128 MiB hashed one after
 * another (Node streams, then `hashFile`) and with `hashFiles` on worker threads.
 *
 * The files are written once to a temporary directory, read once before timing, and deleted
 * at the end. They stay in the page cache, so the rates are hashing rates from memory, not
 * disk rates. Each case runs `repeats` times and the fastest run counts. Rates are in GB/s
 * (10^9 bytes/s).
 * Targets: hashFile at least as fast as one Node crypto stream (the faster of 64 KiB and
 * 1 MiB chunks), and hashFiles over several files faster than the faster serial way. A
 * missed target is recorded in the JSON with `met: false`. The exit status is non-zero only
 * when a run fails or a hash is wrong.
 *
 * Usage: npx tsx bench/hash.bench.ts   (writes bench/results/hash.json)
 */
import { spawnSync } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import { createReadStream } from "node:fs"
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises"
import { availableParallelism, tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { pipeline } from "node:stream/promises"
import { fileURLToPath } from "node:url"
import { digestFile, readChunkBytes } from "../src/runtime/hash-worker.ts"
import { hashFile, hashFiles } from "../src/runtime/hash.ts"
import { describeMachine, finishMachineRecord } from "./support/machine.ts"

const MiB = 1024 * 1024
const bigFileBytes = 1024 * MiB
const smallFileBytes = 128 * MiB
const smallFileCount = 8
const repeats = 3
const chunkSizes = [64 * 1024, 256 * 1024, MiB, 4 * MiB]

interface Timing {
  readonly seconds: number
  readonly gbPerSecond: number
}

/** Runs `task` `repeats` times and returns the fastest run, with the rate over `bytes`. */
async function timeBest(bytes: number, task: () => Promise<unknown>): Promise<Timing> {
  let best = Number.POSITIVE_INFINITY
  for (let run = 0; run < repeats; run++) {
    const start = process.hrtime.bigint()
    await task()
    const seconds = Number(process.hrtime.bigint() - start) / 1e9
    best = Math.min(best, seconds)
  }
  return { seconds: round(best, 4), gbPerSecond: round(bytes / best / 1e9, 3) }
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits
  return Math.round(value * scale) / scale
}

/** Writes `bytes` of random data in 16 MiB blocks, so the file never has to fit in memory. */
async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const handle = await open(path, "w")
  try {
    const block = randomBytes(16 * MiB)
    for (let written = 0; written < bytes; written += block.length) {
      await handle.write(block, 0, Math.min(block.length, bytes - written))
    }
  } finally {
    await handle.close()
  }
}

/** Computes SHA-256 with Node's crypto through one `fs.ReadStream` (64 KiB chunks unless set). */
async function hashWithStream(path: string, highWaterMark?: number): Promise<string> {
  const hash = createHash("sha256")
  await pipeline(createReadStream(path, highWaterMark === undefined ? {} : { highWaterMark }), hash)
  return hash.digest("hex")
}

function sha256sum(path: string): string {
  const result = spawnSync("sha256sum", [path], { encoding: "utf8" })
  if (result.status !== 0) throw new Error(`sha256sum ${path} failed: ${result.stderr}`)
  return result.stdout.split(" ")[0]
}

function assertEqual(label: string, actual: string, expected: string): void {
  if (actual !== expected) throw new Error(`${label}: got ${actual}, expected ${expected}`)
}

async function main(): Promise<void> {
  const machine = describeMachine()
  const dir = await mkdtemp(join(tmpdir(), "octflow-hash-bench-"))
  try {
    const bigPath = join(dir, "big.bin")
    await writeRandomFile(bigPath, bigFileBytes)
    const reference = await hashWithStream(bigPath)

    const sha256sumTiming = await timeBest(bigFileBytes, async () => {
      assertEqual("sha256sum", sha256sum(bigPath), reference)
    })
    const streamTiming = await timeBest(bigFileBytes, () => hashWithStream(bigPath))
    const stream1MiBTiming = await timeBest(bigFileBytes, () => hashWithStream(bigPath, MiB))
    const hashFileTiming = await timeBest(bigFileBytes, async () => {
      assertEqual("hashFile", await hashFile(bigPath), reference)
    })

    const chunkSweep: Array<{ chunkBytes: number } & Timing> = []
    for (const chunkBytes of chunkSizes) {
      const timing = await timeBest(bigFileBytes, () => digestFile(bigPath, chunkBytes))
      chunkSweep.push({ chunkBytes, ...timing })
    }
    await rm(bigPath)

    const smallPaths: string[] = []
    for (let index = 0; index < smallFileCount; index++) {
      const path = join(dir, `small-${index}.bin`)
      await writeRandomFile(path, smallFileBytes)
      smallPaths.push(path)
    }
    const expected: string[] = []
    for (const path of smallPaths) expected.push(await hashWithStream(path))

    const totalSmallBytes = smallFileBytes * smallFileCount
    const serialStreamTiming = await timeBest(totalSmallBytes, async () => {
      for (const path of smallPaths) await hashWithStream(path)
    })
    const serialHashFileTiming = await timeBest(totalSmallBytes, async () => {
      for (const path of smallPaths) await hashFile(path)
    })
    const serialBest = Math.max(serialStreamTiming.gbPerSecond, serialHashFileTiming.gbPerSecond)
    // The first call includes starting the workers, and the timed calls reuse the pool.
    const coldStart = process.hrtime.bigint()
    const coldHashes = await hashFiles(smallPaths)
    const coldSeconds = Number(process.hrtime.bigint() - coldStart) / 1e9
    assertEqual("hashFiles", coldHashes.join(","), expected.join(","))
    const parallelTiming = await timeBest(totalSmallBytes, () => hashFiles(smallPaths))
    const streamBest = Math.max(streamTiming.gbPerSecond, stream1MiBTiming.gbPerSecond)
    const targets = [
      {
        name: "hashFile vs the faster Node crypto stream (1 GiB)",
        target: `>= ${streamBest} GB/s`,
        measuredGbPerSecond: hashFileTiming.gbPerSecond,
        met: hashFileTiming.gbPerSecond >= streamBest
      },
      {
        name: `hashFiles vs the faster serial hashing (${smallFileCount} x 128 MiB)`,
        target: `> ${serialBest} GB/s`,
        measuredGbPerSecond: parallelTiming.gbPerSecond,
        met: parallelTiming.gbPerSecond > serialBest
      }
    ]

    const result = {
      benchmark: "hash",
      date: new Date().toISOString(),
      machine: finishMachineRecord(machine),
      method: `fastest of ${repeats} runs, files in the page cache, GB = 10^9 bytes`,
      singleFile: {
        bytes: bigFileBytes,
        sha256sum: sha256sumTiming,
        nodeStreamDefaultChunks: streamTiming,
        nodeStream1MiBChunks: stream1MiBTiming,
        hashFile: { ...hashFileTiming, readChunkBytes },
        digestFileChunkSweep: chunkSweep
      },
      severalFiles: {
        files: smallFileCount,
        bytesEach: smallFileBytes,
        serialNodeStreams: serialStreamTiming,
        serialHashFile: serialHashFileTiming,
        hashFilesFirstCallSeconds: round(coldSeconds, 4),
        hashFiles: { ...parallelTiming, concurrency: availableParallelism() }
      },
      targets,
      allTargetsMet: targets.every((target) => target.met)
    }

    const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "results")
    await mkdir(resultsDir, { recursive: true })
    await writeFile(join(resultsDir, "hash.json"), `${JSON.stringify(result, null, 2)}\n`)
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
