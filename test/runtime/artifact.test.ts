/**
 * Run-time artifact inputs (`Stage.artifact`): resolution from `RunOptions.artifacts`, the
 * plan-time checks, caching by hash, and lineage from the artifact to the stage's outputs.
 */
import { copyFileSync, readFileSync, rmSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { runWorkflow, type RunSummary } from "../../src/runtime/executor.ts"
import { explainWorkflow } from "../../src/runtime/explain.ts"
import { lineage, query } from "../../src/runtime/inspect.ts"
import { taskKey } from "../../src/runtime/plan.ts"
import { makeWritable } from "../../src/runtime/store.ts"
import { toMermaid, buildDag } from "../../src/runtime/workflow.ts"
import { consumer, copier, producer } from "./artifact-stages.ts"
import { tempDir } from "./helpers.ts"

const outputOf = (summary: RunSummary, stage: string, port: string) => {
  const outcome = summary.outcomes.get(taskKey(stage, null))
  if (outcome === undefined || (outcome.action !== "ran" && outcome.action !== "cached")) {
    throw new Error(`${stage} did not finish: ${JSON.stringify(outcome)}`)
  }
  return outcome.outputs[port]!
}

const actionOf = (summary: RunSummary, stage: string) => summary.outcomes.get(taskKey(stage, null))?.action

const executionOf = (summary: RunSummary, stage: string) => {
  const outcome = summary.outcomes.get(taskKey(stage, null))
  if (outcome === undefined || (outcome.action !== "ran" && outcome.action !== "cached")) throw new Error(`${stage} did not finish`)
  return outcome.executionId
}

describe("Stage.artifact inputs", () => {
  const workspace = join(tempDir("artifact"), "ws")
  let modelHash = ""
  let notesHash = ""

  beforeAll(async () => {
    const summary = await runWorkflow({ workflow: producer, workspace, jobs: 1 })
    modelHash = outputOf(summary, "make", "model").hash
    notesHash = outputOf(summary, "make", "notes").hash
  })

  it("reads the given artifact", async () => {
    const summary = await runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts: { model: modelHash } })
    expect(summary.status).toBe("ok")
    const out = outputOf(summary, "consume", "out")
    expect(readFileSync(join(workspace, out.path), "utf8")).toBe("used model-v1")
  })

  it("links lineage to the artifact", async () => {
    const summary = await runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts: { model: modelHash } })
    const { rows } = await lineage(workspace, outputOf(summary, "consume", "out").hash, "upstream")
    const model = rows.find((row) => row.hash === modelHash)
    expect(model?.stage).toBe("make")
    expect(model?.depth).toBe(1)
  })

  it("traces a copy by its content", async () => {
    const summary = await runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts: { model: modelHash } })
    const out = outputOf(summary, "consume", "out")
    const copy = join(tempDir("artifact-copy"), "out.txt")
    copyFileSync(join(workspace, out.path), copy)
    const { hash, rows } = await lineage(workspace, copy, "upstream")
    expect(hash).toBe(out.hash)
    expect(rows.find((row) => row.hash === modelHash)?.stage).toBe("make")
  })

  it("skips a rerun with the same artifact", async () => {
    const summary = await runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts: { model: modelHash } })
    expect(actionOf(summary, "consume")).toBe("cached")
  })

  it("reruns for another artifact", async () => {
    const produced = await runWorkflow({ workflow: producer, workspace, jobs: 1, overrides: ["make.text=model-v2"] })
    const otherHash = outputOf(produced, "make", "model").hash
    const summary = await runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts: { model: otherHash } })
    expect(actionOf(summary, "consume")).toBe("ran")
    expect(readFileSync(join(workspace, outputOf(summary, "consume", "out").path), "utf8")).toBe("used model-v2")
  })

  it("explains with the artifact", async () => {
    const entries = await explainWorkflow({ workflow: consumer, workspace, artifacts: { model: modelHash } })
    expect(entries.map((entry) => entry.decision)).toEqual(["skip"])
  })

  it("shows the artifact in the DAG", () => {
    expect(toMermaid(buildDag(consumer))).toContain("art_model --> consume")
  })

  it.each<{ case: string; artifacts: Record<string, string>; tag: string }>([
    { case: "missing name", artifacts: {}, tag: "ArtifactNotGiven" },
    { case: "short hash", artifacts: { model: "abcd" }, tag: "ArtifactHashInvalid" },
    { case: "unknown hash", artifacts: { model: "0".repeat(64) }, tag: "ArtifactNotRecorded" }
  ])("rejects $case", async ({ artifacts, tag }) => {
    await expect(runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts })).rejects.toMatchObject({ _tag: tag })
  })

  it("rejects another producer", async () => {
    const run = runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts: { model: notesHash } })
    await expect(run).rejects.toMatchObject({ _tag: "ArtifactWrongProducer", actual: ["make.notes"], expected: ["make.model"] })
  })

  it("rejects a removed object", async () => {
    const path = join(workspace, "objects", modelHash.slice(0, 2), `${modelHash}.txt`)
    await makeWritable(path)
    rmSync(path)
    const run = runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts: { model: modelHash } })
    await expect(run).rejects.toMatchObject({ _tag: "ArtifactObjectMissing", path })
  })
})

describe("lineage over equal content", () => {
  const workspace = join(tempDir("lineage-equal"), "ws")
  let modelHash = ""
  let firstMake = 0

  beforeAll(async () => {
    const summary = await runWorkflow({ workflow: producer, workspace, jobs: 1 })
    modelHash = outputOf(summary, "make", "model").hash
    firstMake = executionOf(summary, "make")
  })

  it("ends where an output repeats its input", async () => {
    const copied = await runWorkflow({ workflow: copier, workspace, jobs: 1, artifacts: { model: modelHash } })
    expect(outputOf(copied, "copy", "out").hash).toBe(modelHash)

    const up = await lineage(workspace, modelHash, "upstream")
    expect(up.rows.map((row) => `${row.depth} ${row.stage}.${row.port}`)).toEqual(["0 copy.out", "1 make.model"])
    const down = await lineage(workspace, modelHash, "downstream")
    expect(down.rows.map((row) => row.stage).sort()).toEqual(["copy", "make"])
  })

  it("ends the SQL closures on a cycle", async () => {
    const views = await query(workspace, "SELECT count(*)::INTEGER AS n FROM lineage_upstream WHERE artifact = ancestor")
    expect(views.rows[0]!.n).toBe(0)
    const macro = await query(workspace, `SELECT count(*)::INTEGER AS n FROM upstream_of('${modelHash}')`)
    expect(macro.rows[0]!.n).toBe(0)
    const down = await query(workspace, `SELECT count(*)::INTEGER AS n FROM downstream_of('${modelHash}')`)
    expect(down.rows[0]!.n).toBe(0)
  })

  it("names the producer the consumer read", async () => {
    const consumed = await runWorkflow({ workflow: consumer, workspace, jobs: 1, artifacts: { model: modelHash } })
    // A later execution of make writes the same model bytes with other notes.
    const again = await runWorkflow({ workflow: producer, workspace, jobs: 1, overrides: ["make.remark=again"] })
    expect(outputOf(again, "make", "model").hash).toBe(modelHash)
    expect(executionOf(again, "make")).toBeGreaterThan(firstMake)

    const { rows } = await lineage(workspace, outputOf(consumed, "consume", "out").hash, "upstream")
    const model = rows.filter((row) => row.hash === modelHash)
    expect(model.map((row) => row.execution_id)).toEqual([firstMake])
  })
})
