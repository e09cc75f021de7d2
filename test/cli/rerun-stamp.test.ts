/**
 * No-op reruns that the launcher replays from a rerun stamp, through bin/octflow.mjs and
 * the bundle: what they print and record, and every change that must send the command to
 * the CLI instead. Each test has its own data and workspace. The data is written once and
 * left alone for the racy-timestamp window, since a run writes no stamp for files changed
 * moments before it.
 */
import { spawnSync } from "node:child_process"
import {
  chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, unlinkSync, writeFileSync
} from "node:fs"
import { availableParallelism, hostname } from "node:os"
import { dirname, join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { Database } from "../../src/runtime/db.ts"
import { racyMs } from "../../src/runtime/file-identity.mjs"
import { pendingRunsPath, stampPath } from "../../src/runtime/rerun-stamp.mjs"
import { writeSyntheticData } from "../../workflows/synthetic.ts"
import { repoRoot, runCli, tempDir, type CliResult } from "../runtime/helpers.ts"

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const cases = [
  "unchanged", "edited", "added", "environment", "node", "home", "object", "other", "locked", "gc", "fresh", "database", "latest", "pending",
  "busy", "cores"
] as const
const folders = new Map<string, string>()

beforeAll(async () => {
  for (const name of cases) {
    const folder = tempDir(`stamp-${name}`)
    folders.set(name, folder)
    await writeSyntheticData(join(folder, "data"), 6)
  }
  await sleep(racyMs + 200)
})

const commandIn = (folder: string, ...extra: ReadonlyArray<string>) =>
  ["full", "--workflow", "synthetic", "--workspace", join(folder, "ws"), "--data", join(folder, "data"), "--jobs", "2", ...extra]

const replayed = (result: CliResult) => result.stderr.includes("nothing changed since run")

const runIdOf = (result: CliResult) => /^run (\S+) /m.exec(result.stdout)![1]!

/** Tasks that ran per stage, from the summary table. */
function ranCounts(result: CliResult): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const match of result.stdout.matchAll(/^(scale|stats|report)\s+(\d+)\s/gm)) counts[match[1]!] = Number(match[2])
  return counts
}

async function queryJson<Row>(workspace: string, sql: string): Promise<Array<Row>> {
  const result = await runCli(["query", "--json", "--workspace", workspace, sql])
  expect(result.code, result.stderr).toBe(0)
  return JSON.parse(result.stdout) as Array<Row>
}

/** Runs `args` once through the CLI, which leaves a stamp, and checks that it did. */
async function firstRun(args: ReadonlyArray<string>, workspace: string): Promise<CliResult> {
  const result = await runCli(args)
  expect(result.code, result.stderr).toBe(0)
  expect(replayed(result)).toBe(false)
  expect(existsSync(stampPath(workspace))).toBe(true)
  return result
}

describe("no-op rerun from a stamp", () => {
  it("records an unchanged rerun", async () => {
    const folder = folders.get("unchanged")!
    const workspace = join(folder, "ws")
    const first = await firstRun(commandIn(folder), workspace)

    const second = await runCli(commandIn(folder))
    expect(second.code, second.stderr).toBe(0)
    expect(replayed(second)).toBe(true)
    expect(second.stdout).toMatch(/^scale\s+0\s+6\s+0\s+0\s/m)
    expect(second.stdout).toMatch(/^report\s+0\s+1\s+0\s+0\s/m)
    expect(second.stdout).toContain(join(workspace, "octflow.duckdb"))
    const runId = runIdOf(second)
    expect(readlinkSync(join(workspace, "latest"))).toBe(join("runs", runId))
    expect(readFileSync(join(workspace, "latest/report/summary.json"), "utf8")).toContain("synthetic report")
    expect(existsSync(pendingRunsPath(workspace))).toBe(true)

    // Reading the runs imports the pending run, with the tasks and params of the run it repeats.
    const runs = await runCli(["runs", "--json", "--workspace", workspace])
    const listed = (JSON.parse(runs.stdout) as Array<{ id: string; status: string; ran: number; cached: number }>)
      .find((run) => run.id === runId)
    expect(listed).toMatchObject({ status: "ok", ran: 0, cached: 13 })
    expect(existsSync(pendingRunsPath(workspace))).toBe(false)
    const base = runIdOf(first)
    const tasks = await queryJson<{ run_id: string; executions: string; actions: string }>(workspace,
      `SELECT run_id, string_agg(execution_id::VARCHAR, ',' ORDER BY stage, item) AS executions,
         string_agg(DISTINCT action, ',') AS actions
       FROM run_tasks WHERE run_id IN ('${base}', '${runId}') GROUP BY run_id`)
    const byRun = new Map(tasks.map((row) => [row.run_id, row]))
    expect(byRun.get(runId)!.executions).toBe(byRun.get(base)!.executions)
    expect(byRun.get(runId)!.actions).toBe("cached")
    const params = await queryJson<{ run_id: string; n: number }>(workspace,
      `SELECT run_id, count(*)::INTEGER AS n FROM params WHERE run_id IN ('${base}', '${runId}') GROUP BY run_id`)
    expect(params).toHaveLength(2)
    expect(params[0]!.n).toBe(params[1]!.n)
  })

  // Each data change reruns one item of scale and stats, and the report over all items.
  it.each([
    { name: "edited", file: "item-0002.txt", content: "7\n8\n" },
    { name: "added", file: "item-0100.txt", content: "1\n" }
  ])("runs the CLI when a data file is $name", async ({ name, file, content }) => {
    const folder = folders.get(name)!
    await firstRun(commandIn(folder), join(folder, "ws"))
    writeFileSync(join(folder, "data", file), content)
    const result = await runCli(commandIn(folder))
    expect(replayed(result)).toBe(false)
    expect(ranCounts(result)).toEqual({ scale: 1, stats: 1, report: 1 })
  })

  it("runs the CLI when the environment differs", async () => {
    const folder = folders.get("environment")!
    await firstRun(commandIn(folder), join(folder, "ws"))
    const result = await runCli(commandIn(folder), { OCTFLOW_SYNTHETIC_SLEEP_MS: "1" })
    expect(replayed(result)).toBe(false)
    expect(ranCounts(result)).toEqual({ scale: 0, stats: 0, report: 0 })
  })

  it("runs the CLI when Node's options differ", async () => {
    const folder = folders.get("node")!
    await firstRun(commandIn(folder), join(folder, "ws"))
    const result = spawnSync(process.execPath, ["--stack-size=2000", join(repoRoot, "bin/octflow.mjs"), ...commandIn(folder)], {
      cwd: repoRoot,
      encoding: "utf8"
    })
    expect(result.status, result.stderr).toBe(0)
    expect(result.stderr).not.toContain("nothing changed since run")
  })

  it("runs the CLI when HOME differs", async () => {
    const folder = folders.get("home")!
    await firstRun(commandIn(folder), join(folder, "ws"))
    // Node also searches for packages under HOME, so another HOME may find another backend.
    const result = await runCli(commandIn(folder), { HOME: folder })
    expect(result.code, result.stderr).toBe(0)
    expect(replayed(result)).toBe(false)
  })

  it("runs the CLI when a stored object is missing", async () => {
    const folder = folders.get("object")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder), workspace)
    const artifacts = await runCli(["artifacts", "--json", "--stage", "stats", "--workspace", workspace])
    const object = (JSON.parse(artifacts.stdout) as Array<{ item: string; path: string }>).find((a) => a.item === "item-0003")!
    chmodSync(dirname(object.path), 0o755)
    rmSync(object.path)
    const result = await runCli(commandIn(folder))
    expect(replayed(result)).toBe(false)
    expect(ranCounts(result)).toEqual({ scale: 0, stats: 1, report: 0 })
  })

  it("replays only the newest command", async () => {
    const folder = folders.get("other")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder), workspace)
    const other = await runCli(commandIn(folder, "-p", "scale.factor=3"))
    expect(replayed(other)).toBe(false)
    expect(ranCounts(other)).toEqual({ scale: 6, stats: 6, report: 1 })

    const back = await runCli(commandIn(folder))
    expect(replayed(back)).toBe(false)
    expect(ranCounts(back)).toEqual({ scale: 0, stats: 0, report: 0 })
    expect(replayed(await runCli(commandIn(folder)))).toBe(true)
  })

  it("leaves a workspace in use to the CLI", async () => {
    const folder = folders.get("locked")!
    const workspace = join(folder, "ws")
    const args = commandIn(folder, "--no-wait")
    await firstRun(args, workspace)
    writeFileSync(join(workspace, "lock"), JSON.stringify({ pid: process.pid, host: hostname(), started: new Date().toISOString() }))
    const locked = await runCli(args)
    expect(locked.code).toBe(3)
    expect(replayed(locked)).toBe(false)
    unlinkSync(join(workspace, "lock"))
    expect(replayed(await runCli(args))).toBe(true)
  })

  it("counts replays in gc", async () => {
    const folder = folders.get("gc")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder), workspace)
    expect(replayed(await runCli(commandIn(folder)))).toBe(true)
    // A dry run changes nothing a rerun reuses, so the stamp stays valid.
    const dryRun = await runCli(["gc", "--dry-run", "--workspace", workspace])
    expect(dryRun.code, dryRun.stderr).toBe(0)
    expect(replayed(await runCli(commandIn(folder)))).toBe(true)
    const gc = await runCli(["gc", "--keep", "1", "--workspace", workspace])
    expect(gc.code, gc.stderr).toBe(0)
    expect(gc.stdout).toMatch(/^removed 0 objects/m)
    expect(existsSync(stampPath(workspace))).toBe(false)

    const after = await runCli(commandIn(folder))
    expect(replayed(after)).toBe(false)
    expect(ranCounts(after)).toEqual({ scale: 0, stats: 0, report: 0 })
    expect(replayed(await runCli(commandIn(folder)))).toBe(true)
  })

  it("skips the stamp for fresh files", async () => {
    const folder = folders.get("fresh")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder), workspace)
    writeFileSync(join(folder, "data/item-0001.txt"), "5\n")
    const changed = await runCli(commandIn(folder))
    expect(ranCounts(changed)).toEqual({ scale: 1, stats: 1, report: 1 })
    expect(existsSync(stampPath(workspace))).toBe(false)
    expect(replayed(await runCli(commandIn(folder)))).toBe(false)
  })
})

describe("no-op rerun with a changed workspace", () => {
  it("runs the CLI after the database is replaced", async () => {
    const folder = folders.get("database")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder, "-p", "scale.factor=3"), workspace)
    const backup = join(folder, "backup.duckdb")
    cpSync(join(workspace, "octflow.duckdb"), backup)
    await firstRun(commandIn(folder), workspace)
    // Restoring the backup keeps the database's inode, but not its times.
    cpSync(backup, join(workspace, "octflow.duckdb"))
    const result = await runCli(commandIn(folder))
    expect(replayed(result)).toBe(false)
    expect(ranCounts(result)).toEqual({ scale: 6, stats: 6, report: 1 })
  })

  it("keeps the stamp after imports", async () => {
    const folder = folders.get("pending")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder), workspace)
    expect(replayed(await runCli(commandIn(folder)))).toBe(true)
    // A kill can cut the last pending line short; the next replay starts a new line.
    const pending = pendingRunsPath(workspace)
    const text = readFileSync(pending, "utf8")
    writeFileSync(pending, text.slice(0, text.length - 20))
    const next = await runCli(commandIn(folder))
    expect(replayed(next)).toBe(true)
    const runs = JSON.parse((await runCli(["runs", "--json", "--workspace", workspace])).stdout) as Array<{ id: string }>
    expect(runs.map((run) => run.id)).toContain(runIdOf(next))
    expect(runs).toHaveLength(2)
    // The read imported the pending runs into the database and updated the stamp to match.
    expect(replayed(await runCli(commandIn(folder)))).toBe(true)
  })

  it("keeps runs pending during reads", async () => {
    const folder = folders.get("busy")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder), workspace)
    expect(replayed(await runCli(commandIn(folder)))).toBe(true)
    const reader = await Database.open(join(workspace, "octflow.duckdb"), { readOnly: true })
    try {
      const status = await runCli(["status", "--workspace", workspace])
      expect(status.code, status.stderr).toBe(0)
      expect(existsSync(pendingRunsPath(workspace))).toBe(true)
    } finally {
      await reader.close()
    }
    const runs = JSON.parse((await runCli(["runs", "--json", "--workspace", workspace])).stdout) as Array<unknown>
    expect(runs).toHaveLength(2)
    expect(existsSync(pendingRunsPath(workspace))).toBe(false)
  })

  it("leaves a latest folder to the CLI", async () => {
    const folder = folders.get("latest")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder), workspace)
    unlinkSync(join(workspace, "latest"))
    mkdirSync(join(workspace, "latest"))
    const result = await runCli(commandIn(folder))
    expect(replayed(result)).toBe(false)
    expect(existsSync(pendingRunsPath(workspace))).toBe(false)
  })

  const tasksetWorks = availableParallelism() > 1 && spawnSync("taskset", ["-c", "0", "true"]).status === 0
  it.skipIf(!tasksetWorks)("runs the CLI on fewer cores", async () => {
    const folder = folders.get("cores")!
    const workspace = join(folder, "ws")
    await firstRun(commandIn(folder), workspace)
    const pinned = spawnSync("taskset", ["-c", "0", process.execPath, join(repoRoot, "bin/octflow.mjs"), ...commandIn(folder)], {
      cwd: repoRoot,
      encoding: "utf8"
    })
    expect(pinned.status, pinned.stderr).toBe(0)
    expect(pinned.stderr).not.toContain("nothing changed since run")
  })
})

describe("no-op rerun after a code edit", () => {
  it("runs the CLI on the rebuilt bundle", async () => {
    const root = tempDir("stamp-repo")
    for (const path of ["bin", "src", "stages", "workflows", "package.json", "tsconfig.json"]) {
      cpSync(join(repoRoot, path), join(root, path), { recursive: true })
    }
    symlinkSync(join(repoRoot, "node_modules"), join(root, "node_modules"))
    const folder = tempDir("stamp-code")
    await writeSyntheticData(join(folder, "data"), 3)
    await sleep(racyMs + 200)
    const octflow = (args: ReadonlyArray<string>) => {
      const result = spawnSync(process.execPath, [join(root, "bin/octflow.mjs"), ...args], { cwd: folder, encoding: "utf8" })
      return { code: result.status, signal: null, stdout: result.stdout, stderr: result.stderr }
    }
    const args = commandIn(folder)
    expect(octflow(args).code).toBe(0)
    expect(replayed(octflow(args))).toBe(true)

    const scale = join(root, "workflows/synthetic/scale.ts")
    writeFileSync(scale, `// A comment changes no result.\n${readFileSync(scale, "utf8")}`)
    const edited = octflow(args)
    expect(edited.stderr).toContain("because workflows/synthetic/scale.ts changed")
    expect(replayed(edited)).toBe(false)
    expect(ranCounts(edited)).toEqual({ scale: 0, stats: 0, report: 0 })
  })
})
