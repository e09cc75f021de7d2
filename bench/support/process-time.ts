/**
 * Wall and CPU time of child processes, for benchmarks that time a command as a user runs
 * it. CPU times come from GNU time (`/usr/bin/time`), because Node reports no resource
 * usage for a child. Where GNU time is missing they are null.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import { join } from "node:path"

const gnuTime = "/usr/bin/time"

export interface ProcessTime {
  readonly wallSeconds: number
  /** User plus system CPU seconds of the process and its children, at GNU time's 10 ms resolution. */
  readonly cpuSeconds: number | null
}

/** Run `command` once to completion and return its times. Throws with its stderr when it fails. */
export function timeProcess(
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env?: NodeJS.ProcessEnv }
): ProcessTime {
  const dir = mkdtempSync(join(tmpdir(), "octflow-time-"))
  const report = join(dir, "time.txt")
  const useTime = existsSync(gnuTime)
  const [file, argv] = useTime ? [gnuTime, ["-o", report, "-f", "%U %S", command, ...args]] : [command, [...args]]
  try {
    const started = performance.now()
    const result = spawnSync(file, argv, { cwd: options.cwd, env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] })
    const wallSeconds = (performance.now() - started) / 1000
    if (result.status !== 0) {
      throw new Error(`${command} ${args.join(" ")} failed with exit status ${result.status}: ${result.stderr.toString().slice(-2000)}`)
    }
    if (!useTime) return { wallSeconds, cpuSeconds: null }
    const [user, system] = readFileSync(report, "utf8").trim().split(/\s+/).map(Number)
    return { wallSeconds, cpuSeconds: user! + system! }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const round3 = (value: number) => Math.round(value * 1000) / 1000
const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

/** Times of `repeats` runs of one command, with the 1-minute load average when the series started. */
export interface ProcessSeries {
  readonly loadAverageAtStart: number
  readonly wallSecondsMedian: number
  readonly wallSecondsMin: number
  readonly cpuSecondsMedian: number | null
  readonly wallSeconds: ReadonlyArray<number>
  readonly cpuSeconds: ReadonlyArray<number | null>
}

/** Run `command` `repeats` times, one after another, and summarise the times. */
export function timeSeries(
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env?: NodeJS.ProcessEnv; readonly repeats: number }
): ProcessSeries {
  const loadAverageAtStart = Math.round(loadavg()[0]! * 100) / 100
  const times = Array.from({ length: options.repeats }, () => timeProcess(command, args, options))
  const walls = times.map((time) => round3(time.wallSeconds))
  const cpus = times.map((time) => (time.cpuSeconds === null ? null : round3(time.cpuSeconds)))
  const knownCpus = cpus.filter((cpu): cpu is number => cpu !== null)
  return {
    loadAverageAtStart,
    wallSecondsMedian: median(walls),
    wallSecondsMin: Math.min(...walls),
    cpuSecondsMedian: knownCpus.length === cpus.length ? median(knownCpus) : null,
    wallSeconds: walls,
    cpuSeconds: cpus
  }
}
