import { existsSync, readFileSync } from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { PNG } from "pngjs"
import { describe, expect, it } from "vitest"
import { centerCrop, makePatchSampler, type SamplerCase } from "../../src/ml/patches.ts"
import { readMetaImage } from "../../src/volume/metaimage.ts"
import type { Volume } from "../../src/volume/volume.ts"

const repoRoot = path.resolve(fileURLToPath(new URL("../..", import.meta.url)))
const shared = path.resolve(repoRoot, "../shared")
const crops = path.join(shared, "reference", "retouch_crops")
const masks = path.join(shared, "data", "real", "retouch_wsc12358")
const missing = `RETOUCH crops not found under ${crops}`

// The crops are stored with unit spacing, so the vendor's usual axial spacing is set here.
const axialSpacingMm: Readonly<Record<string, number>> = { Cirrus: 0.00195, Spectralis: 0.0039, Topcon: 0.0026 }

/** Reads the crop's mask PNG (gray value / 85 = RETOUCH label) as a one-slice label volume. */
const readMask = (name: string, like: Volume): Volume => {
  const png = PNG.sync.read(readFileSync(path.join(masks, `${name}.png`)))
  const data = new Uint8Array(png.width * png.height)
  for (let i = 0; i < data.length; i++) data[i] = Math.round(png.data[i * 4] / 85)
  return { dims: [png.width, png.height, 1], spacingMm: like.spacingMm, dtype: "uint8", data }
}

const loadCase = async (name: string): Promise<SamplerCase> => {
  const vendor = name.split("_")[0]
  const spacing = (volume: Volume): Volume => ({ ...volume, spacingMm: [0.01, axialSpacingMm[vendor], 0.1] })
  const image = spacing(await readMetaImage(path.join(crops, name, "preprocessed.mhd")))
  const roi = spacing(await readMetaImage(path.join(crops, name, "roi.mhd")))
  return { id: name, vendor, image, roi, labels: readMask(name, image) }
}

describe("patch sampler on RETOUCH crops", () => {
  const names = ["Cirrus_1", "Spectralis_2", "Topcon_3"]

  it.for(names)("%s invariants", async (name, context) => {
    if (!existsSync(crops)) {
      context.skip(missing)
      return
    }
    const sample = await loadCase(name)
    const sampler = makePatchSampler([sample], { seed: 1, patchHeight: 64, patchWidth: 32, outputHeight: 24, outputWidth: 12 })
    const width = sample.image.dims[0]
    for (let i = 0; i < 3; i++) {
      const batch = sampler.nextBatch()
      const cropped = centerCrop(batch.y, 64, 32, 24, 12)
      batch.descriptors.forEach((descriptor, slot) => {
        expect(sample.roi.data[descriptor.y * width + descriptor.x]).not.toBe(0)
        const hasFluid = cropped.subarray(slot * 288, (slot + 1) * 288).some((label) => label > 0)
        expect(batch.presence[slot]).toBe(hasFluid ? 1 : 0)
      })
      expect(batch.y.every((label) => label <= 3)).toBe(true)
    }
  })
})
