import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { Database } from "../../src/runtime/db.ts"
import { runWorkflow } from "../../src/runtime/executor.ts"
import { collectGarbage, listArtifacts, listRuns, workspaceStatus } from "../../src/runtime/inspect.ts"
import { workflow, writeSyntheticData } from "../../workflows/synthetic.ts"
import { runCli, startCli, tempDir, type CliResult } from "./helpers.ts"

const fullArgs = (workspace: string, data: string) => ["full", "--workflow", "synthetic", "--workspace", workspace, "--data", data, "--jobs", "2"]

/** Tasks of `scale` that ran, from the last plain progress line ("scale: 3/8 done (ran 3, ..."). */
const ranLines = (stderr: string) => {
  const counts = [...stderr.matchAll(/scale: \d+\/\d+ done \(ran (\d+)/g)].map((m) => Number(m[1]))
  return counts.length === 0 ? 0 : counts[counts.length - 1]!
}

/** Start a slow run and SIGKILL it once `shouldKill(stderr)` holds. */
function killWhen(args: ReadonlyArray<string>, shouldKill: (stderr: string) => boolean): Promise<CliResult> {
  let killed = false
  const { done } = startCli(args, { OCTFLOW_SYNTHETIC_SLEEP_MS: "400" }, (stderr, child) => {
    if (!killed && shouldKill(stderr)) {
      killed = true
      child.kill("SIGKILL")
    }
  })
  return done
}

async function artifactHashes(workspace: string): Promise<Record<string, string>> {
  const rows = await listArtifacts(workspace)
  return Object.fromEntries(rows.map((r) => [`${r.stage}.${r.port}/${r.item ?? ""}`, r.hash]))
}

/** Builds the synthetic workflow over 2 items in a new workspace. */
async function builtWorkspace(prefix: string): Promise<{ workspace: string; ownData: string }> {
  const dir = tempDir(prefix)
  const workspace = join(dir, "ws")
  const ownData = join(dir, "data")
  await writeSyntheticData(ownData, 2)
  await runWorkflow({ workflow, workspace, dataDir: ownData, jobs: 1 })
  return { workspace, ownData }
}

describe("a run killed with SIGKILL", () => {
  let data: string
  let reference: Record<string, string>

  beforeAll(async () => {
    const dir = tempDir("crash")
    data = join(dir, "data")
    await writeSyntheticData(data, 8)
    const clean = await runWorkflow({ workflow, workspace: join(dir, "reference"), dataDir: data, jobs: 2 })
    expect(clean.error?.message).toBeUndefined()
    reference = await artifactHashes(join(dir, "reference"))
  })

  it("finishes with equal hashes after kills", async () => {
    const workspace = join(tempDir("crash-ws"), "ws")
    const args = fullArgs(workspace, data)
    const kills = [
      await killWhen(args, (stderr) => stderr.includes("run ") && stderr.includes("scale (8)")),
      await killWhen(args, (stderr) => ranLines(stderr) >= 1),
      await killWhen(args, (stderr) => ranLines(stderr) >= 3)
    ]
    for (const kill of kills) expect(kill.signal).toBe("SIGKILL")

    const rerun = await runCli(args)
    expect(rerun.code).toBe(0)
    expect(rerun.stderr).toContain("taking over the lock")
    expect(await artifactHashes(workspace)).toEqual(reference)
    expect(readdirSync(join(workspace, "staging"))).toEqual([])

    const runs = await listRuns(workspace)
    expect(runs.filter((r) => r.status === "interrupted").length).toBe(3)
    // The three interrupted runs are older than the finished rerun, so gc keeps the rerun alone.
    const gc = await collectGarbage(workspace, { keepRuns: 1, dryRun: true })
    expect(gc.keptRuns).toEqual([runs[0]!.id])
    expect(runs[0]!.status).toBe("ok")
  })

  it("waits for a reader to close the database", async () => {
    const { workspace, ownData } = await builtWorkspace("crash-reader")
    // A read command has the database open without the workspace lock.
    const reader = await Database.open(join(workspace, "octflow.duckdb"), { readOnly: true })
    const noWait = await runCli([...fullArgs(workspace, ownData), "--force=report", "--no-wait"])
    expect(noWait.code).toBe(3)
    expect(noWait.stderr).toContain("leave out --no-wait to wait for it")
    const closed = new Promise<void>((resolve) => setTimeout(() => void reader.close().then(resolve), 700))
    const run = await runCli([...fullArgs(workspace, ownData), "--force=report"])
    await closed
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain("waiting up to 30 s for a read command to close the database")
    expect(run.stdout).toMatch(/^report\s+1\s/m)
  })

  it("fails a run whose links failed", async () => {
    const { workspace, ownData } = await builtWorkspace("crash-links")
    rmSync(join(workspace, "runs"), { recursive: true })
    writeFileSync(join(workspace, "runs"), "not a folder")
    await expect(runWorkflow({ workflow, workspace, dataDir: ownData, jobs: 1, force: ["report"] }))
      .rejects.toMatchObject({ _tag: "RunLinksFailed" })
    const runs = await listRuns(workspace)
    expect(runs.map((run) => run.status)).toEqual(["failed", "ok"])
    // The run's committed task is reused once the folder is fixed.
    rmSync(join(workspace, "runs"))
    const rerun = await runWorkflow({ workflow, workspace, dataDir: ownData, jobs: 1 })
    expect(rerun.stages.map((stage) => stage.ran)).toEqual([0, 0, 0])
  })

  it("keeps latest's run in gc", async () => {
    const { workspace, ownData } = await builtWorkspace("crash-gc-latest")
    // Runs that leave latest on the study, as predict runs do, are newer than it.
    for (const factor of [3, 4]) {
      await runWorkflow({ workflow, workspace, dataDir: ownData, jobs: 1, overrides: [`scale.factor=${factor}`], updateLatest: false })
    }
    const result = await collectGarbage(workspace, { keepRuns: 1 })
    expect(result.keptRuns).toHaveLength(2)
    expect(readFileSync(join(workspace, "latest/report/summary.json"), "utf8")).toContain("synthetic report")
    const rerun = await runWorkflow({ workflow, workspace, dataDir: ownData, jobs: 1 })
    expect(rerun.stages.map((stage) => stage.ran)).toEqual([0, 0, 0])
    await expect(collectGarbage(workspace, { keepRuns: -1 })).rejects.toThrow("--keep")
  })

  it("rejects an unknown stage in artifacts", async () => {
    const { workspace } = await builtWorkspace("crash-artifacts")
    await expect(listArtifacts(workspace, { stage: "nope" })).rejects.toMatchObject({ _tag: "UnknownName", kind: "stage" })
    await expect(listArtifacts(workspace, { run: "nope" })).rejects.toMatchObject({ _tag: "UnknownName", kind: "run" })
  })

  it("makes a reader wait briefly", async () => {
    const { workspace, ownData } = await builtWorkspace("crash-short-writer")
    // As a read command that imports recorded runs does, this process has the database open briefly.
    const writer = await Database.open(join(workspace, "octflow.duckdb"))
    const closed = new Promise<void>((resolve) => setTimeout(() => void writer.close().then(resolve), 500))
    const status = await runCli(["status", "--workspace", workspace])
    await closed
    expect(status.code, status.stderr).toBe(0)
    expect(status.stdout).toContain("newest run")

    // A writer that keeps the database, as a run does, makes a reader exit 3 after 3 s.
    const run = await Database.open(join(workspace, "octflow.duckdb"))
    try {
      const busy = await runCli(["status", "--workspace", workspace])
      expect(busy.code).toBe(3)
      expect(busy.stderr).toContain("open for writing")
    } finally {
      await run.close()
    }
  })

  it("lists a killed run as interrupted", async () => {
    const dir = tempDir("crash-list")
    const workspace = join(dir, "ws")
    const ownData = join(dir, "data")
    await writeSyntheticData(ownData, 8)
    const finished = await runCli(fullArgs(workspace, ownData))
    expect(finished.code).toBe(0)
    // With 4 of 8 files changed, the run reuses scale and stats of the other 4 items.
    for (let i = 0; i < 4; i++) writeFileSync(join(ownData, `item-${String(i).padStart(4, "0")}.txt`), `${i + 100}\n`)
    const killed = await killWhen(fullArgs(workspace, ownData), (stderr) => ranLines(stderr) >= 1)
    expect(killed.signal).toBe("SIGKILL")

    // No process has taken the lock over yet, so the database still marks the run running.
    const runs = await listRuns(workspace)
    expect(runs.map((r) => r.status)).toEqual(["interrupted", "ok"])
    // The reused tasks are recorded when the run starts, so the killed run lists them.
    expect(runs[0]!.cached).toBe(8)
    expect(runs[0]!.ran).toBeGreaterThanOrEqual(1)

    // status lists every planned stage, also those with no finished task yet.
    const status = await workspaceStatus(workspace)
    expect(status.stages.map((s) => s.stage)).toEqual(["scale", "stats", "report"])
    expect(status.stages.map((s) => s.tasks)).toEqual([8, 8, 1])
    expect(status.stages[2]).toMatchObject({ ran: 0, cached: 0, failed: 0 })
    const statusText = await runCli(["status", "--workspace", workspace])
    expect(statusText.stdout).toMatch(/^ {2}report +ran 0, skipped 0, failed 0, not run 1$/m)

    // The interrupted run takes no gc slot, and it is kept too, because no finished run
    // followed it and a rerun resumes from its committed tasks.
    const gc = await collectGarbage(workspace, { keepRuns: 1, dryRun: true })
    expect([...gc.keptRuns].sort()).toEqual(runs.map((r) => r.id).sort())
    const committed = await listArtifacts(workspace, { run: runs[0]!.id })
    expect(committed.length).toBeGreaterThan(0)
    for (const artifact of committed) expect(gc.removedObjects).not.toContain(relative(workspace, artifact.path))

    // The CLI's dry run lists each object it would remove, then the counts.
    const dryRun = await runCli(["gc", "--dry-run", "--keep", "1", "--workspace", workspace])
    expect(dryRun.code).toBe(0)
    const listed = dryRun.stdout.split("\n").filter((line) => line.startsWith("object  objects/"))
    expect(listed.map((line) => line.slice("object  ".length))).toEqual(gc.removedObjects)
    expect(dryRun.stdout).toContain(`would remove ${gc.removedObjects.length} objects`)
  })
})

describe("two processes on one workspace", () => {
  it("waits, or fails with --no-wait", async () => {
    const dir = tempDir("concurrent")
    const data = join(dir, "data")
    await writeSyntheticData(data, 4)
    const args = fullArgs(join(dir, "ws"), data)

    let startedWaiter: Promise<CliResult> | null = null
    let noWait: Promise<CliResult> | null = null
    const first = startCli(args, { OCTFLOW_SYNTHETIC_SLEEP_MS: "4000" }, (stderr) => {
      if (noWait === null && stderr.includes("scale (4)")) {
        noWait = runCli([...args, "--no-wait"])
        startedWaiter = runCli(args)
      }
    })
    const firstResult = await first.done
    expect(firstResult.code).toBe(0)
    expect(noWait).not.toBeNull()

    const refused = await noWait!
    expect(refused.code).toBe(3)
    expect(refused.stderr).toMatch(/is in use by process \d+/)

    const waited = await startedWaiter!
    expect(waited.code).toBe(0)
    expect(waited.stderr).toContain("waiting: workspace is in use")
    expect(waited.stdout).toMatch(/report\s+0\s+1\s+0\s+0/)
    expect(existsSync(join(dir, "ws", "lock"))).toBe(false)
  })
})

describe("a run stopped with Ctrl-C", () => {
  it("says what is kept and resumes", async () => {
    const dir = tempDir("interrupt")
    const data = join(dir, "data")
    await writeSyntheticData(data, 4)
    const args = fullArgs(join(dir, "ws"), data)
    let sent = false
    const stopped = await startCli(args, { OCTFLOW_SYNTHETIC_SLEEP_MS: "400" }, (stderr, child) => {
      if (!sent && ranLines(stderr) >= 1) {
        sent = true
        child.kill("SIGINT")
      }
    }).done
    expect(stopped.code).toBe(130)
    expect(stopped.stderr).toContain("octflow: stopped by SIGINT. Finished tasks are kept; run the same command again to continue.")

    const rerun = await runCli(args)
    expect(rerun.code).toBe(0)
    expect(rerun.stdout).toMatch(/scale\s+[0-3]\s+[1-4]\s+0\s+0/)
  })
})
