import fc from "fast-check"
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { PNG } from "pngjs"
import * as UTIF from "utif2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  fileNumber,
  readBscanCase,
  readBscanFolder,
  readGrayImage,
  sortNumerically,
  writeBscanCase
} from "../../src/volume/bscans.ts"
import { UNLABELLED } from "../../src/volume/labels.ts"
import type { Volume } from "../../src/volume/volume.ts"

let dir: string
let counter = 0
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "octflow-bscans-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

const freshDir = async (): Promise<string> => {
  counter += 1
  const path = join(dir, `case${counter}`)
  await mkdir(path, { recursive: true })
  return path
}

/** Encodes an RGBA PNG from per-pixel [r, g, b] triples. */
const rgbPng = (width: number, height: number, pixels: ReadonlyArray<readonly [number, number, number]>): Buffer => {
  const png = new PNG({ width, height })
  pixels.forEach(([r, g, b], i) => {
    png.data[4 * i] = r
    png.data[4 * i + 1] = g
    png.data[4 * i + 2] = b
    png.data[4 * i + 3] = 255
  })
  return PNG.sync.write(png)
}

/** Encodes an 8-bit gray PNG. */
const grayPng = (width: number, height: number, values: readonly number[]): Buffer => {
  const png = new PNG({ width, height, colorType: 0, inputColorType: 0, bitDepth: 8, inputHasAlpha: false } as never)
  png.data = Buffer.from(values)
  return PNG.sync.write(png, { colorType: 0, inputColorType: 0, bitDepth: 8, inputHasAlpha: false } as never)
}

/** Encodes a one-strip uncompressed gray TIFF (big-endian file, as UTIF writes). */
const grayTiff = (width: number, height: number, bits: 8 | 16, values: readonly number[]): Buffer => {
  const bytes = new Uint8Array(width * height * (bits / 8))
  values.forEach((value, i) => {
    if (bits === 8) bytes[i] = value
    else {
      bytes[2 * i] = value >> 8
      bytes[2 * i + 1] = value & 0xff
    }
  })
  const metadata = { t258: [bits], t262: [1], t277: [1], t279: [bytes.length] } as unknown as UTIF.IFD
  return Buffer.from(UTIF.encodeImage(bytes, width, height, metadata))
}

const sidecar = (fields: Record<string, unknown>): string =>
  JSON.stringify({ vendor: "Spectralis", spacingMm: [0.01, 0.004, 0.1], ...fields })

describe("file ordering", () => {
  it("sorts 2 before 10", () => {
    expect(sortNumerically(["s_10.png", "s_2.png", "s_1.png"])).toEqual(["s_1.png", "s_2.png", "s_10.png"])
  })

  it("takes last number of name", () => {
    expect(fileNumber("Subject_01_10.png")).toBe(10)
  })

  it("stacks folder in numeric order", async () => {
    const caseDir = await freshDir()
    for (const n of [10, 2, 1]) await writeFile(join(caseDir, `b_${n}.png`), grayPng(1, 1, [n]))
    const volume = await readBscanFolder(caseDir, [1, 1, 1])
    expect(Array.from(volume.data)).toEqual([1, 2, 10])
  })
})

describe("readGrayImage", () => {
  it("reads equal RGB as gray", async () => {
    const path = join(await freshDir(), "rgb.png")
    await writeFile(path, rgbPng(2, 1, [[7, 7, 7], [200, 200, 200]]))
    const image = await readGrayImage(path)
    expect(Array.from(image.data)).toEqual([7, 200])
  })

  it("rejects unequal RGB", async () => {
    const path = join(await freshDir(), "colour.png")
    await writeFile(path, rgbPng(2, 1, [[7, 7, 7], [200, 10, 200]]))
    const error = (await readGrayImage(path).catch((e: unknown) => e)) as Error & { _tag: string; x: number }
    expect(error._tag).toBe("ImageNotGrayError")
    expect(error.x).toBe(1)
    expect(error.message).toContain("colour.png")
  })

  it("keeps 16-bit PNG values", async () => {
    const caseDir = await freshDir()
    const volume: Volume<Uint16Array> = { dims: [3, 1, 1], spacingMm: [1, 1, 1], dtype: "uint16", data: Uint16Array.from([0, 1000, 65535]) }
    await writeBscanCase(caseDir, { oct: volume })
    const image = await readGrayImage(join(caseDir, "oct", "bscan_0.png"))
    expect(image.bitDepth).toBe(16)
    expect(Array.from(image.data)).toEqual([0, 1000, 65535])
  })

  it("reads 8-bit gray TIFF", async () => {
    const path = join(await freshDir(), "b.tif")
    await writeFile(path, grayTiff(2, 2, 8, [1, 2, 3, 250]))
    const image = await readGrayImage(path)
    expect(Array.from(image.data)).toEqual([1, 2, 3, 250])
  })

  it("reads 16-bit gray TIFF", async () => {
    const path = join(await freshDir(), "b16.tiff")
    await writeFile(path, grayTiff(2, 1, 16, [258, 60000]))
    const image = await readGrayImage(path)
    expect(image.bitDepth).toBe(16)
    expect(Array.from(image.data)).toEqual([258, 60000])
  })

  it("rejects undecodable PNG", async () => {
    const path = join(await freshDir(), "bad.png")
    await writeFile(path, Buffer.from("not a png"))
    const error = (await readGrayImage(path).catch((e: unknown) => e)) as { _tag: string }
    expect(error._tag).toBe("ImageDecodeError")
  })
})

describe("readBscanCase", () => {
  it("marks slices without mask unlabelled", async () => {
    const caseDir = await freshDir()
    await mkdir(join(caseDir, "oct"))
    await mkdir(join(caseDir, "reference"))
    for (const n of [1, 2, 3]) await writeFile(join(caseDir, "oct", `img_${n}.png`), grayPng(2, 1, [n, n]))
    // Masks numbered from 0, images from 1: mask 1 belongs to image 2 (z = 1).
    await writeFile(join(caseDir, "reference", "mask_1.png"), grayPng(2, 1, [0, 255]))
    await writeFile(join(caseDir, "octflow.json"), sidecar({ maskEncoding: "0/255", referenceNumberOffset: 1 }))
    const { labels } = await readBscanCase(join(caseDir, "octflow.json"))
    expect(Array.from(labels?.data ?? [])).toEqual([UNLABELLED, UNLABELLED, 0, 1, UNLABELLED, UNLABELLED])
  })

  it("reads retouch-coded masks", async () => {
    const caseDir = await freshDir()
    await mkdir(join(caseDir, "oct"))
    await mkdir(join(caseDir, "reference"))
    await writeFile(join(caseDir, "oct", "1.png"), grayPng(4, 1, [9, 9, 9, 9]))
    await writeFile(join(caseDir, "reference", "1.png"), grayPng(4, 1, [0, 1, 2, 3]))
    await writeFile(join(caseDir, "octflow.json"), sidecar({ labelScheme: "retouch" }))
    const { labels } = await readBscanCase(join(caseDir, "octflow.json"))
    expect(Array.from(labels?.data ?? [])).toEqual([0, 1, 2, 3])
  })

  it("rejects mask values outside encoding", async () => {
    const caseDir = await freshDir()
    await mkdir(join(caseDir, "oct"))
    await mkdir(join(caseDir, "reference"))
    await writeFile(join(caseDir, "oct", "1.png"), grayPng(3, 1, [9, 9, 9]))
    await writeFile(join(caseDir, "reference", "1.png"), grayPng(3, 1, [0, 255, 255]))
    await writeFile(join(caseDir, "octflow.json"), sidecar({}))
    const error = (await readBscanCase(join(caseDir, "octflow.json")).catch((e: unknown) => e)) as Error & { _tag: string }
    expect(error._tag).toBe("LabelValueOutOfSchemeError")
    expect(error.message).toContain("255 (2 voxels)")
    expect(error.message).toContain("maskEncoding")
  })

  it("rejects images of different sizes", async () => {
    const caseDir = await freshDir()
    await mkdir(join(caseDir, "oct"))
    await writeFile(join(caseDir, "oct", "1.png"), grayPng(2, 1, [1, 1]))
    await writeFile(join(caseDir, "oct", "2.png"), grayPng(3, 1, [1, 1, 1]))
    await writeFile(join(caseDir, "octflow.json"), sidecar({}))
    const error = (await readBscanCase(join(caseDir, "octflow.json")).catch((e: unknown) => e)) as { _tag: string }
    expect(error._tag).toBe("ImageSizeMismatchError")
  })

  it("rejects empty image folder", async () => {
    const caseDir = await freshDir()
    await mkdir(join(caseDir, "oct"))
    await writeFile(join(caseDir, "octflow.json"), sidecar({}))
    const error = (await readBscanCase(join(caseDir, "octflow.json")).catch((e: unknown) => e)) as { _tag: string }
    expect(error._tag).toBe("EmptyFolderError")
  })

  it("rejects sidecar without spacing", async () => {
    const caseDir = await freshDir()
    await writeFile(join(caseDir, "octflow.json"), JSON.stringify({ vendor: "Spectralis" }))
    const error = (await readBscanCase(join(caseDir, "octflow.json")).catch((e: unknown) => e)) as Error & { _tag: string }
    expect(error._tag).toBe("SidecarInvalidError")
    expect(error.message).toContain("spacingMm")
  })

  it("rejects mask without image", async () => {
    const caseDir = await freshDir()
    await mkdir(join(caseDir, "oct"))
    await mkdir(join(caseDir, "reference"))
    await writeFile(join(caseDir, "oct", "1.png"), grayPng(1, 1, [1]))
    await writeFile(join(caseDir, "reference", "7.png"), grayPng(1, 1, [1]))
    await writeFile(join(caseDir, "octflow.json"), sidecar({}))
    const error = (await readBscanCase(join(caseDir, "octflow.json")).catch((e: unknown) => e)) as Error & { _tag: string }
    expect(error._tag).toBe("SidecarInvalidError")
    expect(error.message).toContain("7.png")
  })
})

describe("writeBscanCase", () => {
  it("round-trips volumes and labels", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 12 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 10000 }),
        async (width, height, depth, wide, seed) => {
          const voxels = width * height * depth
          const oct: Volume<Uint8Array | Uint16Array> = wide
            ? { dims: [width, height, depth], spacingMm: [0.01, 0.004, 0.1], dtype: "uint16", data: Uint16Array.from({ length: voxels }, (_, i) => (i * 7919 + seed) % 65536) }
            : { dims: [width, height, depth], spacingMm: [0.01, 0.004, 0.1], dtype: "uint8", data: Uint8Array.from({ length: voxels }, (_, i) => (i * 31 + seed) % 256) }
          const sliceSize = width * height
          const labelData = Uint8Array.from({ length: voxels }, (_, i) => {
            const z = Math.floor(i / sliceSize)
            return (z + seed) % 3 === 0 ? UNLABELLED : (i + seed) % 4
          })
          const labels: Volume<Uint8Array> = { dims: oct.dims, spacingMm: oct.spacingMm, dtype: "uint8", data: labelData }
          const caseDir = await freshDir()
          await writeBscanCase(caseDir, { oct, labels, labelScheme: "retouch", vendor: "Spectralis" })
          const back = await readBscanCase(join(caseDir, "octflow.json"))
          expect(back.oct.dtype).toBe(oct.dtype)
          expect(back.oct.dims).toEqual(oct.dims)
          expect(back.oct.spacingMm).toEqual(oct.spacingMm)
          expect(Array.from(back.oct.data)).toEqual(Array.from(oct.data))
          expect(Array.from(back.labels?.data ?? [])).toEqual(Array.from(labelData))
        }
      ),
      { numRuns: 25 }
    )
  })
})
