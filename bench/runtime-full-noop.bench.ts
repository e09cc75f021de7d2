/**
 * No-op rerun of the RETOUCH workflow's `full` over 112 phantom volumes at the vendors'
 * real geometry (38 Cirrus, 37 Spectralis, 37 Topcon): as many volumes as the RETOUCH
 * training and test sets hold together. The build runs once with cheap settings, because only the rerun is
 * measured: small entropy and closing disks for roi, the `ci` training profile, and one
 * test case. Each no-op is timed as a whole CLI process through bin/octflow.mjs, as
 * `npm run workflow` runs it, with wall and user+system CPU times, and checked to have run
 * nothing. A rerun of the command that last ran is replayed by the launcher from the
 * workspace's rerun stamp. The series "noopWithoutStamp" removes the stamp before each run,
 * as any other command that writes the workspace does, so the CLI plans and checks the
 * whole run. Timing starts once the 1-minute load average is at most 0.5, or after 10
 * minutes of waiting, and the record states which.
 * Target: under 2 s. The phantoms (about 5 GB) and the workspace stay under .tmp/ so that
 * later runs reuse them; delete .tmp/bench-full-noop to start over.
 * Writes bench/results/runtime-full-noop.json.
 * Usage: npx tsx bench/runtime-full-noop.bench.ts [CASES]; IDLE_WAIT_SECONDS=0 skips the wait.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { roundRobinCases, writePhantomDataset } from "../src/phantom/dataset.ts"
import { stampPath } from "../src/runtime/rerun-stamp.mjs"
import { describeMachine, finishMachineRecord, waitForIdle } from "./support/machine.ts"
import { timeSeries } from "./support/process-time.ts"

const benchDir = dirname(fileURLToPath(import.meta.url))
const repoRoot = dirname(benchDir)
const caseCount = Number(process.argv[2] ?? "112")
const repeats = 5
const targetSeconds = 2
const idleLoad = 0.5
const idleWaitSeconds = Number(process.env.IDLE_WAIT_SECONDS ?? "600")

const root = join(repoRoot, ".tmp", "bench-full-noop", String(caseCount))
const dataDir = join(root, "data")
const workspace = join(root, "workspace")

/** Cheap settings for the one-off build; the no-op reruns use the same, so all is cached. */
const buildArgs = [
  "--profile", "ci",
  "-p", "roi.entropyRadius=2",
  "-p", "roi.closingRadius=5",
  "-p", "split.testFraction=0.01",
  "-p", "evaluate.overlaySlices=1"
]

const environment = { ...process.env, OCTFLOW_BACKEND: "wasm" }

const cli = (args: readonly string[]) => {
  const started = performance.now()
  const result = spawnSync(process.execPath, ["bin/octflow.mjs", ...args], { cwd: repoRoot, encoding: "utf8", env: environment })
  const seconds = (performance.now() - started) / 1000
  if (result.status !== 0) {
    throw new Error(`workflow ${args[0]} failed with exit status ${result.status}:\n${result.stderr.slice(-4000)}`)
  }
  return { seconds, stdout: result.stdout }
}

const main = async () => {
  const machine = describeMachine()
  if (!existsSync(join(dataDir, "phantom.json"))) {
    process.stderr.write(`writing ${caseCount} full-size phantoms to ${dataDir}\n`)
    mkdirSync(dataDir, { recursive: true })
    await writePhantomDataset(dataDir, { cases: roundRobinCases(caseCount), seed: 112 })
  }

  process.stderr.write("building the workspace (runs once; can take tens of minutes)\n")
  const build = cli(["full", "--data", dataDir, "--workspace", workspace, ...buildArgs])
  process.stderr.write(`build or catch-up run took ${build.seconds.toFixed(1)} s\n`)
  // A second untimed run settles anything the first left to redo, such as an output whose
  // code changed while it ran, so every timed run below is a true no-op.
  cli(["full", "--data", dataDir, "--workspace", workspace, ...buildArgs])

  process.stderr.write(`waiting up to ${idleWaitSeconds} s for a 1-minute load average of ${idleLoad}\n`)
  const idle = await waitForIdle(idleLoad, idleWaitSeconds)
  const noop = timeSeries(process.execPath, ["bin/octflow.mjs", "full", "--data", dataDir, "--workspace", workspace, ...buildArgs], {
    cwd: repoRoot,
    env: environment,
    repeats
  })
  const fullArgs = ["bin/octflow.mjs", "full", "--data", dataDir, "--workspace", workspace, ...buildArgs]
  const withoutStamp = ["-c", `rm -f '${stampPath(workspace)}' && exec '${process.execPath}' ${fullArgs.map((a) => `'${a}'`).join(" ")}`]
  const noopWithoutStamp = timeSeries("/bin/sh", withoutStamp, { cwd: repoRoot, env: environment, repeats })
  const counts = JSON.parse(
    cli([
      "query", "--json", "--workspace", workspace,
      `SELECT action, count(*) AS tasks FROM run_tasks
       WHERE run_id = (SELECT id FROM runs ORDER BY started DESC LIMIT 1) GROUP BY action`
    ]).stdout
  ) as Array<{ action: string; tasks: number }>
  const ranNothing = counts.every((row) => row.action === "cached")

  const median = noop.wallSecondsMedian
  const result = {
    name: "runtime-full-noop",
    date: new Date().toISOString(),
    machine: finishMachineRecord(machine),
    cases: caseCount,
    buildArgs,
    lastRunTasks: counts,
    idleWait: { maxLoadAverage: idleLoad, reached: idle },
    command: "node bin/octflow.mjs full ...",
    noop,
    noopSeconds: noop.wallSeconds,
    medianSeconds: median,
    noopWithoutStamp: { command: "rm -f <workspace>/rerun-stamp.json && node bin/octflow.mjs full ...", ...noopWithoutStamp },
    target: `no-op full over ${caseCount} RETOUCH-size volumes under ${targetSeconds} s, running nothing`,
    met: ranNothing && median < targetSeconds && noopWithoutStamp.wallSecondsMedian < targetSeconds
  }
  mkdirSync(join(benchDir, "results"), { recursive: true })
  writeFileSync(join(benchDir, "results", "runtime-full-noop.json"), JSON.stringify(result, null, 2) + "\n")
  process.stdout.write(JSON.stringify(result, null, 2) + "\n")
}

await main()
