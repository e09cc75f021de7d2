/**
 * Writes phantom volumes as a RETOUCH-layout dataset:
 * `<dir>/<Vendor>/<key>/oct.mhd` + `oct.raw` and `reference.mhd` + `reference.raw`, plus a
 * `phantom.json` manifest at the root that records the options and every case's fluid blobs.
 */
import { mkdir, writeFile } from "node:fs/promises"
import { join } from "node:path"
import type { Vendor } from "../volume/dataset.ts"
import { writeMetaImage } from "../volume/metaimage.ts"
import { type FluidBlob, generatePhantom } from "./phantom.ts"
import { deriveSeed } from "./random.ts"

export interface PhantomCaseSpec {
  readonly vendor: Vendor
  /** Case folder name, e.g. "TRAIN001". */
  readonly key: string
  /** Vendor folder name; default the vendor, e.g. "Cirrus" (or "RETOUCH-TrainingSet-Cirrus"). */
  readonly vendorFolder?: string
}

export interface PhantomDatasetOptions {
  readonly cases: readonly PhantomCaseSpec[]
  readonly seed: number
  /** Factor on x and z sizes, in (0, 1]; default 1 (full vendor geometry). */
  readonly scale?: number
  readonly scaleHeight?: boolean
  /** Write `.zraw` zlib-compressed data; default false. */
  readonly compress?: boolean
  /** Called after each case is written, with the number of cases done so far. */
  readonly onProgress?: (done: number, total: number, key: string) => void
}

export interface PhantomCaseWritten {
  readonly key: string
  readonly vendor: Vendor
  readonly seed: number
  readonly octPath: string
  readonly referencePath: string
  readonly dims: readonly [number, number, number]
  readonly blobs: readonly FluidBlob[]
}

/** Generates and writes every case; a case's seed derives from `seed`, its vendor folder and key. */
export const writePhantomDataset = async (dir: string, options: PhantomDatasetOptions): Promise<PhantomCaseWritten[]> => {
  const written: PhantomCaseWritten[] = []
  for (const [index, spec] of options.cases.entries()) {
    const vendorFolder = spec.vendorFolder ?? spec.vendor
    const caseSeed = deriveSeed(options.seed, `${vendorFolder}/${spec.key}`)
    const phantom = generatePhantom({ vendor: spec.vendor, seed: caseSeed, scale: options.scale, scaleHeight: options.scaleHeight })
    const caseDir = join(dir, vendorFolder, spec.key)
    await mkdir(caseDir, { recursive: true })
    const octPath = join(caseDir, "oct.mhd")
    const referencePath = join(caseDir, "reference.mhd")
    await writeMetaImage(octPath, phantom.oct, { compress: options.compress })
    await writeMetaImage(referencePath, phantom.labels, { compress: options.compress })
    written.push({
      key: `${vendorFolder}/${spec.key}`,
      vendor: spec.vendor,
      seed: caseSeed,
      octPath,
      referencePath,
      dims: phantom.oct.dims,
      blobs: phantom.blobs
    })
    options.onProgress?.(index + 1, options.cases.length, `${vendorFolder}/${spec.key}`)
  }
  const manifest = {
    generator: "octflow phantom",
    seed: options.seed,
    scale: options.scale ?? 1,
    scaleHeight: options.scaleHeight ?? false,
    cases: written.map(({ key, vendor, seed, dims, blobs }) => ({ key, vendor, seed, dims, blobs }))
  }
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, "phantom.json"), JSON.stringify(manifest, null, 2) + "\n")
  return written
}

/**
 * Spreads `count` cases over the three vendors in turn (Cirrus, Spectralis, Topcon), named
 * TRAIN001, TRAIN002, ... within each vendor.
 */
export const roundRobinCases = (count: number): PhantomCaseSpec[] => {
  const order: Vendor[] = ["Cirrus", "Spectralis", "Topcon"]
  const perVendor = new Map<Vendor, number>()
  return Array.from({ length: count }, (_, i) => {
    const vendor = order[i % order.length]
    const number = (perVendor.get(vendor) ?? 0) + 1
    perVendor.set(vendor, number)
    return { vendor, key: `TRAIN${String(number).padStart(3, "0")}` }
  })
}
