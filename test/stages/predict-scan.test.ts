/**
 * The dataset case that `caseOfScan` rebuilds for the scan of `workflow predict`, from the
 * source items of a case folder, a B-scan folder and a lone volume file of a tiny phantom.
 */
import { mkdir, readFile, rm } from "node:fs/promises"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { writePhantomDataset } from "../../src/phantom/dataset.ts"
import type { SourceItem, SourceItemRef } from "../../src/runtime/stage.ts"
import { writeBscanCase } from "../../src/volume/bscans.ts"
import { readMetaImage, writeMetaImage } from "../../src/volume/metaimage.ts"
import type { Volume } from "../../src/volume/volume.ts"
import { checkOutFolder, predictScan } from "../../src/cli/predict.ts"
import { caseOfScan, describeScan } from "../../stages/predict-scan.ts"
import { tempDir } from "../runtime/helpers.ts"

const root = tempDir("predict-scan")
const caseFolder = join(root, "Cirrus", "NEW001")
const bscanFolder = join(root, "exports", "case42")
const looseFile = join(root, "loose", "scan.mha")

beforeAll(async () => {
  await writePhantomDataset(root, { seed: 9, scale: 0.05, cases: [{ vendor: "Cirrus", key: "NEW001" }] })
  const oct = await readMetaImage(join(caseFolder, "oct.mhd"))
  const labels = (await readMetaImage(join(caseFolder, "reference.mhd"))) as Volume<Uint8Array>
  await writeBscanCase(bscanFolder, { oct: oct as Volume<Uint8Array>, labels, labelScheme: "binary", vendor: "Cirrus" })
  await mkdir(join(root, "loose"))
  await writeMetaImage(looseFile, oct)
})

afterAll(() => rm(root, { recursive: true, force: true }))

/** Returns the item as a stage receives it, with placeholder hashes. */
const itemRefOf = (item: SourceItem): SourceItemRef => ({
  ...item,
  files: item.files.map((path) => ({ path, hash: "0".repeat(64) }))
})

describe("caseOfScan", () => {
  it("rebuilds a case folder", async () => {
    const item = await describeScan(caseFolder)
    expect(caseOfScan(itemRefOf(item), "Cirrus")).toStrictEqual({
      key: "NEW001",
      vendor: "Cirrus",
      dir: caseFolder,
      octPath: join(caseFolder, "oct.mhd"),
      referencePath: join(caseFolder, "reference.mhd"),
      format: "metaimage",
      files: item.files,
      scheme: "retouch",
      meta: { caseName: "NEW001", vendorFolder: "Cirrus", vendorSource: "override", geometryChecked: false }
    })
  })

  it("rebuilds a binary B-scan folder", async () => {
    const item = await describeScan(bscanFolder)
    const sidecar: unknown = JSON.parse(await readFile(join(bscanFolder, "octflow.json"), "utf8"))
    expect(caseOfScan(itemRefOf(item), "Cirrus")).toStrictEqual({
      key: "case42",
      vendor: "Cirrus",
      dir: bscanFolder,
      octPath: join(bscanFolder, "octflow.json"),
      referencePath: join(bscanFolder, "reference"),
      format: "bscans",
      files: item.files,
      scheme: "binary",
      meta: { caseName: "case42", vendorFolder: "exports", vendorSource: "override", geometryChecked: false, sidecar }
    })
  })

  it("rebuilds a lone file without reference", async () => {
    const item = await describeScan(looseFile)
    expect(caseOfScan(itemRefOf(item), "Spectralis")).toStrictEqual({
      key: "scan",
      vendor: "Spectralis",
      dir: join(root, "loose"),
      octPath: looseFile,
      format: "metaimage",
      files: [looseFile],
      scheme: "retouch",
      meta: { caseName: "scan", vendorFolder: "loose", vendorSource: "override", geometryChecked: false }
    })
  })
})

describe("predict --out", () => {
  it("rejects a file", async () => {
    const file = join(root, "loose", "scan.mha")
    await expect(predictScan({ volume: caseFolder, workspace: join(root, "ws"), out: file })).rejects.toMatchObject({
      _tag: "InvalidFlag",
      message: `Invalid value ${file} for --out: expected a folder or a path that does not exist yet, not a file.`
    })
  })

  it("accepts a missing folder", async () => {
    await expect(checkOutFolder(join(root, "not-yet"))).resolves.toBeUndefined()
  })
})
