/**
 * `outputMap(..., { itemsFrom })`: a stage reads only the items another input's file names,
 * so only those join its fingerprint and lineage, as train reads only the split's training
 * cases.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { runWorkflow, taskKey, type RunSummary } from "../../src/runtime/executor.ts"
import { lineage } from "../../src/runtime/inspect.ts"
import { buildDag } from "../../src/runtime/workflow.ts"
import * as Stage from "../../src/runtime/stage.ts"
import * as Workflow from "../../src/runtime/workflow.ts"
import { choose, copy, gather, selection } from "./selection-stages.ts"
import { tempDir } from "./helpers.ts"

const outcomeOf = (summary: RunSummary, stage: string) => summary.outcomes.get(taskKey(stage, null))!

const setup = () => {
  const dir = tempDir("selection")
  const data = join(dir, "data")
  mkdirSync(data)
  writeFileSync(join(data, "a.txt"), "keep 1")
  writeFileSync(join(data, "b.txt"), "keep 2")
  writeFileSync(join(data, "c.txt"), "drop 3")
  return { workspace: join(dir, "ws"), data, run: () => runWorkflow({ workflow: selection, workspace: join(dir, "ws"), dataDir: data, jobs: 1 }) }
}

describe("outputMap itemsFrom", () => {
  it("reads only the chosen items", async () => {
    const { workspace, data, run } = setup()
    const summary = await run()
    expect(summary.status).toBe("ok")
    const gathered = outcomeOf(summary, "gather")
    expect(gathered.action).toBe("ran")
    const joined = gathered.action === "ran" ? readFileSync(join(workspace, gathered.outputs.joined!.path), "utf8") : ""
    expect(joined).toBe("keep 1|keep 2")

    const up = await lineage(workspace, gathered.action === "ran" ? gathered.outputs.joined!.hash : "", "upstream")
    const sources = up.rows.filter((row) => row.kind === "source" && row.depth <= 2).map((row) => row.path)
    expect(sources.sort()).toEqual([join(data, "a.txt"), join(data, "b.txt")])
  })

  it("skips a change to another item", async () => {
    const { data, run } = setup()
    await run()
    writeFileSync(join(data, "c.txt"), "drop 4")
    const summary = await run()
    expect(summary.outcomes.get(taskKey("copy", "c"))!.action).toBe("ran")
    expect(outcomeOf(summary, "choose").action).toBe("ran")
    expect(outcomeOf(summary, "gather").action).toBe("cached")
  })

  it("reruns for a change to a chosen item", async () => {
    const { data, run } = setup()
    await run()
    writeFileSync(join(data, "b.txt"), "keep 5")
    const summary = await run()
    expect(outcomeOf(summary, "gather").action).toBe("ran")
  })

  it("fails on an unknown chosen item", async () => {
    const { data, run } = setup()
    writeFileSync(join(data, "extra.txt"), "unknown")
    const summary = await run()
    const outcome = outcomeOf(summary, "gather")
    expect(outcome.action).toBe("failed")
    expect(outcome.action === "failed" ? outcome.message : "").toContain(
      'input "copies" selected items that its upstream stage does not have (no-such-item)'
    )
  })

  it("rejects a listing that is no whole-stage output", () => {
    const wrong = Stage.make({
      ...gather,
      inputs: { copies: Stage.outputMap("copy", "out", { itemsFrom: { input: "missing", select: () => [] } }) }
    } as never) as Stage.Stage
    const workflow = Workflow.make({ name: "wrong", sources: selection.sources, stages: [copy, choose, wrong], seed: 1 })
    expect(() => buildDag(workflow)).toThrow('takes its items from "missing", which must be an output() input of a whole stage')
  })
})
