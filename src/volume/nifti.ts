/**
 * NIfTI-1 and NIfTI-2 (`.nii`, `.nii.gz`) reader and writer.
 *
 * nifti-reader-js parses the header and returns raw voxel bytes, so this module builds the
 * typed array from the datatype code, swaps bytes of big-endian files and applies
 * `scl_slope`/`scl_inter`. Voxel order is NIfTI's: i (x) fastest, then j (y), then k (z),
 * the same as `Volume`. Spacing comes from pixdim[1..3], converted to mm from the units in
 * `xyzt_units` (unknown units are taken as mm).
 *
 * The writer writes little-endian NIfTI-1 (or NIfTI-2 on request) with pixdim = spacing,
 * units mm and qform/sform both set to the scaling diag(spacing), so viewers show the voxel
 * size. Its world axes are NIfTI's RAS, not the LPS that ITK uses for MetaImage.
 */
import { createReadStream } from "node:fs"
import { open, readFile, rm, writeFile } from "node:fs/promises"
import { endianness } from "node:os"
import { promisify } from "node:util"
import { createGunzip, gunzip, gzip } from "node:zlib"
import * as nifti from "nifti-reader-js"
import {
  DecompressionFailedError,
  NiftiHeaderInvalidError,
  NotGzipError,
  UnsupportedElementTypeError,
  UnsupportedFormatError,
  VolumeFileNotFoundError,
  VolumeOversizedError,
  VolumeTruncatedError
} from "./errors.ts"
import { swapBytes } from "./metaimage.ts"
import { allocate, bytesPerVoxel, type DType, type Volume } from "./volume.ts"

const gunzipAsync = promisify(gunzip)
const gzipAsync = promisify(gzip)

/** NIfTI datatype codes of the supported voxel types. */
export const niftiDatatypeCodes: Readonly<Record<DType, number>> = {
  uint8: 2,
  int16: 4,
  int32: 8,
  float32: 16,
  float64: 64,
  int8: 256,
  uint16: 512,
  uint32: 768
}

const dtypeOfCode = (code: number): DType | undefined =>
  (Object.keys(niftiDatatypeCodes) as DType[]).find((dtype) => niftiDatatypeCodes[dtype] === code)

const supportedCodes = (): string[] =>
  (Object.entries(niftiDatatypeCodes) as [DType, number][]).map(([dtype, code]) => `${code} (${dtype})`)

/** Factor from the spatial unit code in `xyzt_units` (low 3 bits) to mm; 0 = unknown, taken as mm. */
const unitToMm = (xyztUnits: number): number => {
  const spatial = xyztUnits & 0x07
  if (spatial === 1) return 1000
  if (spatial === 3) return 0.001
  return 1
}

const isGzipMagic = (bytes: Uint8Array): boolean => bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b

const hexPrefix = (bytes: Uint8Array): string =>
  bytes.length === 0 ? "none, the file is empty" : Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join(" ")

const checkExtension = (path: string): boolean => {
  const lower = path.toLowerCase()
  if (lower.endsWith(".nii.gz")) return true
  if (lower.endsWith(".nii")) return false
  throw new UnsupportedFormatError({ path, supported: [".nii", ".nii.gz"] })
}

const readBytes = async (path: string): Promise<Buffer> => {
  try {
    return await readFile(path)
  } catch (cause) {
    const code = (cause as { code?: string }).code
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") throw new VolumeFileNotFoundError({ path, cause })
    throw cause
  }
}

const toArrayBuffer = (bytes: Uint8Array): ArrayBuffer =>
  bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer

/** The parts of a NIfTI header that the reader uses. */
export interface NiftiInfo {
  readonly path: string
  readonly version: 1 | 2
  readonly dims: readonly [number, number, number]
  readonly spacingMm: readonly [number, number, number]
  /** Voxel type on disk, before scaling. */
  readonly storedDtype: DType
  /** Voxel type after reading: float32 when a scaling applies, else the stored type. */
  readonly dtype: DType
  readonly littleEndian: boolean
  readonly sclSlope: number
  readonly sclInter: number
  readonly voxOffset: number
}

/** Whether `scl_slope`/`scl_inter` change values: slope non-zero and not the identity 1, 0. */
const hasScaling = (slope: number, inter: number): boolean =>
  Number.isFinite(slope) && slope !== 0 && !(slope === 1 && (inter === 0 || !Number.isFinite(inter)))

const interpretHeader = (path: string, bytes: ArrayBuffer): NiftiInfo => {
  if (!nifti.isNIFTI(bytes)) {
    throw new NiftiHeaderInvalidError({
      path,
      field: "magic",
      actual: JSON.stringify(Buffer.from(bytes.slice(344, 348)).toString("latin1")),
      expected: '"n+1" (NIfTI-1) or "n+2" (NIfTI-2) in a single .nii file'
    })
  }
  let header: ReturnType<typeof nifti.readHeader>
  try {
    header = nifti.readHeader(bytes)
  } catch (cause) {
    throw new NiftiHeaderInvalidError({ path, field: "(header)", actual: (cause as Error).message, expected: "a complete NIfTI header" })
  }
  const version = nifti.isNIFTI2(bytes) ? 2 : 1
  const dim = header.dims
  const nDims = dim[0]
  if (!(nDims >= 2 && nDims <= 7)) {
    throw new NiftiHeaderInvalidError({ path, field: "dim[0]", actual: String(nDims), expected: "2 to 7" })
  }
  const extra = dim.slice(4, nDims + 1).reduce((a, b) => a * Math.max(b, 1), 1)
  if (extra !== 1) {
    throw new NiftiHeaderInvalidError({
      path,
      field: "dim",
      actual: dim.slice(1, nDims + 1).join(" x "),
      expected: "a 2D or 3D image (time points and other dimensions of size 1); split 4D files into volumes"
    })
  }
  const sizes = [dim[1], dim[2], nDims >= 3 ? dim[3] : 1]
  if (!sizes.every((size) => Number.isInteger(size) && size > 0)) {
    throw new NiftiHeaderInvalidError({ path, field: "dim", actual: sizes.join(" x "), expected: "positive sizes" })
  }

  const storedDtype = dtypeOfCode(header.datatypeCode)
  if (storedDtype === undefined) {
    throw new UnsupportedElementTypeError({ path, actual: `NIfTI datatype ${header.datatypeCode}`, supported: supportedCodes() })
  }
  if (header.numBitsPerVoxel !== bytesPerVoxel(storedDtype) * 8) {
    throw new NiftiHeaderInvalidError({
      path,
      field: "bitpix",
      actual: String(header.numBitsPerVoxel),
      expected: `${bytesPerVoxel(storedDtype) * 8} for datatype ${header.datatypeCode} (${storedDtype})`
    })
  }

  const toMm = unitToMm(header.xyzt_units)
  const pixdim = header.pixDims
  const spacing = [1, 2, 3].map((axis) => {
    const value = Math.abs(pixdim[axis] ?? 0)
    // A zero or missing pixdim of a 2D file's third axis means "no spacing"; use 1 mm.
    return value > 0 && Number.isFinite(value) ? value * toMm : 1
  })

  const slope = header.scl_slope
  const inter = header.scl_inter
  return {
    path,
    version,
    dims: [sizes[0], sizes[1], sizes[2]],
    spacingMm: [spacing[0], spacing[1], spacing[2]],
    storedDtype,
    dtype: hasScaling(slope, inter) ? "float32" : storedDtype,
    littleEndian: header.littleEndian,
    sclSlope: slope,
    sclInter: Number.isFinite(inter) ? inter : 0,
    voxOffset: header.vox_offset
  }
}

const decompress = async (path: string, bytes: Buffer): Promise<Buffer> => {
  if (!isGzipMagic(bytes)) throw new NotGzipError({ path, actualMagic: hexPrefix(bytes) })
  try {
    return await gunzipAsync(bytes)
  } catch (cause) {
    throw new DecompressionFailedError({ path, reason: (cause as Error).message })
  }
}

/** Reads the first `count` decompressed bytes of a gzip file without inflating all of it. */
const readGzipPrefix = (path: string, count: number): Promise<Buffer> =>
  new Promise((resolvePrefix, reject) => {
    const chunks: Buffer[] = []
    let total = 0
    const input = createReadStream(path)
    const inflater = createGunzip()
    const finish = (): void => {
      input.destroy()
      inflater.destroy()
      resolvePrefix(Buffer.concat(chunks))
    }
    input.on("error", reject)
    inflater.on("error", (cause) => reject(new DecompressionFailedError({ path, reason: cause.message })))
    inflater.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      total += chunk.length
      if (total >= count) finish()
    })
    inflater.on("end", finish)
    input.pipe(inflater)
  })

/** Reads a NIfTI header (decompressing only its start for `.nii.gz`) without the voxel data. */
export const readNiftiInfo = async (path: string): Promise<NiftiInfo> => {
  const gzipped = checkExtension(path)
  let handle
  try {
    handle = await open(path, "r")
  } catch (cause) {
    const code = (cause as { code?: string }).code
    if (code === "ENOENT" || code === "ENOTDIR") throw new VolumeFileNotFoundError({ path, cause })
    throw cause
  }
  const start = Buffer.alloc(1024)
  let bytesRead: number
  try {
    bytesRead = (await handle.read(start, 0, start.length, 0)).bytesRead
  } finally {
    await handle.close()
  }
  const prefix = start.subarray(0, bytesRead)
  if (!gzipped) return interpretHeader(path, toArrayBuffer(prefix))
  if (!isGzipMagic(prefix)) throw new NotGzipError({ path, actualMagic: hexPrefix(prefix) })
  return interpretHeader(path, toArrayBuffer(await readGzipPrefix(path, 1024)))
}

/** Applies value = stored * slope + inter, in float32. */
const applyScaling = (stored: ArrayLike<number>, slope: number, inter: number): Float32Array => {
  const scaled = new Float32Array(stored.length)
  for (let i = 0; i < stored.length; i++) scaled[i] = stored[i] * slope + inter
  return scaled
}

/**
 * Reads a NIfTI-1 or NIfTI-2 file (`.nii` or `.nii.gz`) into a volume. A `.gz` file that is
 * not gzip raises `NotGzipError`. Data is float32 when `scl_slope` is non-zero and the
 * scaling is not the identity (slope 1, intercept 0); otherwise it keeps the stored type.
 */
export const readNifti = async (path: string): Promise<Volume> => {
  const gzipped = checkExtension(path)
  const fileBytes = await readBytes(path)
  const bytes = gzipped ? await decompress(path, fileBytes) : fileBytes
  const buffer = toArrayBuffer(bytes)
  const info = interpretHeader(path, buffer)

  const voxels = info.dims[0] * info.dims[1] * info.dims[2]
  const elementBytes = bytesPerVoxel(info.storedDtype)
  const expectedBytes = voxels * elementBytes
  const available = bytes.length - info.voxOffset
  const detail = `${voxels} voxels of ${info.storedDtype} after vox_offset ${info.voxOffset}`
  if (available < expectedBytes) {
    throw new VolumeTruncatedError({ path, expectedBytes, actualBytes: Math.max(available, 0), detail })
  }
  if (available > expectedBytes) {
    throw new VolumeOversizedError({ path, expectedBytes, actualBytes: available, detail })
  }

  const stored = allocate(info.storedDtype, voxels)
  const target = new Uint8Array(stored.buffer)
  target.set(bytes.subarray(info.voxOffset, info.voxOffset + expectedBytes))
  if (info.littleEndian !== (endianness() === "LE")) swapBytes(target, elementBytes)

  const data = hasScaling(info.sclSlope, info.sclInter) ? applyScaling(stored, info.sclSlope, info.sclInter) : stored
  return { dims: info.dims, spacingMm: info.spacingMm, dtype: info.dtype, data }
}

// ---------------------------------------------------------------------------------------
// Writer

export interface NiftiWriteOptions {
  /** NIfTI format version; default 1. */
  readonly version?: 1 | 2
  /** Text for the `descrip` field, at most 79 ASCII characters. */
  readonly description?: string
}

const NIFTI_UNITS_MM = 2
const NIFTI_XFORM_SCANNER_ANAT = 1

const writeAscii = (view: DataView, offset: number, text: string, maxBytes: number): void => {
  for (let i = 0; i < Math.min(text.length, maxBytes - 1); i++) view.setUint8(offset + i, text.charCodeAt(i) & 0x7f)
}

/** Encodes a little-endian NIfTI-1 header plus the 4-byte empty extension flag (352 bytes). */
const encodeNifti1Header = (volume: Volume, description: string): Uint8Array => {
  const bytes = new Uint8Array(352)
  const view = new DataView(bytes.buffer)
  const [width, height, depth] = volume.dims
  const [sx, sy, sz] = volume.spacingMm
  view.setInt32(0, 348, true)
  view.setUint8(38, "r".charCodeAt(0))
  const dims = [3, width, height, depth, 1, 1, 1, 1]
  dims.forEach((value, i) => view.setInt16(40 + 2 * i, value, true))
  view.setInt16(70, niftiDatatypeCodes[volume.dtype], true)
  view.setInt16(72, bytesPerVoxel(volume.dtype) * 8, true)
  const pixdim = [1, sx, sy, sz, 0, 0, 0, 0]
  pixdim.forEach((value, i) => view.setFloat32(76 + 4 * i, value, true))
  view.setFloat32(108, 352, true)
  view.setFloat32(112, 0, true)
  view.setUint8(123, NIFTI_UNITS_MM)
  writeAscii(view, 148, description, 80)
  view.setInt16(252, NIFTI_XFORM_SCANNER_ANAT, true)
  view.setInt16(254, NIFTI_XFORM_SCANNER_ANAT, true)
  // Quaternion b = c = d = 0 and zero offsets: identity rotation, so qform is diag(pixdim).
  const rows = [
    [sx, 0, 0, 0],
    [0, sy, 0, 0],
    [0, 0, sz, 0]
  ]
  rows.forEach((row, r) => row.forEach((value, c) => view.setFloat32(280 + 16 * r + 4 * c, value, true)))
  writeAscii(view, 344, "n+1", 4)
  return bytes
}

/** Encodes a little-endian NIfTI-2 header plus the 4-byte empty extension flag (544 bytes). */
const encodeNifti2Header = (volume: Volume, description: string): Uint8Array => {
  const bytes = new Uint8Array(544)
  const view = new DataView(bytes.buffer)
  const [width, height, depth] = volume.dims
  const [sx, sy, sz] = volume.spacingMm
  view.setInt32(0, 540, true)
  const magic = [0x6e, 0x2b, 0x32, 0x00, 0x0d, 0x0a, 0x1a, 0x0a]
  magic.forEach((value, i) => view.setUint8(4 + i, value))
  view.setInt16(12, niftiDatatypeCodes[volume.dtype], true)
  view.setInt16(14, bytesPerVoxel(volume.dtype) * 8, true)
  const dims = [3, width, height, depth, 1, 1, 1, 1]
  dims.forEach((value, i) => view.setBigInt64(16 + 8 * i, BigInt(value), true))
  const pixdim = [1, sx, sy, sz, 0, 0, 0, 0]
  pixdim.forEach((value, i) => view.setFloat64(104 + 8 * i, value, true))
  view.setBigInt64(168, 544n, true)
  writeAscii(view, 240, description, 80)
  view.setInt32(344, NIFTI_XFORM_SCANNER_ANAT, true)
  view.setInt32(348, NIFTI_XFORM_SCANNER_ANAT, true)
  const rows = [
    [sx, 0, 0, 0],
    [0, sy, 0, 0],
    [0, 0, sz, 0]
  ]
  rows.forEach((row, r) => row.forEach((value, c) => view.setFloat64(400 + 32 * r + 8 * c, value, true)))
  view.setInt32(500, NIFTI_UNITS_MM, true)
  return bytes
}

/**
 * Writes `volume` as NIfTI (`.nii`, or gzip-compressed `.nii.gz`), little-endian, with
 * pixdim = spacing in mm and qform = sform = diag(spacing). Removes the file if the write fails.
 */
export const writeNifti = async (path: string, volume: Volume, options: NiftiWriteOptions = {}): Promise<void> => {
  const gzipped = checkExtension(path)
  const voxels = volume.dims[0] * volume.dims[1] * volume.dims[2]
  if (volume.data.length !== voxels) {
    throw new RangeError(`${path}: volume has ${volume.data.length} voxels but dims ${volume.dims.join(" x ")} need ${voxels}`)
  }
  const description = options.description ?? "octflow"
  const header = options.version === 2 ? encodeNifti2Header(volume, description) : encodeNifti1Header(volume, description)
  let data = new Uint8Array(volume.data.buffer, volume.data.byteOffset, volume.data.byteLength)
  if (endianness() !== "LE") {
    data = new Uint8Array(data)
    swapBytes(data, bytesPerVoxel(volume.dtype))
  }
  const joined = Buffer.concat([header, data])
  const output = gzipped ? await gzipAsync(joined) : joined
  try {
    await writeFile(path, output)
  } catch (cause) {
    await rm(path, { force: true })
    throw cause
  }
}
