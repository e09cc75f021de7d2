import { appendFileSync, chmodSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { Database } from "../../src/runtime/db.ts"
import { runWorkflow, type RunOptions, type RunSummary } from "../../src/runtime/executor.ts"
import { explainWorkflow } from "../../src/runtime/explain.ts"
import { collectGarbage, lineage, listArtifacts, query } from "../../src/runtime/inspect.ts"
import type { Workflow } from "../../src/runtime/workflow.ts"
import { openForWrite } from "../../src/runtime/session.ts"
import { tempDir } from "./helpers.ts"
import { copySynthetic, type SyntheticCopy } from "./synthetic-copy.ts"

const counts = (summary: RunSummary) =>
  Object.fromEntries(summary.stages.map((s) => [s.stage, { ran: s.ran, cached: s.cached, failed: s.failed, blocked: s.blocked }]))

const ranCounts = (summary: RunSummary) => Object.fromEntries(summary.stages.map((s) => [s.stage, s.ran]))

describe("runWorkflow on the synthetic workflow", () => {
  let copy: SyntheticCopy
  let workflow: Workflow
  let base: RunOptions

  beforeAll(async () => {
    copy = copySynthetic()
    const module = await copy.load()
    workflow = module.workflow
    const data = join(copy.root, "data")
    await module.writeSyntheticData(data, 5)
    base = { workflow, workspace: join(copy.root, "ws"), dataDir: data, jobs: 2 }
  })

  it("runs every task first", async () => {
    const summary = await runWorkflow(base)
    expect(summary.status).toBe("ok")
    expect(ranCounts(summary)).toEqual({ scale: 5, stats: 5, report: 1 })
  })

  it("skips everything on a second run", async () => {
    const summary = await runWorkflow(base)
    expect(counts(summary)).toEqual({
      scale: { ran: 0, cached: 5, failed: 0, blocked: 0 },
      stats: { ran: 0, cached: 5, failed: 0, blocked: 0 },
      report: { ran: 0, cached: 1, failed: 0, blocked: 0 }
    })
  })

  it("writes outputs under latest", () => {
    const summary = JSON.parse(readFileSync(join(base.workspace, "latest/report/summary.json"), "utf8"))
    // Items i = 0..4 hold i, i+1, 2i; scaled by 2 the sums are 2 * (4i + 1).
    expect(summary.total).toBe(2 * (4 * (0 + 1 + 2 + 3 + 4) + 5))
  })

  it("gives equal fingerprints in another folder", async () => {
    const other = tempDir("other")
    const module = await copy.load()
    await module.writeSyntheticData(join(other, "data"), 5)
    await runWorkflow({ ...base, workspace: join(other, "ws"), dataDir: join(other, "data") })
    const fingerprints = async (ws: string) => {
      const db = await Database.open(join(ws, "octflow.duckdb"), { readOnly: true })
      const rows = await db.all<{ f: string }>("SELECT fingerprint AS f FROM executions ORDER BY f")
      await db.close()
      return rows.map((r) => r.f)
    }
    expect(await fingerprints(join(other, "ws"))).toEqual(await fingerprints(base.workspace))
  })

  it("reruns exactly the dependents of a param", async () => {
    const summary = await runWorkflow({ ...base, overrides: ["stats.offset=1"] })
    expect(summary.error?.message).toBeUndefined()
    expect(ranCounts(summary)).toEqual({ scale: 0, stats: 5, report: 1 })
  })

  it("reuses results of an earlier param value", async () => {
    const summary = await runWorkflow(base)
    expect(ranCounts(summary)).toEqual({ scale: 0, stats: 0, report: 0 })
  })

  it("explains a param change", async () => {
    const entries = await explainWorkflow({ ...base, overrides: ["scale.factor=3"] })
    const scale = entries.find((e) => e.stage === "scale" && e.item === "item-0001")!
    expect(scale.decision).toBe("run")
    expect(scale.reasons).toContain("param scale.factor: 2 -> 3")
    expect(entries.find((e) => e.stage === "stats")!.decision).toBe("pending")
    expect(entries.find((e) => e.stage === "report")!.decision).toBe("pending")
  })

  it("explains no unknown forced stage", async () => {
    await expect(explainWorkflow({ ...base, force: ["nosuch"] })).rejects.toMatchObject({ _tag: "UnknownName", name: "nosuch" })
  })

  it("explains a downstream param change", async () => {
    const entries = await explainWorkflow({ ...base, overrides: ["scale.factor=3", "stats.offset=7"] })
    const stats = entries.find((e) => e.stage === "stats" && e.item === "item-0001")!
    expect(stats.decision).toBe("run")
    // Executions with offset 0 and 1 differ by this param alone, and the newer one is shown.
    expect(stats.reasons).toEqual(["param stats.offset: 1 -> 7", "upstream scale will run first"])
    expect(entries.find((e) => e.stage === "report")!.decision).toBe("pending")
  })

  it("reruns only a changed item", async () => {
    writeFileSync(join(base.dataDir!, "item-0002.txt"), "100\n")
    const entries = await explainWorkflow(base)
    const changed = entries.find((e) => e.stage === "scale" && e.item === "item-0002")!
    expect(changed.reasons[0]).toMatch(/^input numbers item item-0002 file 1: [0-9a-f]{12} -> [0-9a-f]{12}$/)
    expect(entries.filter((e) => e.decision === "skip").length).toBe(8)

    const summary = await runWorkflow(base)
    expect(ranCounts(summary)).toEqual({ scale: 1, stats: 1, report: 1 })
    expect(summary.outcomes.get("scale\u0000item-0002")!.action).toBe("ran")
  })

  it("keeps downstream cached when outputs are equal", async () => {
    // A blank line changes the file's hash but not the numbers it holds.
    appendFileSync(join(base.dataDir!, "item-0002.txt"), "\n")
    const summary = await runWorkflow(base)
    expect(ranCounts(summary)).toEqual({ scale: 1, stats: 0, report: 0 })
  })

  it("reruns nothing after a comment edit", async () => {
    appendFileSync(copy.stageFile("stats"), "\n// A comment changes no behaviour.\n")
    const summary = await runWorkflow(base)
    expect(ranCounts(summary)).toEqual({ scale: 0, stats: 0, report: 0 })
  })

  it("reruns a stage after a code edit", async () => {
    const file = copy.stageFile("stats")
    writeFileSync(file, readFileSync(file, "utf8").replace("+ ctx.params.offset", "+ ctx.params.offset + 1"))
    const entries = await explainWorkflow(base)
    const reasons = entries.find((e) => e.stage === "stats")!.reasons
    expect(reasons).toContain("code module stats.ts changed")
    // The newest stats executions ran with stats.offset=1; the closest ones had today's params.
    expect(reasons.filter((reason) => reason.startsWith("param "))).toEqual([])
    expect(reasons[0]).toMatch(/^compared with execution \d+, the closest earlier one$/)

    const summary = await runWorkflow(base)
    expect(ranCounts(summary)).toEqual({ scale: 0, stats: 5, report: 1 })
  })

  it("reruns a shared helper's dependents", async () => {
    appendFileSync(join(dirname(copy.stageFile("scale")), "numbers.ts"), "\nexport const unused = 1\n")
    const summary = await runWorkflow(base)
    expect(summary.stages.find((s) => s.stage === "scale")!.ran).toBe(5)
  })

  it("commits other items when one fails", async () => {
    process.env.OCTFLOW_SYNTHETIC_FAIL = "item-0003"
    let summary: RunSummary
    let kept: RunSummary
    try {
      summary = await runWorkflow({ ...base, overrides: ["scale.factor=4"] })
      kept = await runWorkflow({ ...base, overrides: ["scale.factor=4"], keepGoing: true })
    } finally {
      delete process.env.OCTFLOW_SYNTHETIC_FAIL
    }
    expect(summary.status).toBe("failed")
    expect(counts(summary).scale).toEqual({ ran: 4, cached: 0, failed: 1, blocked: 0 })
    expect(counts(summary).report!.blocked).toBe(1)
    expect(summary.error!.message).toContain("item-0003: InjectedFailure")
    // The failed item wrote no scratch files, so it leaves no scratch folder behind.
    const failedOutcome = summary.outcomes.get("scale\u0000item-0003")!
    expect(failedOutcome.action).toBe("failed")
    const failedFingerprint = failedOutcome.action === "failed" ? failedOutcome.fingerprint : ""
    expect(failedFingerprint).toMatch(/^[0-9a-f]{64}$/)
    expect(existsSync(join(base.workspace, "scratch", failedFingerprint))).toBe(false)

    // With keepGoing the other items flow on into stats; without it, stats may have stopped early.
    expect(counts(kept).scale).toEqual({ ran: 0, cached: 4, failed: 1, blocked: 0 })
    expect(counts(kept).stats!.ran + counts(kept).stats!.cached).toBe(4)
    expect(counts(kept).stats!.blocked).toBe(1)

    const retry = await runWorkflow({ ...base, overrides: ["scale.factor=4"] })
    expect(ranCounts(retry)).toEqual({ scale: 1, stats: 1, report: 1 })
  })

  it("runs without an excluded item", async () => {
    process.env.OCTFLOW_SYNTHETIC_FAIL = "item-0001"
    let failed: RunSummary
    let excluded: RunSummary
    try {
      failed = await runWorkflow({ ...base, overrides: ["scale.factor=5"] })
      excluded = await runWorkflow({ ...base, overrides: ["scale.factor=5"], exclude: ["item-000*1"] })
    } finally {
      delete process.env.OCTFLOW_SYNTHETIC_FAIL
    }
    expect(failed.error!.message).toContain("--exclude 'item-0001'")
    expect(excluded.status).toBe("ok")
    expect(counts(excluded).scale).toEqual({ ran: 0, cached: 4, failed: 0, blocked: 0 })
    expect(excluded.outcomes.has("scale\u0000item-0001")).toBe(false)

    // Leave the workspace's newest run as the previous test left it, for the tests below.
    const restored = await runWorkflow({ ...base, overrides: ["scale.factor=4"] })
    expect(restored.status).toBe("ok")
  })

  it("records emitted metrics with the outputs", async () => {
    const result = await query(base.workspace,
      "SELECT count(*)::INTEGER AS n FROM metrics m JOIN run_tasks t ON t.execution_id = m.execution_id WHERE t.run_id = (SELECT id FROM runs ORDER BY started DESC LIMIT 1)")
    expect(result.rows[0]!.n).toBe(5)
  })

  it("traces lineage both ways", async () => {
    const summaryArtifact = (await listArtifacts(base.workspace, { stage: "report" })).find((a) => a.port === "summary")!
    const up = await lineage(base.workspace, summaryArtifact.hash, "upstream")
    const sources = up.rows.filter((r) => r.kind === "source").map((r) => r.item).sort()
    expect(sources).toEqual(["item-0000", "item-0001", "item-0002", "item-0003", "item-0004"])

    const down = await lineage(base.workspace, join(base.dataDir!, "item-0001.txt"), "downstream")
    expect(down.rows.map((r) => r.hash)).toContain(summaryArtifact.hash)
  })

  it("names only the source paths read", async () => {
    // A copy of the data has the same content at other paths, so the run reuses every result.
    const copyDir = join(tempDir("synthetic-data"), "data")
    cpSync(base.dataDir!, copyDir, { recursive: true })
    const copied = await runWorkflow({ ...base, dataDir: copyDir, overrides: ["scale.factor=4"] })
    expect(ranCounts(copied)).toEqual({ scale: 0, stats: 0, report: 0 })

    const summaryArtifact = (await listArtifacts(base.workspace, { stage: "report" })).find((a) => a.port === "summary")!
    const up = await lineage(base.workspace, summaryArtifact.hash, "upstream")
    const paths = up.rows.filter((r) => r.kind === "source").map((r) => r.path)
    expect(paths).toHaveLength(5)
    for (const path of paths) expect(path.startsWith(`${base.dataDir!}/`)).toBe(true)
  })

  it("resolves lineage by a runs path", async () => {
    const result = await lineage(base.workspace, join(base.workspace, "latest/stats/stats/item-0001.json"), "upstream")
    expect(result.rows.filter((r) => r.depth === 1).map((r) => `${r.stage}.${r.port}`)).toEqual(["scale.scaled"])
  })

  it("follows recorded producers downstream", async () => {
    // Two files with other bytes but the same numbers: their scale and stats outputs are equal.
    const dir = tempDir("equal-outputs")
    mkdirSync(join(dir, "data"))
    writeFileSync(join(dir, "data", "a.txt"), "2\n")
    writeFileSync(join(dir, "data", "b.txt"), "2\n\n")
    const summary = await runWorkflow({ workflow, workspace: join(dir, "ws"), dataDir: join(dir, "data"), jobs: 1 })
    expect(summary.status).toBe("ok")
    const executionOf = (stage: string, item: string) => {
      const outcome = summary.outcomes.get(`${stage}\u0000${item}`)!
      return outcome.action === "ran" ? outcome.executionId : -1
    }
    const scaledHash = (item: string) => {
      const outcome = summary.outcomes.get(`scale\u0000${item}`)!
      return outcome.action === "ran" ? outcome.outputs.scaled!.hash : null
    }
    expect(scaledHash("a")).not.toBeNull()
    expect(scaledHash("b")).toBe(scaledHash("a"))

    const down = await lineage(join(dir, "ws"), join(dir, "data", "b.txt"), "downstream")
    const executions = new Set(down.rows.map((row) => row.execution_id))
    expect(executions.has(executionOf("scale", "b"))).toBe(true)
    expect(executions.has(executionOf("stats", "b"))).toBe(true)
    expect(executions.has(executionOf("scale", "a"))).toBe(false)
    expect(executions.has(executionOf("stats", "a"))).toBe(false)
  })

  it("names several matches of a short prefix", async () => {
    const workspace = join(tempDir("prefix"), "ws")
    const session = await openForWrite(workspace)
    try {
      for (const hash of ["abcd1".padEnd(64, "0"), "abcd2".padEnd(64, "0")]) {
        await session.db.run("INSERT INTO artifacts (hash, kind, path) VALUES ($1, 'file', $2)", [hash, `objects/ab/${hash}.txt`])
      }
    } finally {
      await session.close()
    }
    // Upper-case digits count as the same hash.
    const ambiguous = lineage(workspace, "ABCD", "upstream")
    await expect(ambiguous).rejects.toThrow('"ABCD" is the start of several artifact hashes (abcd10000000, abcd20000000)')
    const unique = await lineage(workspace, "ABCD1", "upstream")
    expect(unique.hash).toBe("abcd1".padEnd(64, "0"))
  })

  it("says a lineage path is missing", async () => {
    const missing = join(base.workspace, "latest/no-such-stage/out.json")
    await expect(lineage(base.workspace, missing, "upstream")).rejects.toMatchObject({ _tag: "ArtifactNotFound", pathState: "missing" })
    await expect(lineage(base.workspace, missing, "upstream")).rejects.toThrow("That path does not exist; latest/ holds only")
  })

  it("reruns an item whose object is missing", async () => {
    const artifact = (await listArtifacts(base.workspace, { stage: "stats" })).find((a) => a.item === "item-0004")!
    chmodSync(dirname(artifact.path), 0o755)
    rmSync(artifact.path)
    const summary = await runWorkflow({ ...base, overrides: ["scale.factor=4"] })
    expect(ranCounts(summary)).toEqual({ scale: 0, stats: 1, report: 0 })
  })

  it("keeps reachable objects in gc", async () => {
    const result = await collectGarbage(base.workspace, { keepRuns: 1 })
    expect(result.removedObjects.length).toBeGreaterThan(0)
    expect(result.removedViews.length).toBeGreaterThan(0)
    expect(readFileSync(join(base.workspace, "latest/report/summary.json"), "utf8")).toContain("synthetic report")
    const summary = await runWorkflow({ ...base, overrides: ["scale.factor=4"] })
    expect(ranCounts(summary)).toEqual({ scale: 0, stats: 0, report: 0 })
  })

  it("rejects SQL that writes", () => {
    expect(() => query(base.workspace, "DROP TABLE runs")).toThrow(/read-only/)
  })
})
