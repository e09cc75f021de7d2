/** Runs memory-probe.ts in a child process and returns its record. */
import { spawnSync } from "node:child_process"
import path from "node:path"
import { benchDir } from "./python-reference.ts"

export interface MemoryRecord {
  readonly kind: string
  readonly vendor: string
  readonly dims: readonly number[]
  readonly volumeBytes: number
  readonly outputBytes: number
  readonly peakGrowthBytes: number
  readonly seconds: number
}

export const probeMemory = (kind: "preprocess" | "roi", vendor: string): MemoryRecord => {
  const probe = path.join(benchDir, "support", "memory-probe.ts")
  const run = spawnSync(process.execPath, ["--expose-gc", "--import", "tsx", probe, kind, vendor], { encoding: "utf8" })
  if (run.status !== 0) throw new Error(`memory probe failed for ${kind} ${vendor}: ${run.stderr.trim()}`)
  return JSON.parse(run.stdout) as MemoryRecord
}
