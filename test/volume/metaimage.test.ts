import fc from "fast-check"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { deflateSync, gzipSync } from "node:zlib"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { readMetaImage, readMetaImageHeader, writeMetaImage } from "../../src/volume/metaimage.ts"
import { allocate, type DType, type Volume } from "../../src/volume/volume.ts"

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "octflow-mhd-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

const header = (lines: Record<string, string>): string =>
  Object.entries(lines)
    .map(([key, value]) => `${key} = ${value}`)
    .join("\n") + "\n"

const base = {
  ObjectType: "Image",
  NDims: "3",
  DimSize: "3 2 2",
  ElementSpacing: "0.5 0.25 2",
  ElementType: "MET_UCHAR"
}

/** 12 voxels 0..11, x fastest. */
const ramp = Uint8Array.from({ length: 12 }, (_, i) => i)

describe("readMetaImage", () => {
  it("reads mhd with relative raw", async () => {
    await writeFile(join(dir, "a.raw"), ramp)
    await writeFile(join(dir, "a.mhd"), header({ ...base, ElementDataFile: "a.raw" }))
    const volume = await readMetaImage(join(dir, "a.mhd"))
    expect(volume.dims).toEqual([3, 2, 2])
    expect(volume.spacingMm).toEqual([0.5, 0.25, 2])
    expect(volume.dtype).toBe("uint8")
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads absolute data path", async () => {
    await writeFile(join(dir, "abs.raw"), ramp)
    await writeFile(join(dir, "abs.mhd"), header({ ...base, ElementDataFile: join(dir, "abs.raw") }))
    const volume = await readMetaImage(join(dir, "abs.mhd"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads LOCAL mha with CRLF", async () => {
    const text = header({ ...base, ElementDataFile: "LOCAL" }).replace(/\n/g, "\r\n")
    await writeFile(join(dir, "crlf.mha"), Buffer.concat([Buffer.from(text), ramp]))
    const volume = await readMetaImage(join(dir, "crlf.mha"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads big-endian ushort", async () => {
    const bytes = Buffer.from([0x01, 0x02, 0x00, 0xff])
    await writeFile(join(dir, "msb.raw"), bytes)
    await writeFile(
      join(dir, "msb.mhd"),
      header({ NDims: "2", DimSize: "2 1", ElementType: "MET_USHORT", BinaryDataByteOrderMSB: "True", ElementDataFile: "msb.raw" })
    )
    const volume = await readMetaImage(join(dir, "msb.mhd"))
    expect(Array.from(volume.data)).toEqual([0x0102, 0x00ff])
  })

  it("reads ElementByteOrderMSB alias", async () => {
    const bytes = Buffer.from([0x80, 0x00, 0x00, 0x01])
    await writeFile(join(dir, "alias.raw"), bytes)
    await writeFile(
      join(dir, "alias.mhd"),
      header({ NDims: "2", DimSize: "2 1", ElementType: "MET_SHORT", ElementByteOrderMSB: "True", ElementDataFile: "alias.raw" })
    )
    const volume = await readMetaImage(join(dir, "alias.mhd"))
    expect(Array.from(volume.data)).toEqual([-32768, 1])
  })

  it("reads 2D image as one slice", async () => {
    await writeFile(join(dir, "flat.raw"), ramp.subarray(0, 6))
    await writeFile(join(dir, "flat.mhd"), header({ NDims: "2", DimSize: "3 2", ElementSpacing: "0.1 0.2", ElementType: "MET_UCHAR", ElementDataFile: "flat.raw" }))
    const volume = await readMetaImage(join(dir, "flat.mhd"))
    expect(volume.dims).toEqual([3, 2, 1])
    expect(volume.spacingMm).toEqual([0.1, 0.2, 1])
  })

  it("reads zlib zraw with size", async () => {
    const packed = deflateSync(ramp)
    await writeFile(join(dir, "z.zraw"), packed)
    await writeFile(
      join(dir, "z.mhd"),
      header({ ...base, CompressedData: "True", CompressedDataSize: String(packed.length), ElementDataFile: "z.zraw" })
    )
    const volume = await readMetaImage(join(dir, "z.mhd"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads zlib without size", async () => {
    await writeFile(join(dir, "z2.zraw"), deflateSync(ramp))
    await writeFile(join(dir, "z2.mhd"), header({ ...base, CompressedData: "True", ElementDataFile: "z2.zraw" }))
    const volume = await readMetaImage(join(dir, "z2.mhd"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads compressed LOCAL mha", async () => {
    const packed = deflateSync(ramp)
    const text = header({ ...base, CompressedData: "True", CompressedDataSize: String(packed.length), ElementDataFile: "LOCAL" })
    await writeFile(join(dir, "zl.mha"), Buffer.concat([Buffer.from(text), packed]))
    const volume = await readMetaImage(join(dir, "zl.mha"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("skips HeaderSize bytes", async () => {
    await writeFile(join(dir, "hs.raw"), Buffer.concat([Buffer.from([9, 9, 9, 9, 9]), ramp]))
    await writeFile(join(dir, "hs.mhd"), header({ ...base, HeaderSize: "5", ElementDataFile: "hs.raw" }))
    const volume = await readMetaImage(join(dir, "hs.mhd"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads HeaderSize -1 from end", async () => {
    await writeFile(join(dir, "tail.raw"), Buffer.concat([Buffer.from([7, 7, 7]), ramp]))
    await writeFile(join(dir, "tail.mhd"), header({ ...base, HeaderSize: "-1", ElementDataFile: "tail.raw" }))
    const volume = await readMetaImage(join(dir, "tail.mhd"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads LIST one file per slice", async () => {
    await writeFile(join(dir, "s0.raw"), ramp.subarray(0, 6))
    await writeFile(join(dir, "s1.raw"), ramp.subarray(6))
    await writeFile(join(dir, "list.mhd"), header({ ...base, ElementDataFile: "LIST 2D" }) + "s0.raw\ns1.raw\n")
    const volume = await readMetaImage(join(dir, "list.mhd"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads pattern file names", async () => {
    await writeFile(join(dir, "p001.raw"), ramp.subarray(0, 6))
    await writeFile(join(dir, "p002.raw"), ramp.subarray(6))
    await writeFile(join(dir, "pattern.mhd"), header({ ...base, ElementDataFile: "p%03d.raw 1 2 1" }))
    const volume = await readMetaImage(join(dir, "pattern.mhd"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })

  it("reads header without data", async () => {
    await writeFile(join(dir, "h.mhd"), header({ ...base, ElementType: "MET_FLOAT", ElementDataFile: "missing.raw" }))
    const parsed = await readMetaImageHeader(join(dir, "h.mhd"))
    expect(parsed.dtype).toBe("float32")
    expect(parsed.files).toEqual([join(dir, "h.mhd"), join(dir, "missing.raw")])
  })
})

describe("readMetaImage errors", () => {
  const cases: ReadonlyArray<{ name: string; lines: Record<string, string>; data?: Uint8Array; tag: string; mentions: string }> = [
    { name: "truncated", lines: { ...base, ElementDataFile: "e.raw" }, data: ramp.subarray(0, 11), tag: "VolumeTruncatedError", mentions: "e.raw" },
    { name: "oversized", lines: { ...base, ElementDataFile: "e.raw" }, data: new Uint8Array(13), tag: "VolumeOversizedError", mentions: "e.raw" },
    { name: "missing DimSize", lines: { NDims: "3", ElementType: "MET_UCHAR", ElementDataFile: "e.raw" }, tag: "HeaderKeyMissingError", mentions: "missing_DimSize.mhd" },
    { name: "missing ElementType", lines: { NDims: "3", DimSize: "3 2 2", ElementDataFile: "e.raw" }, tag: "HeaderKeyMissingError", mentions: "missing_ElementType.mhd" },
    { name: "bad DimSize", lines: { ...base, DimSize: "3 2", ElementDataFile: "e.raw" }, tag: "HeaderValueInvalidError", mentions: "bad_DimSize.mhd" },
    { name: "bad NDims", lines: { ...base, NDims: "4", ElementDataFile: "e.raw" }, tag: "HeaderValueInvalidError", mentions: "bad_NDims.mhd" },
    { name: "bad boolean", lines: { ...base, CompressedData: "yes", ElementDataFile: "e.raw" }, tag: "HeaderValueInvalidError", mentions: "bad_boolean.mhd" },
    { name: "unsupported type", lines: { ...base, ElementType: "MET_LONG_LONG", ElementDataFile: "e.raw" }, tag: "UnsupportedElementTypeError", mentions: "unsupported_type.mhd" },
    { name: "missing data file", lines: { ...base, ElementDataFile: "nothere.raw" }, tag: "VolumeFileNotFoundError", mentions: "nothere.raw" },
    { name: "bad zlib", lines: { ...base, CompressedData: "True", ElementDataFile: "e.raw" }, data: ramp, tag: "DecompressionFailedError", mentions: "e.raw" }
  ]
  for (const testCase of cases) {
    it(`rejects ${testCase.name}`, async () => {
      const stem = testCase.name.replace(/\s/g, "_")
      if (testCase.data !== undefined) await writeFile(join(dir, "e.raw"), testCase.data)
      await writeFile(join(dir, `${stem}.mhd`), header(testCase.lines))
      const error = await readMetaImage(join(dir, `${stem}.mhd`)).catch((e: unknown) => e)
      expect((error as { _tag?: string })._tag).toBe(testCase.tag)
      expect((error as Error).message).toContain(testCase.mentions)
    })
  }

  it("names sizes in truncation message", async () => {
    await writeFile(join(dir, "t.raw"), ramp.subarray(0, 10))
    await writeFile(join(dir, "t.mhd"), header({ ...base, ElementDataFile: "t.raw" }))
    const error = (await readMetaImage(join(dir, "t.mhd")).catch((e: unknown) => e)) as Error
    expect(error.message).toContain("t.raw")
    expect(error.message).toContain("expected 12 bytes")
    expect(error.message).toContain("found 10")
  })

  it("rejects truncated LOCAL mha", async () => {
    const text = header({ ...base, ElementDataFile: "LOCAL" })
    await writeFile(join(dir, "short.mha"), Buffer.concat([Buffer.from(text), ramp.subarray(0, 7)]))
    const error = await readMetaImage(join(dir, "short.mha")).catch((e: unknown) => e)
    expect((error as { _tag?: string })._tag).toBe("VolumeTruncatedError")
  })

  it("rejects short file with HeaderSize -1", async () => {
    await writeFile(join(dir, "tailshort.raw"), ramp.subarray(0, 5))
    await writeFile(join(dir, "tailshort.mhd"), header({ ...base, HeaderSize: "-1", ElementDataFile: "tailshort.raw" }))
    const error = await readMetaImage(join(dir, "tailshort.mhd")).catch((e: unknown) => e)
    expect((error as { _tag?: string })._tag).toBe("VolumeTruncatedError")
  })

  it("rejects LIST with too few names", async () => {
    await writeFile(join(dir, "fewlist.mhd"), header({ ...base, ElementDataFile: "LIST" }) + "s0.raw\n")
    const error = await readMetaImage(join(dir, "fewlist.mhd")).catch((e: unknown) => e)
    expect((error as { _tag?: string })._tag).toBe("HeaderValueInvalidError")
  })

  it("rejects inflated size mismatch", async () => {
    await writeFile(join(dir, "zs.zraw"), deflateSync(ramp.subarray(0, 8)))
    await writeFile(join(dir, "zs.mhd"), header({ ...base, CompressedData: "True", ElementDataFile: "zs.zraw" }))
    const error = await readMetaImage(join(dir, "zs.mhd")).catch((e: unknown) => e)
    expect((error as { _tag?: string })._tag).toBe("VolumeTruncatedError")
  })

  it("accepts gzip compressed data", async () => {
    await writeFile(join(dir, "gz.zraw"), gzipSync(ramp))
    await writeFile(join(dir, "gz.mhd"), header({ ...base, CompressedData: "True", ElementDataFile: "gz.zraw" }))
    const volume = await readMetaImage(join(dir, "gz.mhd"))
    expect(Array.from(volume.data)).toEqual(Array.from(ramp))
  })
})

const dtypes: readonly DType[] = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]

const fillVolume = (dtype: DType, dims: [number, number, number], seed: number): Volume => {
  const data = allocate(dtype, dims[0] * dims[1] * dims[2])
  for (let i = 0; i < data.length; i++) {
    const value = ((i * 2654435761 + seed) >>> 0) % 251
    data[i] = dtype.startsWith("float") ? value / 7 - 10 : dtype.startsWith("int") ? value - 120 : value
  }
  return { dims, spacingMm: [0.0117, 0.00195, 0.047], dtype, data }
}

describe("writeMetaImage", () => {
  for (const dtype of dtypes) {
    for (const [ext, compress] of [[".mha", false], [".mhd", false], [".mha", true], [".mhd", true]] as const) {
      it(`round-trips ${dtype} ${ext}${compress ? " zlib" : ""}`, async () => {
        const volume = fillVolume(dtype, [4, 3, 2], 5)
        const path = join(dir, `rt-${dtype}-${compress}${ext}`)
        await writeMetaImage(path, volume, { compress })
        const back = await readMetaImage(path)
        expect(back.dtype).toBe(dtype)
        expect(back.dims).toEqual([4, 3, 2])
        expect(back.spacingMm).toEqual([0.0117, 0.00195, 0.047])
        expect(Array.from(back.data)).toEqual(Array.from(volume.data))
      })
    }
  }

  it("writes keys in ITK order", async () => {
    const path = join(dir, "order.mhd")
    await writeMetaImage(path, fillVolume("uint8", [2, 2, 1], 0), { compress: true })
    const keys = (await readFile(path, "latin1"))
      .trim()
      .split("\n")
      .map((line) => line.split(" = ")[0])
    expect(keys).toEqual([
      "ObjectType",
      "NDims",
      "BinaryData",
      "BinaryDataByteOrderMSB",
      "CompressedData",
      "CompressedDataSize",
      "TransformMatrix",
      "Offset",
      "CenterOfRotation",
      "AnatomicalOrientation",
      "ElementSpacing",
      "DimSize",
      "ElementType",
      "ElementDataFile"
    ])
  })

  it("names zraw data file", async () => {
    const path = join(dir, "named.mhd")
    await writeMetaImage(path, fillVolume("uint8", [2, 2, 1], 0), { compress: true })
    expect(await readFile(path, "latin1")).toContain("ElementDataFile = named.zraw")
  })

  it("round-trips random volumes", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...dtypes),
        fc.tuple(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 4 })),
        fc.integer({ min: 0, max: 1000 }),
        fc.boolean(),
        fc.constantFrom(".mha", ".mhd"),
        async (dtype, dims, seed, compress, ext) => {
          const volume = fillVolume(dtype, dims, seed)
          const path = join(dir, `prop${ext}`)
          await writeMetaImage(path, volume, { compress })
          const back = await readMetaImage(path)
          expect(back.dims).toEqual(dims)
          expect(Array.from(back.data)).toEqual(Array.from(volume.data))
        }
      ),
      { numRuns: 40 }
    )
  })
})
