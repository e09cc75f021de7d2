import { describe, expect, it } from "vitest"
import type { SourceItemRef } from "../../src/runtime/stage.ts"
import { makeVolume } from "../../src/volume/volume.ts"
import { type CaseItemMeta, caseOfItem, checkVendorGeometry } from "../../stages/support/dataset.ts"
import { CaseGeometryError, CaseVendorError } from "../../stages/support/errors.ts"

const itemOf = (vendorFolder: string, vendor: CaseItemMeta["vendor"], fields: Partial<CaseItemMeta> = {}): SourceItemRef => {
  const meta: CaseItemMeta = {
    caseName: "CASE1",
    vendorFolder,
    vendor,
    format: "metaimage",
    scheme: "retouch",
    octFile: "oct.mhd",
    referenceFile: null,
    sidecar: null,
    discoveryError: null,
    ...fields
  }
  return {
    key: `${vendorFolder}/CASE1`,
    files: [{ path: `/data/${vendorFolder}/CASE1/${meta.octFile}`, hash: "0".repeat(64) }],
    meta: meta as never
  }
}

describe("caseOfItem", () => {
  it("keeps the folder's vendor", () => {
    const datasetCase = caseOfItem(itemOf("Topcon", "Topcon"), {})
    expect(datasetCase.vendor).toBe("Topcon")
    expect(datasetCase.dir).toBe("/data/Topcon/CASE1")
    expect(datasetCase.octPath).toBe("/data/Topcon/CASE1/oct.mhd")
  })

  it("rebuilds a B-scan case", () => {
    const sidecar = { vendor: "Cirrus", labelScheme: "binary", images: "oct" }
    const item = itemOf("Cirrus", "Cirrus", {
      format: "bscans",
      scheme: "binary",
      octFile: "octflow.json",
      referenceFile: "reference",
      sidecar
    })
    expect(caseOfItem(item, {})).toStrictEqual({
      key: "Cirrus/CASE1",
      vendor: "Cirrus",
      dir: "/data/Cirrus/CASE1",
      octPath: "/data/Cirrus/CASE1/octflow.json",
      referencePath: "/data/Cirrus/CASE1/reference",
      format: "bscans",
      files: ["/data/Cirrus/CASE1/octflow.json"],
      scheme: "binary",
      meta: { caseName: "CASE1", vendorFolder: "Cirrus", vendorSource: "folder", geometryChecked: false, sidecar }
    })
  })

  it("rebuilds a case without reference", () => {
    expect(caseOfItem(itemOf("Nidek", null), { Nidek: "Topcon" })).toStrictEqual({
      key: "Nidek/CASE1",
      vendor: "Topcon",
      dir: "/data/Nidek/CASE1",
      octPath: "/data/Nidek/CASE1/oct.mhd",
      format: "metaimage",
      files: ["/data/Nidek/CASE1/oct.mhd"],
      scheme: "retouch",
      meta: { caseName: "CASE1", vendorFolder: "Nidek", vendorSource: "override", geometryChecked: false }
    })
  })

  it("rejects an unknown vendor folder", () => {
    expect(() => caseOfItem(itemOf("Nidek", null), {})).toThrow(CaseVendorError)
    expect(() => caseOfItem(itemOf("Nidek", null), {})).toThrow(/preprocess\.vendor\.Nidek\/CASE1/)
  })

  it.each([
    ["case key", { "Nidek/CASE1": "cirrus" }],
    ["case folder", { CASE1: "Cirrus" }],
    ["vendor folder", { Nidek: "CIRRUS" }]
  ])("takes an override by %s", (_name, overrides) => {
    expect(caseOfItem(itemOf("Nidek", null), overrides).vendor).toBe("Cirrus")
  })

  it("prefers the case key to the folder", () => {
    const datasetCase = caseOfItem(itemOf("Nidek", null), { Nidek: "Topcon", "Nidek/CASE1": "Spectralis" })
    expect(datasetCase.vendor).toBe("Spectralis")
  })

  it("rejects an override that is no vendor", () => {
    expect(() => caseOfItem(itemOf("Nidek", null), { Nidek: "Zeiss" })).toThrow(/"Zeiss" is not Cirrus/)
  })
})

describe("checkVendorGeometry", () => {
  it("accepts a Topcon 885-high volume", () => {
    expect(() => checkVendorGeometry("Topcon/CASE1", "/data/oct.mhd", "Topcon", makeVolume("uint8", [4, 885, 1]))).not.toThrow()
  })

  it("rejects a Cirrus volume of Topcon height", () => {
    const check = () => checkVendorGeometry("Cirrus/CASE1", "/data/oct.mhd", "Cirrus", makeVolume("uint8", [4, 885, 1]))
    expect(check).toThrow(CaseGeometryError)
    expect(check).toThrow(/\/data\/oct\.mhd/)
    expect(check).toThrow(/uint8, 885 voxels high/)
    expect(check).toThrow(/preprocess\.strictGeometry=false/)
  })

  it("rejects a 16-bit Topcon volume", () => {
    const check = () => checkVendorGeometry("Topcon/CASE1", "/data/oct.mhd", "Topcon", makeVolume("uint16", [4, 650, 1]))
    expect(check).toThrow(/uint16, 650 voxels high/)
  })
})
