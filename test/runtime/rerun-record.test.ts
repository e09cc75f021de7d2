/**
 * The writing side of rerun stamps: the files a plan read and when they can be trusted,
 * and the import of no-op reruns that the launcher recorded, on a real DuckDB file.
 */
import { mkdirSync, symlinkSync, utimesSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { runWorkflow } from "../../src/runtime/executor.ts"
import { racyMs } from "../../src/runtime/file-identity.mjs"
import { addInstalledPackages, PlanReads } from "../../src/runtime/rerun-record.ts"
import { absent, pendingRunsPath } from "../../src/runtime/rerun-stamp.mjs"
import { openForWrite } from "../../src/runtime/session.ts"
import { workflow, writeSyntheticData } from "../../workflows/synthetic.ts"
import { repoRoot, tempDir } from "./helpers.ts"

describe("PlanReads", () => {
  it("distrusts files written moments before", () => {
    const root = tempDir("reads-tree")
    mkdirSync(join(root, "a/b"), { recursive: true })
    writeFileSync(join(root, "a/b/c.txt"), "c")
    symlinkSync(join(root, "a"), join(root, "loop"))
    const reads = new PlanReads()
    reads.addTree(root)
    reads.addFile(join(root, "missing.json"))
    const trusted = reads.trusted()
    // The link back to a folder already walked ends the walk there. Every file was written
    // moments before, so nothing is trusted yet.
    expect(trusted).toMatchObject({ reason: expect.stringContaining("changed moments before the run") })
  })

  it("trusts files older than the racy window", async () => {
    const root = tempDir("reads-old")
    mkdirSync(join(root, "sub"))
    writeFileSync(join(root, "sub/x.txt"), "x")
    await new Promise((resolve) => setTimeout(resolve, racyMs + 100))
    const reads = new PlanReads()
    reads.addTree(root)
    reads.addFile(join(root, "missing.json"))
    const trusted = reads.trusted()
    expect("files" in trusted).toBe(true)
    const files = new Map("files" in trusted ? trusted.files : [])
    expect([...files.keys()].sort()).toEqual([root, join(root, "missing.json"), join(root, "sub"), join(root, "sub/x.txt")].sort())
    expect(files.get(join(root, "missing.json"))).toBe(absent)
    expect(files.get(join(root, "sub/x.txt"))).toMatch(/^\d+:\d+:1:\d+:\d+$/)
  })

  it("records backend search folders", () => {
    const reads = new PlanReads()
    addInstalledPackages(reads)
    const trusted = reads.trusted()
    expect("files" in trusted).toBe(true)
    const files = new Map("files" in trusted ? trusted.files : [])
    expect(files.has(join(repoRoot, "node_modules", "@tensorflow"))).toBe(true)
    // A backend installed above the repository would be found too, so that folder counts.
    expect(files.has(join(dirname(repoRoot), "node_modules", "@tensorflow"))).toBe(true)
    // A compiled binding added to an installed package changes its folder or its lib folder.
    expect(files.has(join(repoRoot, "node_modules", "@tensorflow", "tfjs-node"))).toBe(true)
    expect(files.has(join(repoRoot, "node_modules", "@tensorflow", "tfjs-node", "lib"))).toBe(true)
  })

  it("rejects files outside source folders", () => {
    const root = tempDir("reads-outside")
    const reads = new PlanReads()
    reads.addTree(root)
    reads.requireRecorded([join(root, "..", "elsewhere.txt")])
    expect(reads.trusted()).toMatchObject({ reason: expect.stringContaining("lies outside its source's folders") })
  })

  it("rejects a file modified in the future", () => {
    const root = tempDir("reads-future")
    const file = join(root, "x.txt")
    writeFileSync(file, "x")
    const later = new Date(Date.now() + 60_000)
    utimesSync(file, later, later)
    const reads = new PlanReads()
    reads.addFile(file)
    expect(reads.trusted()).toMatchObject({ reason: expect.stringContaining("x.txt") })
  })
})

describe("importing pending runs", () => {
  const workspace = tempDir("pending")
  const data = join(workspace, "..", `${workspace.split("/").pop()}-data`)
  let base = ""

  beforeAll(async () => {
    await writeSyntheticData(data, 3)
    base = (await runWorkflow({ workflow, workspace, dataDir: data, jobs: 1 })).runId
  })

  const entry = (run: string, baseRun = base) => JSON.stringify({
    run, base: baseRun, started: "2026-01-02T03:04:05.000Z", finished: "2026-01-02T03:04:05.010Z", host: "h", pid: 1,
    summary: [{ stage: "scale", ran: 0, cached: 3, failed: 0, blocked: 0, ms: 0 }]
  })

  async function importLines(lines: ReadonlyArray<string>) {
    writeFileSync(pendingRunsPath(workspace), lines.join("\n"))
    const session = await openForWrite(workspace)
    try {
      return await session.db.allAsJson<{ id: string; status: string; tasks: number; cached: number; params: number }>(
        `SELECT r.id, r.status,
           (SELECT count(*) FROM run_tasks t WHERE t.run_id = r.id)::INTEGER AS tasks,
           (SELECT count(*) FROM run_tasks t WHERE t.run_id = r.id AND t.action = 'cached')::INTEGER AS cached,
           (SELECT count(*) FROM params p WHERE p.run_id = r.id)::INTEGER AS params
         FROM runs r ORDER BY r.id`)
    } finally {
      await session.close()
    }
  }

  it("imports each run once", async () => {
    const lines = [entry("R1"), entry("R1"), entry("R2", "no-such-run"), entry("R3").slice(0, 40)]
    const first = await importLines(lines)
    const baseRow = first.find((row) => row.id === base)!
    expect(first.map((row) => row.id).sort()).toEqual([base, "R1"].sort())
    expect(first.find((row) => row.id === "R1")).toEqual({
      id: "R1", status: "ok", tasks: baseRow.tasks, cached: baseRow.tasks, params: baseRow.params
    })
    // A kill after the commit and before the file's removal leaves the same lines again.
    const again = await importLines(lines)
    expect(again).toEqual(first)
  })
})

describe("stamp of a run", () => {
  it("skips the stamp for a link loop", async () => {
    const folder = tempDir("stamp-loop")
    const data = join(folder, "data")
    await writeSyntheticData(data, 2)
    symlinkSync("a", join(data, "b"))
    symlinkSync("b", join(data, "a"))
    const summary = await runWorkflow({
      workflow, workspace: join(folder, "ws"), dataDir: data, jobs: 1,
      stamp: { cwd: folder, argv: [], env: {}, describeOutputs: () => "" }
    })
    expect(summary.status).toBe("ok")
    expect(summary.stampSkipped).toMatch(/cannot be read/)
  })
})
