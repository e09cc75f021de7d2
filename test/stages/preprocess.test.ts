/**
 * The preprocess stage of the RETOUCH workflow, run through the runtime on tiny phantom
 * datasets with a real workspace database. These tests cover the errors a user meets when
 * the histogram reference of a Cirrus or Topcon case is not usable.
 */
import { rm, truncate } from "node:fs/promises"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { writePhantomDataset, type PhantomCaseSpec } from "../../src/phantom/dataset.ts"
import { runWorkflow, taskKey, type RunSummary } from "../../src/runtime/executor.ts"
import { workflow } from "../../workflows/retouch.ts"
import { tempDir } from "../runtime/helpers.ts"

/** Factor on x and z sizes: a Cirrus phantom is then 26 x 1024 x 6 voxels, a Spectralis one 26 x 496 x 2. */
const scale = 0.05

const roots: string[] = []

afterAll(() => Promise.all(roots.map((root) => rm(root, { recursive: true, force: true }))))

const writeDataset = async (cases: readonly PhantomCaseSpec[]): Promise<string> => {
  const root = tempDir("preprocess")
  roots.push(root)
  await writePhantomDataset(join(root, "data"), { seed: 5, scale, cases })
  return root
}

const runPreprocess = (root: string, overrides: readonly string[] = []): Promise<RunSummary> =>
  runWorkflow({
    workflow,
    workspace: join(root, "ws"),
    dataDir: join(root, "data"),
    targets: ["preprocess"],
    overrides,
    jobs: 2
  })

/** Returns the error message of the preprocess task of `item`, after checking that the task failed. */
const failureOf = (summary: RunSummary, item: string): string => {
  const outcome = summary.outcomes.get(taskKey("preprocess", item))
  expect(outcome?.action).toBe("failed")
  return outcome?.action === "failed" ? outcome.message : ""
}

const fix = `name a Spectralis case with -p 'preprocess.reference="Spectralis/<case>"', or add one to the dataset`

describe("preprocess reference", () => {
  it("rejects a dataset without Spectralis", async () => {
    const root = await writeDataset([
      { vendor: "Cirrus", key: "TRAIN001" },
      { vendor: "Topcon", key: "TRAIN001" }
    ])
    const summary = await runPreprocess(root)

    // With no Spectralis case, "auto" takes the first case in key order, Cirrus/TRAIN001.
    const message = failureOf(summary, "Topcon/TRAIN001")
    expect(message).toMatch(/^MissingReferenceVolumeError: /)
    expect(message).toContain("case Topcon/TRAIN001 needs histogram matching")
    expect(message).toContain("the reference Cirrus/TRAIN001 is a Cirrus volume, because the dataset has no readable Spectralis case")
    expect(message).toContain(fix)
    expect(failureOf(summary, "Cirrus/TRAIN001")).toContain("reference Cirrus/TRAIN001 is a Cirrus volume")
  })

  it("rejects a named Topcon reference", async () => {
    const root = await writeDataset([
      { vendor: "Spectralis", key: "TRAIN001" },
      { vendor: "Cirrus", key: "TRAIN001" },
      { vendor: "Topcon", key: "TRAIN001" }
    ])
    const summary = await runPreprocess(root, ['preprocess.reference="Topcon/TRAIN001"'])

    const message = failureOf(summary, "Cirrus/TRAIN001")
    expect(message).toMatch(/^MissingReferenceVolumeError: /)
    expect(message).toContain("case Cirrus/TRAIN001 needs histogram matching")
    expect(message).toContain("the reference Topcon/TRAIN001 is a Topcon volume;")
    expect(message).toContain(fix)
    // A Spectralis case is not histogram-matched, so the reference does not affect it.
    expect(summary.outcomes.get(taskKey("preprocess", "Spectralis/TRAIN001"))?.action).toBe("ran")
  })

  it("rejects a truncated Spectralis reference", async () => {
    const root = await writeDataset([
      { vendor: "Spectralis", key: "TRAIN001" },
      { vendor: "Cirrus", key: "TRAIN001" }
    ])
    const referenceData = join(root, "data", "Spectralis", "TRAIN001", "oct.raw")
    await truncate(referenceData, 1000)
    const summary = await runPreprocess(root)

    const message = failureOf(summary, "Cirrus/TRAIN001")
    expect(message).toMatch(/^MissingReferenceVolumeError: /)
    expect(message).toContain("case Cirrus/TRAIN001 needs histogram matching")
    expect(message).toContain("the reference Spectralis/TRAIN001 cannot be read")
    expect(message).toContain(`${referenceData}: data is truncated`)
    expect(message).toContain(fix)
  })
})
