/**
 * Runs bench/kernel_reference.py (the original Python method) on volumes the benchmarks
 * write to a temp folder, and returns its timings and outputs. Reports why it cannot run
 * when the reference module or the Python packages are missing.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

export const benchDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
export const repoRoot = path.resolve(benchDir, "..")
const referenceDir = path.resolve(repoRoot, "../shared/reference")
/** Debian's interpreter, where python3-skimage and python3-pil install. */
const python = "/usr/bin/python3"

export interface PythonTask {
  readonly kind: "preprocess" | "roi"
  readonly data: Uint8Array | Uint16Array
  readonly dims: readonly [number, number, number]
  readonly vendor: string
  readonly template?: Uint8Array
  readonly templateDims?: readonly [number, number, number]
}

export interface PythonRun {
  readonly available: true
  readonly versions: Record<string, string>
  readonly results: ReadonlyArray<{ readonly seconds: number; readonly cpuSeconds: number; readonly output: Uint8Array }>
}

export interface PythonUnavailable {
  readonly available: false
  readonly reason: string
}

/** Checks that the interpreter, its packages and the reference module are present. */
export const pythonUnavailableReason = (): string | null => {
  if (!existsSync(path.join(referenceDir, "seed_reference.py"))) return `reference module not found in ${referenceDir}`
  if (!existsSync(python)) return `${python} not found`
  const probe = spawnSync(python, ["-c", "import skimage, PIL, scipy"], { encoding: "utf8" })
  if (probe.status !== 0) return `${python} lacks scikit-image, Pillow or SciPy: ${probe.stderr.trim().split("\n").pop()}`
  return null
}

const asBytes = (data: Uint8Array | Uint16Array): Uint8Array => new Uint8Array(data.buffer, data.byteOffset, data.byteLength)

/** Runs the tasks in one Python process on one core (OpenMP and BLAS limited to one thread). */
export const runPythonReference = (tasks: readonly PythonTask[]): PythonRun | PythonUnavailable => {
  const reason = pythonUnavailableReason()
  if (reason !== null) return { available: false, reason }
  const dir = mkdtempSync(path.join(os.tmpdir(), "octflow-kernel-bench-"))
  try {
    const jobTasks = tasks.map((task, i) => {
      const input = path.join(dir, `input-${i}.raw`)
      writeFileSync(input, asBytes(task.data))
      let template: string | null = null
      if (task.template !== undefined) {
        template = path.join(dir, `template-${i}.raw`)
        writeFileSync(template, task.template)
      }
      return {
        kind: task.kind,
        input,
        dims: task.dims,
        dtype: task.data instanceof Uint16Array ? "uint16" : "uint8",
        vendor: task.vendor,
        template,
        templateDims: task.templateDims ?? null,
        output: path.join(dir, `output-${i}.raw`)
      }
    })
    const jobFile = path.join(dir, "job.json")
    writeFileSync(jobFile, JSON.stringify({ tasks: jobTasks }))
    const env = { ...process.env, OMP_NUM_THREADS: "1", OPENBLAS_NUM_THREADS: "1" }
    const run = spawnSync(python, [path.join(benchDir, "kernel_reference.py"), referenceDir, jobFile], { encoding: "utf8", env })
    if (run.status !== 0) return { available: false, reason: `kernel_reference.py failed: ${run.stderr.trim().split("\n").pop()}` }
    const parsed = JSON.parse(run.stdout) as { tasks: { seconds: number; cpuSeconds: number }[]; versions: Record<string, string> }
    return {
      available: true,
      versions: parsed.versions,
      results: parsed.tasks.map((result, i) => ({ seconds: result.seconds, cpuSeconds: result.cpuSeconds, output: new Uint8Array(readFileSync(jobTasks[i].output)) }))
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
