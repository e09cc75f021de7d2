import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { writeBscanCase } from "../../src/volume/bscans.ts"
import { type DatasetCase, discoverDataset, loadCase, vendorFromFolder } from "../../src/volume/dataset.ts"
import { countLabelledSlices } from "../../src/volume/labels.ts"
import { writeMetaImage } from "../../src/volume/metaimage.ts"
import { writeNifti } from "../../src/volume/nifti.ts"
import { makeVolume, type DType } from "../../src/volume/volume.ts"

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..")

let root: string
let counter = 0
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "octflow-dataset-"))
})
afterAll(async () => {
  await rm(root, { recursive: true, force: true })
})

const freshRoot = async (): Promise<string> => {
  counter += 1
  const path = join(root, `data${counter}`)
  await mkdir(path, { recursive: true })
  return path
}

/** Writes oct.mhd (and reference.mhd when `referenceDims` is given) with 2 x height x 2 voxels. */
const writeCase = async (
  dataDir: string,
  vendorFolder: string,
  caseName: string,
  dtype: DType,
  height: number,
  referenceDims?: readonly [number, number, number],
  referenceValue = 1
): Promise<void> => {
  const caseDir = join(dataDir, vendorFolder, caseName)
  await mkdir(caseDir, { recursive: true })
  await writeMetaImage(join(caseDir, "oct.mhd"), makeVolume(dtype, [2, height, 2], [0.01, 0.002, 0.05]))
  if (referenceDims !== undefined) {
    const reference = makeVolume("uint8", referenceDims)
    reference.data[0] = referenceValue
    await writeMetaImage(join(caseDir, "reference.mhd"), reference)
  }
}

const byKey = (cases: readonly DatasetCase[], key: string): DatasetCase => {
  const found = cases.find((c) => c.key === key)
  if (found === undefined) throw new Error(`no case ${key} in ${cases.map((c) => c.key).join(", ")}`)
  return found
}

describe("vendorFromFolder", () => {
  const table: ReadonlyArray<[string, string | undefined]> = [
    ["Cirrus", "Cirrus"],
    ["spectralis", "Spectralis"],
    ["RETOUCH-TrainingSet-Topcon", "Topcon"],
    ["RETOUCH-TestSet-Cirrus", "Cirrus"],
    ["Nidek", undefined]
  ]
  for (const [folder, vendor] of table) {
    it(`maps ${folder}`, () => {
      expect(vendorFromFolder(folder)).toBe(vendor)
    })
  }
})

describe("discoverDataset RETOUCH layout", () => {
  it("finds both vendor folder names", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint8", 1024, [2, 1024, 2])
    await writeCase(dataDir, "RETOUCH-TrainingSet-Topcon", "TRAIN002", "uint8", 885)
    const cases = await discoverDataset(dataDir)
    expect(cases.map((c) => c.key)).toEqual(["Cirrus/TRAIN001", "RETOUCH-TrainingSet-Topcon/TRAIN002"])
    expect(cases.map((c) => c.vendor)).toEqual(["Cirrus", "Topcon"])
    expect(cases.map((c) => c.error)).toEqual([undefined, undefined])
  })

  it("lists header and data files", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint8", 1024, [2, 1024, 2])
    const [found] = await discoverDataset(dataDir)
    const caseDir = join(dataDir, "Cirrus", "TRAIN001")
    expect(found.files).toEqual(["oct.mhd", "oct.raw", "reference.mhd", "reference.raw"].map((name) => join(caseDir, name)))
  })

  it("loads OCT and labels", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Spectralis", "TRAIN003", "uint16", 496, [2, 496, 2])
    const [found] = await discoverDataset(dataDir)
    const { oct, labels } = await loadCase(found)
    expect(oct.dtype).toBe("uint16")
    expect(labels?.data[0]).toBe(1)
  })

  it("stores vendor mismatch on case", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint16", 496)
    await writeCase(dataDir, "Topcon", "TRAIN002", "uint8", 885)
    const cases = await discoverDataset(dataDir)
    const bad = byKey(cases, "Cirrus/TRAIN001")
    expect(bad.error?.["_tag" as keyof Error]).toBe("VendorMismatchError")
    expect(bad.error?.message).toContain("preprocess.vendor.TRAIN001")
    expect(bad.error?.message).toContain("strictGeometry")
    expect(byKey(cases, "Topcon/TRAIN002").error).toBeUndefined()
    await expect(loadCase(bad)).rejects.toThrow("Cirrus")
  })

  it("vendor override fixes mismatch", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint16", 496)
    const [found] = await discoverDataset(dataDir, { vendor: { TRAIN001: "Spectralis" } })
    expect(found.vendor).toBe("Spectralis")
    expect(found.error).toBeUndefined()
  })

  it("strictGeometry false skips check", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint8", 64)
    const [found] = await discoverDataset(dataDir, { strictGeometry: false })
    expect(found.error).toBeUndefined()
    expect(found.meta.geometryChecked).toBe(false)
  })

  it("rejects unknown vendor", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Nidek", "CASE7", "uint8", 885)
    const [found] = await discoverDataset(dataDir)
    expect(found.error?.["_tag" as keyof Error]).toBe("VendorUnknownError")
    expect(found.error?.message).toContain("-p preprocess.vendor.CASE7=")
  })

  it("override names unknown vendor", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Nidek", "CASE7", "uint8", 885)
    const [found] = await discoverDataset(dataDir, { vendor: { "Nidek/CASE7": "topcon" } })
    expect(found.vendor).toBe("Topcon")
    expect(found.meta.vendorSource).toBe("override")
  })

  it("rejects reference of other size", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint8", 1024, [2, 1024, 3])
    const [found] = await discoverDataset(dataDir)
    expect(found.error?.["_tag" as keyof Error]).toBe("ReferenceSizeMismatchError")
    expect(found.error?.message).toContain("2 x 1024 x 3")
  })

  it("rejects labels outside scheme on load", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint8", 1024, [2, 1024, 2], 7)
    const [found] = await discoverDataset(dataDir)
    await expect(loadCase(found)).rejects.toMatchObject({ _tag: "LabelValueOutOfSchemeError" })
  })

  it("keeps good cases beside damaged one", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint8", 1024)
    await mkdir(join(dataDir, "Cirrus", "TRAIN002"))
    await writeFile(join(dataDir, "Cirrus", "TRAIN002", "oct.mhd"), "NDims = 3\n")
    const cases = await discoverDataset(dataDir)
    expect(byKey(cases, "Cirrus/TRAIN001").error).toBeUndefined()
    expect(byKey(cases, "Cirrus/TRAIN002").error?.["_tag" as keyof Error]).toBe("HeaderKeyMissingError")
  })

  it("reads NIfTI case", async () => {
    const dataDir = await freshRoot()
    const caseDir = join(dataDir, "Topcon", "abc123")
    await mkdir(caseDir, { recursive: true })
    await writeNifti(join(caseDir, "oct.nii.gz"), makeVolume("uint8", [2, 650, 2]))
    await writeNifti(join(caseDir, "reference.nii.gz"), makeVolume("uint8", [2, 650, 2]))
    const [found] = await discoverDataset(dataDir)
    expect(found.format).toBe("nifti")
    const { labels } = await loadCase(found)
    expect(labels?.dims).toEqual([2, 650, 2])
  })

  it("reads B-scan folder case", async () => {
    const dataDir = await freshRoot()
    const oct = makeVolume("uint8", [3, 496, 2], [0.01, 0.0039, 0.1])
    await writeBscanCase(join(dataDir, "Spectralis", "EXPORT1"), { oct, vendor: "Spectralis" })
    const [found] = await discoverDataset(dataDir)
    expect(found.format).toBe("bscans")
    expect(found.meta.dims).toEqual([3, 496, 2])
    expect((await loadCase(found)).oct.dims).toEqual([3, 496, 2])
  })
})

describe("discoverDataset layout errors", () => {
  it("rejects missing root", async () => {
    await expect(discoverDataset(join(root, "absent"))).rejects.toMatchObject({ _tag: "VolumeFileNotFoundError" })
  })

  it("rejects empty root", async () => {
    await expect(discoverDataset(await freshRoot())).rejects.toMatchObject({ _tag: "EmptyFolderError" })
  })

  it("rejects case folder as root", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint8", 1024)
    await expect(discoverDataset(join(dataDir, "Cirrus", "TRAIN001"))).rejects.toMatchObject({ _tag: "DatasetLayoutError" })
  })

  it("rejects vendor folder as root", async () => {
    const dataDir = await freshRoot()
    await writeCase(dataDir, "Cirrus", "TRAIN001", "uint8", 1024)
    await expect(discoverDataset(join(dataDir, "Cirrus"))).rejects.toMatchObject({ _tag: "DatasetLayoutError" })
  })
})

describe("shipped sample data", () => {
  const sampleDir = join(repoRoot, "data", "sample")

  it("discovers three Spectralis cases", async () => {
    const cases = await discoverDataset(sampleDir)
    expect(cases.map((c) => c.key)).toEqual(["Spectralis/DUKE01", "Spectralis/UMN24", "Spectralis/UMN26"])
    expect(cases.every((c) => c.vendor === "Spectralis")).toBe(true)
    expect(cases.every((c) => c.error === undefined)).toBe(true)
    expect(cases.every((c) => c.scheme === "binary")).toBe(true)
  })

  it("counts labelled slices 11, 25, 25", { timeout: 60_000 }, async () => {
    const cases = await discoverDataset(sampleDir)
    const counts: number[] = []
    for (const found of cases) {
      const { labels } = await loadCase(found)
      counts.push(labels === undefined ? 0 : countLabelledSlices(labels))
    }
    expect(counts).toEqual([11, 25, 25])
  })

  it("loads second Duke grader", { timeout: 60_000 }, async () => {
    const duke = byKey(await discoverDataset(sampleDir), "Spectralis/DUKE01")
    const { labels } = await loadCase(duke, { reference: "grader2" })
    expect(labels === undefined ? 0 : countLabelledSlices(labels)).toBe(9)
  })
})
