/**
 * Voxel-for-voxel comparison with the outputs of the original Python method (scikit-image
 * 0.19.3, Pillow 9.4.0) on the real sample data stored beside the repository.
 */
import path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { histogram256 } from "../../src/kernels/histogram.ts"
import { preprocessVolume, type Vendor } from "../../src/kernels/preprocess.ts"
import { roiSlice } from "../../src/kernels/roi.ts"
import { readMetaImage } from "../../src/volume/metaimage.ts"
import type { Volume } from "../../src/volume/volume.ts"
import { countDifferences, readGrayJpeg, readGrayPng, sharedRoot } from "./support/fixtures.ts"

if (sharedRoot === null) {
  console.warn("reference tests skipped: no ../shared folder with data/real and reference beside the repository")
}

const crops = (["Cirrus", "Spectralis", "Topcon"] as const).flatMap((vendor) =>
  [1, 2, 3].map((n) => ({ vendor: vendor as Vendor, name: `${vendor}_${n}` }))
)

const oneSlice = (width: number, height: number, data: Uint8Array): Volume<Uint8Array> => ({
  dims: [width, height, 1],
  spacingMm: [1, 1, 1],
  dtype: "uint8",
  data
})

describe.skipIf(sharedRoot === null)("reference outputs", () => {
  const shared = sharedRoot ?? ""
  const crop = (name: string, ext: string) => path.join(shared, "data/real/retouch_wsc12358", `${name}.${ext}`)
  const reference = (...parts: string[]) => path.join(shared, "reference", ...parts)
  let duke: Volume<Uint8Array>

  beforeAll(async () => {
    const folder = path.join(shared, "data/real/duke_dme_chiu2015_subject01")
    const first = await readGrayPng(path.join(folder, "Subject_01_1.png"))
    const sliceVoxels = first.width * first.height
    const data = new Uint8Array(sliceVoxels * 61)
    for (let i = 1; i <= 61; i++) {
      const image = await readGrayPng(path.join(folder, `Subject_01_${i}.png`))
      data.set(image.pixels, (i - 1) * sliceVoxels)
    }
    duke = { dims: [first.width, first.height, 61], spacingMm: [0.01107, 0.00387, 0.123], dtype: "uint8", data }
  })

  it.each(crops)("preprocess of crop $name", async ({ vendor, name }) => {
    const image = await readGrayJpeg(crop(name, "jpg"))
    const output = preprocessVolume(oneSlice(image.width, image.height, image.pixels), vendor, {
      referenceHistogram: histogram256(duke)
    })
    const expected = await readMetaImage(reference("retouch_crops", name, "preprocessed.mhd"))
    expect(output.dims).toEqual(expected.dims)
    expect(countDifferences(output.data, expected.data)).toBe(0)
  })

  it.each(crops)("roi of crop $name", async ({ name }) => {
    const preprocessed = await readMetaImage(reference("retouch_crops", name, "preprocessed.mhd"))
    const mask = await readGrayPng(crop(name, "png"))
    // The masks store RETOUCH codes times 85.
    const labels = mask.pixels.map((value) => Math.floor(value / 85))
    const [width, height] = preprocessed.dims
    const output = roiSlice(preprocessed.data as Uint8Array, width, height, labels)
    const expected = await readMetaImage(reference("retouch_crops", name, "roi.mhd"))
    expect(countDifferences(output, expected.data)).toBe(0)
  })

  it("preprocess of Duke as Topcon", async () => {
    const spectralis = await Promise.all([1, 2, 3].map((n) => readGrayJpeg(crop(`Spectralis_${n}`, "jpg"))))
    const stacked = new Uint8Array(spectralis.reduce((sum, image) => sum + image.pixels.length, 0))
    spectralis.forEach((image, i) => stacked.set(image.pixels, i * image.pixels.length))
    const output = preprocessVolume(duke, "Topcon", { referenceHistogram: histogram256(stacked) })
    const expected = await readMetaImage(reference("duke_as_topcon", "preprocessed.mhd"))
    expect(expected.dims.slice(0, 2)).toEqual(duke.dims.slice(0, 2))
    expect(countDifferences(output.data.subarray(0, expected.data.length), expected.data)).toBe(0)
  })

  it("roi of Duke slices 0-3", async () => {
    const expected = await readMetaImage(reference("duke_roi_0_4", "roi.mhd"))
    const [width, height, slices] = expected.dims
    for (let z = 0; z < slices; z++) {
      const start = z * width * height
      const output = roiSlice(duke.data.subarray(start, start + width * height), width, height)
      expect(countDifferences(output, expected.data.subarray(start, start + width * height)), `slice ${z}`).toBe(0)
    }
  })

  it.each([1, 2, 3])("jpeg decode of Spectralis_%i", async (n) => {
    // Spectralis crops pass through preprocess unchanged, so the reference holds Pillow's pixels.
    const image = await readGrayJpeg(crop(`Spectralis_${n}`, "jpg"))
    const expected = await readMetaImage(reference("retouch_crops", `Spectralis_${n}`, "preprocessed.mhd"))
    expect(countDifferences(image.pixels, expected.data)).toBe(0)
  })
})
