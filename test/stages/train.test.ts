/**
 * The train stage of the RETOUCH workflow, run through the runtime on a tiny phantom
 * dataset with a real workspace database. It checks that every training case uses the
 * same label scheme, and that the validation fold contains cases, before it loads
 * TensorFlow.js, and that its params describe a network that can be built.
 */
import { rm } from "node:fs/promises"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { writePhantomDataset } from "../../src/phantom/dataset.ts"
import { runWorkflow, taskKey } from "../../src/runtime/executor.ts"
import { resolveParams } from "../../src/runtime/params.ts"
import { writeBscanCase } from "../../src/volume/bscans.ts"
import { UNLABELLED } from "../../src/volume/labels.ts"
import { readMetaImage } from "../../src/volume/metaimage.ts"
import type { Volume } from "../../src/volume/volume.ts"
import { workflow } from "../../workflows/retouch.ts"
import { tempDir } from "../runtime/helpers.ts"

const root = tempDir("train")
const data = join(root, "data")

afterAll(() => rm(root, { recursive: true, force: true }))

/** Rewrites a MetaImage case as a B-scan folder whose masks use the binary 0/1 scheme. */
const toBinaryBscanCase = async (caseDir: string): Promise<void> => {
  const oct = (await readMetaImage(join(caseDir, "oct.mhd"))) as Volume<Uint16Array>
  const labels = (await readMetaImage(join(caseDir, "reference.mhd"))) as Volume<Uint8Array>
  const fluid = labels.data.map((label) => (label === UNLABELLED ? UNLABELLED : Math.min(label, 1)))
  await rm(caseDir, { recursive: true })
  await writeBscanCase(caseDir, { oct, labels: { ...labels, data: fluid }, labelScheme: "binary" })
}

describe("train label schemes", () => {
  it("rejects mixed schemes", async () => {
    // Spectralis cases are not histogram-matched, so no reference is needed. The split holds
    // out one of the four cases, so the three training cases contain both schemes.
    await writePhantomDataset(data, {
      seed: 3,
      scale: 0.05,
      cases: ["TRAIN001", "TRAIN002", "TRAIN003", "TRAIN004"].map((key) => ({ vendor: "Spectralis", key }))
    })
    await toBinaryBscanCase(join(data, "Spectralis", "TRAIN003"))
    await toBinaryBscanCase(join(data, "Spectralis", "TRAIN004"))

    // The ci profile keeps training short if the check ever lets these cases through.
    const summary = await runWorkflow({
      workflow,
      workspace: join(root, "ws"),
      dataDir: data,
      targets: ["train"],
      profile: "ci",
      jobs: 2
    })

    const outcome = summary.outcomes.get(taskKey("train", null))
    expect(outcome?.action).toBe("failed")
    const message = outcome?.action === "failed" ? outcome.message : ""
    expect(message).toMatch(/^MixedSchemeError: /)
    // Which case the split holds out depends on the seed, so one list may miss one case.
    const groups = /mix label schemes \(binary: ([^;]+); retouch: ([^)]+)\)/.exec(message)
    expect(groups).not.toBeNull()
    const binary = groups![1]!.split(", ")
    const retouch = groups![2]!.split(", ")
    expect(["Spectralis/TRAIN003", "Spectralis/TRAIN004"]).toEqual(expect.arrayContaining(binary))
    expect(["Spectralis/TRAIN001", "Spectralis/TRAIN002"]).toEqual(expect.arrayContaining(retouch))
    expect(binary.length + retouch.length).toBe(3)
    expect(message).toContain("train on cases of one scheme")
    expect(message).toContain("--exclude '<case>'")
  })
})

describe("train validation fold", () => {
  it("rejects a fold without cases", async () => {
    const foldRoot = tempDir("train-fold")
    const foldData = join(foldRoot, "data")
    try {
      await writePhantomDataset(foldData, {
        seed: 3,
        scale: 0.05,
        cases: ["TRAIN001", "TRAIN002", "TRAIN003", "TRAIN004"].map((key) => ({ vendor: "Spectralis", key }))
      })
      // One case is held out for testing, so the other three fill folds 0 to 2 of 4.
      const summary = await runWorkflow({
        workflow,
        workspace: join(foldRoot, "ws"),
        dataDir: foldData,
        targets: ["train"],
        profile: "ci",
        overrides: ["split.folds=4", "train.validationFold=3"],
        jobs: 2
      })

      const outcome = summary.outcomes.get(taskKey("train", null))
      expect(outcome?.action).toBe("failed")
      const message = outcome?.action === "failed" ? outcome.message : ""
      expect(message).toMatch(/^ValidationFoldError: /)
      expect(message).toContain("train.validationFold is 3, but of the split's 4 folds only 0, 1, 2 contain training cases")
      expect(message).toContain("set -p train.validationFold to one of them")
    } finally {
      await rm(foldRoot, { recursive: true, force: true })
    }
  })
})

describe("train params", () => {
  it.each(["cpu", "paper", "ci"])("accepts the %s profile", (profile) => {
    expect(() => resolveParams(workflow, { profile })).not.toThrow()
  })

  it("rejects a patch too small", () => {
    const resolve = () => resolveParams(workflow, { overrides: ["train.patchHeight=7"] })
    expect(resolve).toThrow(/^Invalid value \{"patchHeight":7\} for train\.\{patchHeight\} \(from -p train\.patchHeight=7\): /)
    expect(resolve).toThrow("A 7 x 64 input is too small for this U-Net: encoder block 2 would be -3 x 26")
    expect(resolve).toThrow(/smaller depth\. Fix the value/)
  })

  it("rejects dropout rates of another depth", () => {
    const resolve = () => resolveParams(workflow, { profile: "paper", overrides: ["train.depth=3"] })
    expect(resolve).toThrow("dropoutRates must be 2 rates in [0, 1), got [0.25,0.25,0.5]")
  })

  it("names every value of a failed combination", () => {
    const resolve = () => resolveParams(workflow, { overrides: ["train.depth=4", "train.dropoutRates=[0.25,0.5,0.5]"] })
    expect(resolve).toThrow(/for train\.\{depth, dropoutRates\} \(from -p train\.depth=4, -p train\.dropoutRates=\[0\.25,0\.5,0\.5\]\)/)
    expect(resolve).toThrow("A 128 x 64 input is too small for this U-Net")
    const params = resolveParams(workflow, {
      overrides: ["train.depth=4", "train.dropoutRates=[0.25,0.5,0.5]", "train.patchHeight=128", "train.patchWidth=128"]
    })
    expect(params.encoded.get("train")).toMatchObject({ depth: 4, patchWidth: 128 })
  })

  it("accepts a depth with matching rates", () => {
    const params = resolveParams(workflow, { profile: "paper", overrides: ["train.depth=3", "train.dropoutRates=[0.25,0.5]"] })
    expect(params.encoded.get("train")).toMatchObject({ depth: 3, dropoutRates: [0.25, 0.5] })
  })

  it("states schema messages without padding", () => {
    const resolve = () => resolveParams(workflow, { overrides: ["train.epochs=-1"] })
    expect(resolve).toThrow('Expected a value greater than 0; at ["epochs"]. Fix the value')
  })
})
