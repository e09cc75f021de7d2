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
