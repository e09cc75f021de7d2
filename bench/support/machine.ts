/** Describes the machine and its load for benchmark records. */
import os from "node:os"

export interface MachineRecord {
  readonly cpu: string
  readonly logicalCpus: number
  /** Threads Node would run in parallel (os.availableParallelism), the basis of `underLoad`. */
  readonly availableParallelism: number
  readonly totalMemoryGiB: number
  readonly node: string
  readonly loadAverageBefore: readonly number[]
  loadAverageAfter?: readonly number[]
  /** True when the 1-minute load average exceeded half the available parallelism, so times are inflated. */
  underLoad?: boolean
}

const loadAverage = (): number[] => os.loadavg().map((value) => Math.round(value * 100) / 100)

/** Times one synchronous call in wall and CPU seconds. CPU time is less inflated by other processes. */
export const timeCall = <A>(run: () => A): { result: A; seconds: number; cpuSeconds: number } => {
  const cpuStart = process.cpuUsage()
  const start = performance.now()
  const result = run()
  const seconds = (performance.now() - start) / 1000
  const cpu = process.cpuUsage(cpuStart)
  return { result, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 }
}

export const describeMachine = (): MachineRecord => ({
  cpu: os.cpus()[0]?.model ?? "unknown",
  logicalCpus: os.cpus().length,
  availableParallelism: os.availableParallelism(),
  totalMemoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
  node: process.version,
  loadAverageBefore: loadAverage()
})

/** Records the load after the run and whether the machine was busy during it. */
export const finishMachineRecord = (machine: MachineRecord): MachineRecord => {
  machine.loadAverageAfter = loadAverage()
  const peak = Math.max(machine.loadAverageBefore[0] ?? 0, machine.loadAverageAfter[0] ?? 0)
  machine.underLoad = peak > machine.availableParallelism / 2
  return machine
}

/**
 * Wait until the 1-minute load average is at most `maxLoad`, checking every 5 s, for at most
 * `timeoutSeconds`. Returns whether the load got there. On a shared machine other jobs
 * inflate wall times, and the 1-minute average takes a few minutes to fall after they end.
 */
export async function waitForIdle(maxLoad: number, timeoutSeconds: number): Promise<boolean> {
  const deadline = Date.now() + timeoutSeconds * 1000
  for (;;) {
    if ((os.loadavg()[0] ?? 0) <= maxLoad) return true
    if (Date.now() >= deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 5000))
  }
}
