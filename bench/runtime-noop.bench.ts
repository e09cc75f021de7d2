/**
 * No-op rerun of the synthetic 3-stage workflow (scale and stats per item, then report)
 * over 1,000 items, next to Snakemake on the same DAG. octflow builds everything once. The
 * Snakemake outputs are written directly with consistent mtimes, because Snakemake 7.21
 * starts one Python process per `run:` job. A trial build finished 137 of 2,001 jobs in
 * 3 minutes here. A dry run confirms that Snakemake has nothing to do.
 *
 * Each no-op is timed as a whole process, as a user runs it: `node bin/octflow.mjs` (the
 * `octflow` bin, which `npm run workflow` also runs), `npm run workflow` with npm's own
 * start-up, and `snakemake`, with wall and user+system CPU times. A rerun of the command
 * that last ran is replayed by the launcher from the workspace's rerun stamp. The series
 * "cliWithoutStamp" removes the stamp before each run, as any other command that writes the
 * workspace does, so the CLI plans and checks the whole run. octflow's no-op is also timed
 * inside this process (runWorkflow only, after the build, without module start-up).
 * Timing starts once the 1-minute load average is at most 0.5, or after 10 minutes of
 * waiting. The record states which, and the load at the start of each series.
 * Target: octflow's CLI no-op at least 10x faster than Snakemake's, and the in-process
 * no-op under 0.25 s. Writes bench/results/runtime-noop.json.
 * Usage: npx tsx bench/runtime-noop.bench.ts [ITEMS]; IDLE_WAIT_SECONDS=0 skips the wait.
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, utimesSync, writeFileSync } from "node:fs"
import { mkdtemp } from "node:fs/promises"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { runWorkflow } from "../src/runtime/executor.ts"
import { racyMs } from "../src/runtime/file-identity.mjs"
import { stampPath } from "../src/runtime/rerun-stamp.mjs"
import { workflow, writeSyntheticData } from "../workflows/synthetic.ts"
import { describeMachine, finishMachineRecord, waitForIdle } from "./support/machine.ts"
import { timeProcess, timeSeries } from "./support/process-time.ts"

const benchDir = dirname(fileURLToPath(import.meta.url))
const repoRoot = dirname(benchDir)
const items = Number(process.argv[2] ?? "1000")
const inProcessRepeats = 5
const processRepeats = 11
const snakemakeRepeats = 5
const idleLoad = 0.5
const idleWaitSeconds = Number(process.env.IDLE_WAIT_SECONDS ?? "600")

const snakefile = `
ITEMS = sorted(glob_wildcards("data/{item}.txt").item)

rule all:
    input: "out/report/summary.json"

rule scale:
    input: "data/{item}.txt"
    output: "out/scale/{item}.txt"
    run:
        values = [float(v) * 2 for v in open(input[0]).read().split()]
        open(output[0], "w").write("".join(f"{v}\\n" for v in values))

rule stats:
    input: "out/scale/{item}.txt"
    output: "out/stats/{item}.json"
    run:
        values = [float(v) for v in open(input[0]).read().split()]
        open(output[0], "w").write(str(sum(values)))

rule report:
    input: expand("out/stats/{item}.json", item=ITEMS)
    output: "out/report/summary.json"
    run:
        open(output[0], "w").write(str(sum(float(open(p).read()) for p in input)))
`

/**
 * Write the outputs Snakemake would produce, oldest layer first with increasing mtimes, so
 * Snakemake finds every job up to date without running the 2,001 jobs itself.
 */
async function writeSnakemakeOutputs(root: string, count: number): Promise<void> {
  const layers = ["scale", "stats", "report"]
  for (const layer of layers) mkdirSync(join(root, "out", layer), { recursive: true })
  const stamp = (path: string, secondsFromNow: number) => {
    const time = new Date(Date.now() + secondsFromNow * 1000)
    utimesSync(path, time, time)
  }
  for (let i = 0; i < count; i++) {
    const key = `item-${String(i).padStart(4, "0")}`
    stamp(join(root, "data", `${key}.txt`), -30)
    writeFileSync(join(root, "out/scale", `${key}.txt`), `${2 * i}\n`)
    stamp(join(root, "out/scale", `${key}.txt`), -20)
    writeFileSync(join(root, "out/stats", `${key}.json`), `${2 * i}`)
    stamp(join(root, "out/stats", `${key}.json`), -10)
  }
  writeFileSync(join(root, "out/report/summary.json"), "0")
}

const round = (value: number) => Math.round(value * 1000) / 1000
const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

const machine = describeMachine()
const dir = await mkdtemp(join(tmpdir(), "octflow-bench-noop-"))
const data = join(dir, "data")
const workspace = join(dir, "ws")
await writeSyntheticData(data, items)
const dataWritten = Date.now()

process.stderr.write(`runtime-noop: building ${items} items with octflow\n`)
const buildStarted = performance.now()
const build = await runWorkflow({ workflow, workspace, dataDir: data })
if (build.status !== "ok") throw new Error(build.error?.message)
const octflowBuildSeconds = (performance.now() - buildStarted) / 1000

const snakeDir = join(dir, "snakemake")
mkdirSync(snakeDir)
writeFileSync(join(snakeDir, "Snakefile"), snakefile)
spawnSync("cp", ["-r", data, join(snakeDir, "data")])
process.stderr.write("runtime-noop: writing snakemake outputs\n")
await writeSnakemakeOutputs(snakeDir, items)
const dryRun = spawnSync("snakemake", ["--cores", "2", "--dry-run", "all"], { cwd: snakeDir }).stdout.toString()
if (!dryRun.includes("Nothing to be done")) throw new Error(`snakemake would still run jobs:\n${dryRun.slice(-2000)}`)

process.stderr.write(`runtime-noop: waiting up to ${idleWaitSeconds} s for a 1-minute load average of ${idleLoad}\n`)
const idle = await waitForIdle(idleLoad, idleWaitSeconds)

const inProcess: Array<number> = []
for (let i = 0; i < inProcessRepeats; i++) {
  const started = performance.now()
  const summary = await runWorkflow({ workflow, workspace, dataDir: data })
  inProcess.push(round((performance.now() - started) / 1000))
  if (summary.stages.some((s) => s.ran > 0)) throw new Error("a no-op rerun ran a task")
}

const fullArgs = ["full", "--workflow", "synthetic", "--workspace", workspace, "--data", data]
const bin = join(repoRoot, "bin/octflow.mjs")
// A run writes no stamp for files changed less than racyMs before it.
await new Promise((resolve) => setTimeout(resolve, Math.max(0, dataWritten + racyMs + 100 - Date.now())))
// One untimed run builds the CLI bundle if a source changed, fills the page cache and
// leaves the stamp that the timed reruns are replayed from.
timeProcess(process.execPath, [bin, ...fullArgs], { cwd: repoRoot })
const octflowCli = timeSeries(process.execPath, [bin, ...fullArgs], { cwd: repoRoot, repeats: processRepeats })
const check = spawnSync(process.execPath, [bin, ...fullArgs], { cwd: repoRoot, encoding: "utf8" })
if (!check.stderr.includes("nothing changed since run")) throw new Error(`the rerun was not replayed from its stamp:\n${check.stderr}`)
const withoutStamp = ["-c", `rm -f '${stampPath(workspace)}' && exec '${process.execPath}' '${bin}' ${fullArgs.map((a) => `'${a}'`).join(" ")}`]
const octflowCliWithoutStamp = timeSeries("/bin/sh", withoutStamp, { cwd: repoRoot, repeats: processRepeats })
const npmRun = timeSeries("npm", ["run", "--silent", "workflow", "--", ...fullArgs], { cwd: repoRoot, repeats: processRepeats })
const nodeStartup = timeSeries(process.execPath, ["-e", "0"], { cwd: repoRoot, repeats: processRepeats })
const snakemake = timeSeries("snakemake", ["--cores", "2", "--quiet", "all"], { cwd: snakeDir, repeats: snakemakeRepeats })

const inProcessSeconds = median(inProcess)
const speedup = snakemake.wallSecondsMedian / octflowCli.wallSecondsMedian
const result = {
  benchmark: "runtime-noop",
  date: new Date().toISOString(),
  machine: finishMachineRecord(machine),
  method: `synthetic workflow, ${items} items (${2 * items + 1} tasks); medians of ${inProcessRepeats} in-process runs, ` +
    `${processRepeats} processes per octflow series and ${snakemakeRepeats} Snakemake processes`,
  idleWait: { maxLoadAverage: idleLoad, reached: idle },
  items,
  octflow: {
    buildSeconds: round(octflowBuildSeconds),
    noopInProcessSeconds: inProcessSeconds,
    noopInProcessAllSeconds: inProcess,
    cli: { command: "node bin/octflow.mjs full ...", ...octflowCli },
    cliWithoutStamp: { command: "rm -f <workspace>/rerun-stamp.json && node bin/octflow.mjs full ...", ...octflowCliWithoutStamp },
    npmRunWorkflow: { command: "npm run --silent workflow -- full ...", ...npmRun },
    nodeStartup: { command: "node -e 0", ...nodeStartup }
  },
  snakemake: {
    version: spawnSync("snakemake", ["--version"]).stdout.toString().trim(),
    build: "outputs written directly with consistent mtimes; a dry run confirmed nothing to be done",
    command: "snakemake --cores 2 --quiet all",
    ...snakemake
  },
  speedupCliVsSnakemake: round(speedup),
  speedupCliWithoutStampVsSnakemake: round(snakemake.wallSecondsMedian / octflowCliWithoutStamp.wallSecondsMedian),
  speedupNpmRunVsSnakemake: round(snakemake.wallSecondsMedian / npmRun.wallSecondsMedian),
  target: "CLI no-op at least 10x faster than Snakemake's; in-process no-op under 0.25 s",
  met: { speedup10x: speedup >= 10, inProcessUnder250ms: inProcessSeconds < 0.25 }
}

mkdirSync(join(benchDir, "results"), { recursive: true })
writeFileSync(join(benchDir, "results/runtime-noop.json"), JSON.stringify(result, null, 2) + "\n")
process.stdout.write(JSON.stringify(result, null, 2) + "\n")
