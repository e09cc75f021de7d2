import fc from "fast-check"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { gzipSync } from "node:zlib"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { readNifti, readNiftiInfo, writeNifti } from "../../src/volume/nifti.ts"
import { allocate, type DType, type Volume } from "../../src/volume/volume.ts"

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "octflow-nii-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

interface HandHeader {
  readonly littleEndian: boolean
  readonly dims: readonly number[]
  readonly datatype: number
  readonly bitpix: number
  readonly pixdim: readonly number[]
  readonly slope?: number
  readonly inter?: number
  readonly units?: number
}

/** Builds a NIfTI-1 file field by field, in either byte order, with data appended as given. */
const handNifti1 = (h: HandHeader, data: Uint8Array): Uint8Array => {
  const bytes = new Uint8Array(352 + data.length)
  const view = new DataView(bytes.buffer)
  const le = h.littleEndian
  view.setInt32(0, 348, le)
  view.setInt16(40, h.dims.length, le)
  h.dims.forEach((d, i) => view.setInt16(42 + 2 * i, d, le))
  view.setInt16(70, h.datatype, le)
  view.setInt16(72, h.bitpix, le)
  view.setFloat32(76, 1, le)
  h.pixdim.forEach((p, i) => view.setFloat32(80 + 4 * i, p, le))
  view.setFloat32(108, 352, le)
  view.setFloat32(112, h.slope ?? 0, le)
  view.setFloat32(116, h.inter ?? 0, le)
  view.setUint8(123, h.units ?? 2)
  bytes.set([0x6e, 0x2b, 0x31, 0x00], 344)
  bytes.set(data, 352)
  return bytes
}

describe("readNifti", () => {
  it("reads big-endian int16", async () => {
    const data = Uint8Array.from([0x01, 0x02, 0xff, 0xfe, 0x00, 0x07, 0x80, 0x00])
    const file = handNifti1({ littleEndian: false, dims: [2, 2, 1], datatype: 4, bitpix: 16, pixdim: [0.5, 0.25, 3] }, data)
    await writeFile(join(dir, "be.nii"), file)
    const volume = await readNifti(join(dir, "be.nii"))
    expect(volume.dtype).toBe("int16")
    expect(volume.dims).toEqual([2, 2, 1])
    expect(volume.spacingMm).toEqual([0.5, 0.25, 3])
    expect(Array.from(volume.data)).toEqual([0x0102, -2, 7, -32768])
  })

  it("reads big-endian float32", async () => {
    const data = new Uint8Array(8)
    new DataView(data.buffer).setFloat32(0, 1.5, false)
    new DataView(data.buffer).setFloat32(4, -2.25, false)
    await writeFile(join(dir, "bef.nii"), handNifti1({ littleEndian: false, dims: [2, 1, 1], datatype: 16, bitpix: 32, pixdim: [1, 1, 1] }, data))
    const volume = await readNifti(join(dir, "bef.nii"))
    expect(Array.from(volume.data)).toEqual([1.5, -2.25])
  })

  it("applies scl_slope and scl_inter", async () => {
    const file = handNifti1(
      { littleEndian: true, dims: [3, 1, 1], datatype: 2, bitpix: 8, pixdim: [1, 1, 1], slope: 0.5, inter: 10 },
      Uint8Array.from([0, 4, 255])
    )
    await writeFile(join(dir, "slope.nii"), file)
    const volume = await readNifti(join(dir, "slope.nii"))
    expect(volume.dtype).toBe("float32")
    expect(Array.from(volume.data)).toEqual([10, 12, 137.5])
  })

  it("ignores identity scaling", async () => {
    const file = handNifti1(
      { littleEndian: true, dims: [2, 1, 1], datatype: 2, bitpix: 8, pixdim: [1, 1, 1], slope: 1, inter: 0 },
      Uint8Array.from([3, 255])
    )
    await writeFile(join(dir, "identity.nii"), file)
    const volume = await readNifti(join(dir, "identity.nii"))
    expect(volume.dtype).toBe("uint8")
  })

  it("converts micron spacing to mm", async () => {
    const file = handNifti1(
      { littleEndian: true, dims: [1, 1, 1], datatype: 2, bitpix: 8, pixdim: [11.7, 3.9, 120], units: 3 },
      Uint8Array.from([1])
    )
    await writeFile(join(dir, "um.nii"), file)
    const volume = await readNifti(join(dir, "um.nii"))
    expect(volume.spacingMm[0]).toBeCloseTo(0.0117, 7)
    expect(volume.spacingMm[2]).toBeCloseTo(0.12, 7)
  })

  it("reads 2D as one slice", async () => {
    await writeFile(join(dir, "flat.nii"), handNifti1({ littleEndian: true, dims: [2, 2], datatype: 2, bitpix: 8, pixdim: [1, 2] }, Uint8Array.from([1, 2, 3, 4])))
    const volume = await readNifti(join(dir, "flat.nii"))
    expect(volume.dims).toEqual([2, 2, 1])
  })

  it("reads gzip header only", async () => {
    const volume: Volume = { dims: [4, 3, 2], spacingMm: [0.1, 0.2, 0.3], dtype: "uint16", data: new Uint16Array(24) }
    await writeNifti(join(dir, "info.nii.gz"), volume)
    const info = await readNiftiInfo(join(dir, "info.nii.gz"))
    expect(info.dims).toEqual([4, 3, 2])
    expect(info.dtype).toBe("uint16")
  })
})

describe("readNifti errors", () => {
  it("rejects gz that is not gzip", async () => {
    const file = handNifti1({ littleEndian: true, dims: [1, 1, 1], datatype: 2, bitpix: 8, pixdim: [1, 1, 1] }, Uint8Array.from([1]))
    await writeFile(join(dir, "plain.nii.gz"), file)
    const error = (await readNifti(join(dir, "plain.nii.gz")).catch((e: unknown) => e)) as Error & { _tag: string }
    expect(error._tag).toBe("NotGzipError")
    expect(error.message).toContain("plain.nii.gz")
  })

  it("rejects truncated data", async () => {
    const file = handNifti1({ littleEndian: true, dims: [4, 1, 1], datatype: 512, bitpix: 16, pixdim: [1, 1, 1] }, new Uint8Array(6))
    await writeFile(join(dir, "short.nii"), file)
    const error = (await readNifti(join(dir, "short.nii")).catch((e: unknown) => e)) as { _tag: string }
    expect(error._tag).toBe("VolumeTruncatedError")
  })

  it("rejects unsupported datatype", async () => {
    const file = handNifti1({ littleEndian: true, dims: [1, 1, 1], datatype: 128, bitpix: 24, pixdim: [1, 1, 1] }, new Uint8Array(3))
    await writeFile(join(dir, "rgb.nii"), file)
    const error = (await readNifti(join(dir, "rgb.nii")).catch((e: unknown) => e)) as { _tag: string }
    expect(error._tag).toBe("UnsupportedElementTypeError")
  })

  it("rejects 4D with time points", async () => {
    const file = handNifti1({ littleEndian: true, dims: [1, 1, 1, 2], datatype: 2, bitpix: 8, pixdim: [1, 1, 1, 1] }, new Uint8Array(2))
    await writeFile(join(dir, "time.nii"), file)
    const error = (await readNifti(join(dir, "time.nii")).catch((e: unknown) => e)) as { _tag: string }
    expect(error._tag).toBe("NiftiHeaderInvalidError")
  })

  it("rejects non-NIfTI file", async () => {
    await writeFile(join(dir, "junk.nii"), new Uint8Array(400))
    const error = (await readNifti(join(dir, "junk.nii")).catch((e: unknown) => e)) as { _tag: string }
    expect(error._tag).toBe("NiftiHeaderInvalidError")
  })

  it("rejects damaged gzip", async () => {
    const packed = gzipSync(new Uint8Array(500))
    await writeFile(join(dir, "cut.nii.gz"), packed.subarray(0, packed.length - 9))
    const error = (await readNifti(join(dir, "cut.nii.gz")).catch((e: unknown) => e)) as { _tag: string }
    expect(error._tag).toBe("DecompressionFailedError")
  })
})

const dtypes: readonly DType[] = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]

const fillVolume = (dtype: DType, dims: [number, number, number], seed: number): Volume => {
  const data = allocate(dtype, dims[0] * dims[1] * dims[2])
  for (let i = 0; i < data.length; i++) {
    const value = ((i * 40503 + seed * 977) >>> 0) % 200
    data[i] = dtype.startsWith("float") ? value / 4 - 3 : dtype.startsWith("int") ? value - 100 : value
  }
  return { dims, spacingMm: [0.0113, 0.0039, 0.12], dtype, data }
}

describe("writeNifti", () => {
  for (const dtype of dtypes) {
    for (const [name, version] of [["v1.nii", 1], ["v1.nii.gz", 1], ["v2.nii", 2], ["v2.nii.gz", 2]] as const) {
      it(`round-trips ${dtype} ${name}`, async () => {
        const volume = fillVolume(dtype, [3, 4, 2], 1)
        const path = join(dir, `${dtype}-${name}`)
        await writeNifti(path, volume, { version })
        const back = await readNifti(path)
        expect(back.dtype).toBe(dtype)
        expect(back.dims).toEqual([3, 4, 2])
        expect(back.spacingMm[0]).toBeCloseTo(0.0113, 6)
        expect(back.spacingMm[2]).toBeCloseTo(0.12, 6)
        expect(Array.from(back.data)).toEqual(Array.from(volume.data))
      })
    }
  }

  it("writes sform as scaling", async () => {
    const path = join(dir, "sform.nii")
    await writeNifti(path, fillVolume("uint8", [2, 2, 2], 0))
    const view = new DataView((await readFile(path)).buffer)
    expect(view.getInt16(254, true)).toBe(1)
    expect(view.getFloat32(280, true)).toBeCloseTo(0.0113, 6)
    expect(view.getFloat32(300, true)).toBeCloseTo(0.0039, 6)
    expect(view.getFloat32(320, true)).toBeCloseTo(0.12, 6)
    expect(view.getUint8(123)).toBe(2)
  })

  it("round-trips random volumes", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...dtypes),
        fc.tuple(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 4 })),
        fc.integer({ min: 0, max: 1000 }),
        fc.constantFrom(".nii", ".nii.gz"),
        fc.constantFrom(1 as const, 2 as const),
        async (dtype, dims, seed, ext, version) => {
          const volume = fillVolume(dtype, dims, seed)
          const path = join(dir, `prop${ext}`)
          await writeNifti(path, volume, { version })
          const back = await readNifti(path)
          expect(back.dims).toEqual(dims)
          expect(Array.from(back.data)).toEqual(Array.from(volume.data))
        }
      ),
      { numRuns: 40 }
    )
  })
})
