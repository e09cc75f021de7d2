/**
 * End to end: `workflow full` on the real sample shipped in data/sample, with the `ci`
 * profile, through the CLI in child processes (bin/octflow.mjs, as `npm run workflow`
 * runs it) and a real workspace database.
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"

const repoRoot = resolve(fileURLToPath(new URL("../..", import.meta.url)))
const workspace = mkdtempSync(join(tmpdir(), "octflow-e2e-"))

/** Time one `full` may take on two loaded cores; a run on the sample takes about 2 minutes. */
const runTimeoutMs = 15 * 60_000

const cli = (...args: string[]) => {
  const result = spawnSync(process.execPath, ["bin/octflow.mjs", ...args], {
    cwd: repoRoot,
    encoding: "utf8",
    env: { ...process.env, OCTFLOW_BACKEND: "wasm" },
    timeout: runTimeoutMs
  })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

const full = (...extra: string[]) => cli("full", "--profile", "ci", "--workspace", workspace, "--jobs", "2", ...extra)

const query = <Row>(sql: string): Row[] => {
  const result = cli("query", "--json", "--workspace", workspace, sql)
  expect(result.stderr).not.toMatch(/error:/)
  return JSON.parse(result.stdout) as Row[]
}

/** Task counts of the newest run, as "stage:action" -> count. */
const newestRunActions = (): Record<string, number> => {
  const rows = query<{ stage: string; action: string; n: number }>(
    `SELECT stage, action, count(*) AS n FROM run_tasks
     WHERE run_id = (SELECT id FROM runs ORDER BY started DESC LIMIT 1)
     GROUP BY stage, action ORDER BY stage, action`
  )
  return Object.fromEntries(rows.map((row) => [`${row.stage}:${row.action}`, Number(row.n)]))
}

afterAll(() => rmSync(workspace, { recursive: true, force: true }))

describe("workflow full on the sample", () => {
  it("runs every stage", { timeout: runTimeoutMs }, () => {
    const result = full("--threads", "2")
    expect(result.stderr).not.toMatch(/^error:/m)
    expect(result.status).toBe(0)
    // The ci profile's batches of 4 train as 2 micro-batches, one per thread.
    expect(result.stderr).toContain('training threads {"threads":2,"passesPerBatch":2}')
    expect(result.stderr).toMatch(/inference tiles \{[^}]*"threads":2\}/)
    expect(newestRunActions()).toEqual({
      "evaluate:ran": 1,
      "preprocess:ran": 3,
      "roi:ran": 3,
      "split:ran": 1,
      "train:ran": 1
    })
  })

  it("skips everything on a second run", { timeout: runTimeoutMs }, () => {
    const result = full()
    expect(result.status).toBe(0)
    expect(newestRunActions()).toEqual({
      "evaluate:cached": 1,
      "preprocess:cached": 3,
      "roi:cached": 3,
      "split:cached": 1,
      "train:cached": 1
    })
  })

  it("reruns roi and below for a roi param", { timeout: runTimeoutMs }, () => {
    const result = full("-p", "roi.threshold=0.02")
    expect(result.status).toBe(0)
    expect(newestRunActions()).toEqual({
      "evaluate:ran": 1,
      "preprocess:cached": 3,
      "roi:ran": 3,
      "split:cached": 1,
      "train:ran": 1
    })
  })

  it("traces a metric to inputs, params and code", () => {
    const metricsPath = join(workspace, "latest", "evaluate", "metrics.json")
    const result = cli("lineage", "--json", "--upstream", "--workspace", workspace, metricsPath)
    expect(result.status).toBe(0)
    const rows = (JSON.parse(result.stdout) as { rows: Array<Record<string, unknown>> }).rows
    const sourceItems = rows.filter((row) => row.kind === "source").map((row) => row.item)
    for (const key of ["Spectralis/DUKE01", "Spectralis/UMN24", "Spectralis/UMN26"]) {
      expect(sourceItems).toContain(key)
    }
    const roiRows = rows.filter((row) => row.stage === "roi")
    expect(roiRows.length).toBeGreaterThan(0)
    for (const row of roiRows) expect(JSON.parse(String(row.params))).toMatchObject({ threshold: 0.02 })
    const stages = new Set(rows.filter((row) => row.code_hash !== null).map((row) => row.stage))
    expect([...stages].sort()).toEqual(["evaluate", "preprocess", "roi", "split", "train"])
    const trainRow = rows.find((row) => row.stage === "train")
    expect(JSON.parse(String(trainRow?.environment))).toMatchObject({ backend: "wasm" })
  })

  it("keeps the test case out of the model's lineage", () => {
    const metrics = JSON.parse(readFileSync(join(workspace, "latest", "evaluate", "metrics.json"), "utf8")) as { test: string[] }
    const result = cli("lineage", "--json", "--upstream", "--workspace", workspace, join(workspace, "latest", "train", "best"))
    expect(result.status).toBe(0)
    const rows = (JSON.parse(result.stdout) as { rows: Array<{ depth: number; item: string | null; stage: string | null }> }).rows
    // train reads the training cases' volumes, labels and ROIs at depth 1. split reads every
    // case, so the test case reaches the model only through the split file, further up.
    const direct = rows.filter((row) => row.depth === 1 && (row.stage === "preprocess" || row.stage === "roi")).map((row) => row.item)
    expect(direct.length).toBeGreaterThan(0)
    expect(direct).not.toContain(metrics.test[0])
  })

  it("traces one label volume to evaluate", () => {
    const labelsDir = join(workspace, "latest", "evaluate", "labels")
    const volume = readdirSync(labelsDir).find((name) => name.endsWith(".mha"))!
    const result = cli("lineage", "--json", "--upstream", "--workspace", workspace, join(labelsDir, volume))
    expect(result.status).toBe(0)
    const rows = (JSON.parse(result.stdout) as { rows: Array<Record<string, unknown>> }).rows
    expect(rows[0]).toMatchObject({ depth: 0, stage: "evaluate", port: "labels" })
  })

  it("writes a fluid Dice for the test case", () => {
    const metrics = JSON.parse(readFileSync(join(workspace, "latest", "evaluate", "metrics.json"), "utf8")) as {
      test: string[]
      tables: { volumeClasses: Array<{ caseId: string; className: string; dice: number | null }> }
    }
    expect(metrics.test).toHaveLength(1)
    const row = metrics.tables.volumeClasses.find((entry) => entry.caseId === metrics.test[0] && entry.className === "fluid")
    expect(row).toBeDefined()
    expect(typeof row!.dice).toBe("number")
  })

  it("records the backend of train", () => {
    const rows = query<{ environment: string }>(
      "SELECT environment::VARCHAR AS environment FROM executions WHERE stage = 'train' AND status = 'ok'"
    )
    expect(rows.length).toBeGreaterThan(0)
    expect(JSON.parse(rows[0].environment)).toMatchObject({ backend: "wasm", simdKernels: expect.stringMatching(/^(relaxed-fma|relaxed|simd)$/) })
  })

  it("rejects zero threads", () => {
    const result = full("--threads", "0")
    expect(result.status).toBe(2)
    expect(result.stderr).toContain('OCTFLOW_THREADS (or --threads) is "0"; expected an integer from 1 to 256')
  })

  it("checks OCTFLOW_THREADS before running", () => {
    const result = spawnSync(process.execPath, ["bin/octflow.mjs", "full", "--profile", "ci", "--workspace", workspace], {
      cwd: repoRoot,
      encoding: "utf8",
      env: { ...process.env, OCTFLOW_BACKEND: "wasm", OCTFLOW_THREADS: "two" }
    })
    expect(result.status).toBe(2)
    expect(result.stderr).toContain('OCTFLOW_THREADS (or --threads) is "two"')
    // Rejected before planning, so no run was recorded.
    expect(result.stderr).not.toContain("run 2")
  })
})
