/**
 * MetaImage (ITK `.mhd` + data file, or single-file `.mha`) reader and writer.
 *
 * The reader accepts what RETOUCH and ITK write: `ElementDataFile` as a file name relative
 * to the header or absolute, `LOCAL` (data after the header), `LIST` (one file per slice) and
 * the `name%03d.raw first last step` pattern form; big-endian data
 * (`BinaryDataByteOrderMSB` or its alias `ElementByteOrderMSB`); zlib compression
 * (`CompressedData`, optional `CompressedDataSize`); `HeaderSize` (bytes to skip before the
 * data, -1 = the data sits at the end of the file); CRLF line endings; 2D images, read as
 * one slice. Voxel order is the file's: x fastest, then y, then z, as in `Volume`.
 *
 * The writer writes little-endian `.mha` (LOCAL) or `.mhd` + `.raw`/`.zraw`, with the key
 * order ITK writes, so ITK-SNAP and 3D Slicer open the files.
 */
import { open, readFile, rm, writeFile } from "node:fs/promises"
import { endianness } from "node:os"
import { basename, dirname, extname, isAbsolute, join, resolve } from "node:path"
import { promisify } from "node:util"
import { deflate, unzip } from "node:zlib"
import {
  DecompressionFailedError,
  HeaderKeyMissingError,
  HeaderValueInvalidError,
  UnsupportedElementTypeError,
  UnsupportedFormatError,
  VolumeFileNotFoundError,
  VolumeOversizedError,
  VolumeTruncatedError
} from "./errors.ts"
import { allocate, bytesPerVoxel, type DType, type Volume } from "./volume.ts"

const unzipAsync = promisify(unzip)
const deflateAsync = promisify(deflate)

/** MetaImage element type names and the voxel types they map to. */
export const metElementTypes: Readonly<Record<string, DType>> = {
  MET_UCHAR: "uint8",
  MET_CHAR: "int8",
  MET_USHORT: "uint16",
  MET_SHORT: "int16",
  MET_UINT: "uint32",
  MET_INT: "int32",
  MET_FLOAT: "float32",
  MET_DOUBLE: "float64"
}

const metTypeOf = (dtype: DType): string => {
  const entry = Object.entries(metElementTypes).find(([, value]) => value === dtype)
  if (entry === undefined) throw new TypeError(`no MetaImage element type for ${dtype}`)
  return entry[0]
}

/** Location of the voxel bytes of a MetaImage. */
export type MetaDataSource =
  | { readonly kind: "local"; readonly offset: number }
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "list"; readonly paths: readonly string[]; readonly sliceDims: number }

/** The parsed header of a MetaImage file. */
export interface MetaImageHeader {
  readonly path: string
  /** Every header key as written, with its raw value. */
  readonly fields: ReadonlyMap<string, string>
  readonly nDims: 2 | 3
  /** Sizes in voxels, x, y, z; z is 1 for a 2D image. */
  readonly dims: readonly [number, number, number]
  /** Millimetres per voxel along x, y, z; z is 1 for a 2D image. */
  readonly spacingMm: readonly [number, number, number]
  readonly dtype: DType
  readonly msb: boolean
  readonly compressed: boolean
  readonly compressedDataSize: number | undefined
  /** Bytes to skip before the data; -1 means the data is the last bytes of the file. */
  readonly headerSize: number
  readonly source: MetaDataSource
  /** The header file and every data file, in reading order. */
  readonly files: readonly string[]
}

// ---------------------------------------------------------------------------------------
// Header parsing

interface RawHeader {
  readonly fields: Map<string, string>
  /** Byte offset just after the ElementDataFile line. */
  readonly dataOffset: number
  /** Lines after ElementDataFile, needed for the LIST form. */
  readonly trailingLines: readonly string[]
}

const findHeaderEnd = (bytes: Uint8Array): number | undefined => {
  // The header ends with the line whose key is ElementDataFile. Scan line by line.
  let lineStart = 0
  while (lineStart < bytes.length) {
    let lineEnd = bytes.indexOf(0x0a, lineStart)
    const complete = lineEnd >= 0
    if (!complete) lineEnd = bytes.length
    const line = Buffer.from(bytes.buffer, bytes.byteOffset + lineStart, lineEnd - lineStart).toString("latin1")
    const key = line.split("=", 1)[0].trim()
    if (key.toLowerCase() === "elementdatafile") return complete ? lineEnd + 1 : undefined
    if (!complete) return undefined
    lineStart = lineEnd + 1
  }
  return undefined
}

const parseRawHeader = (bytes: Uint8Array, path: string): RawHeader => {
  const end = findHeaderEnd(bytes) ?? bytes.length
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, end).toString("latin1")
  const fields = new Map<string, string>()
  for (const rawLine of text.split("\n")) {
    const line = rawLine.replace(/\r$/, "")
    if (line.trim() === "") continue
    const equals = line.indexOf("=")
    if (equals < 0) {
      throw new HeaderValueInvalidError({ path, key: "(line)", actual: line, expected: "a line of the form Key = Value" })
    }
    fields.set(line.slice(0, equals).trim(), line.slice(equals + 1).trim())
  }
  const rest = Buffer.from(bytes.buffer, bytes.byteOffset + end, bytes.length - end).toString("latin1")
  const trailingLines = rest
    .split("\n")
    .map((line) => line.replace(/\r$/, "").trim())
    .filter((line) => line !== "")
  return { fields, dataOffset: end, trailingLines }
}

/** Looks a key up case-insensitively; MetaIO spells keys in CamelCase but some writers do not. */
const getField = (fields: ReadonlyMap<string, string>, ...keys: string[]): string | undefined => {
  for (const key of keys) {
    const direct = fields.get(key)
    if (direct !== undefined) return direct
    for (const [name, value] of fields) {
      if (name.toLowerCase() === key.toLowerCase()) return value
    }
  }
  return undefined
}

const parseBoolean = (path: string, key: string, value: string | undefined, fallback: boolean): boolean => {
  if (value === undefined) return fallback
  const lower = value.toLowerCase()
  if (lower === "true" || lower === "1") return true
  if (lower === "false" || lower === "0") return false
  throw new HeaderValueInvalidError({ path, key, actual: value, expected: "True or False" })
}

const parseNumbers = (path: string, key: string, value: string, count: number, integer: boolean): number[] => {
  const parts = value.split(/\s+/).filter((part) => part !== "")
  const numbers = parts.map(Number)
  const valid =
    parts.length === count &&
    numbers.every((n) => Number.isFinite(n) && (!integer || (Number.isInteger(n) && n > 0)))
  if (!valid) {
    const kind = integer ? "positive integers" : "numbers"
    throw new HeaderValueInvalidError({ path, key, actual: value, expected: `${count} ${kind} separated by spaces` })
  }
  return numbers
}

const resolveDataPath = (headerPath: string, name: string): string =>
  isAbsolute(name) ? name : resolve(dirname(headerPath), name)

/** Expands `slice%03d.raw 1 61 1` (C format, first, last, step) into file names. */
const expandPattern = (path: string, value: string): string[] | undefined => {
  const match = /^(\S*%0?\d*d\S*)\s+(-?\d+)\s+(-?\d+)(?:\s+(-?\d+))?$/.exec(value)
  if (match === null) return undefined
  const [, pattern, firstText, lastText, stepText] = match
  const first = Number(firstText)
  const last = Number(lastText)
  const step = stepText === undefined ? 1 : Number(stepText)
  if (step === 0 || Math.sign(last - first) * Math.sign(step) < 0) {
    throw new HeaderValueInvalidError({
      path,
      key: "ElementDataFile",
      actual: value,
      expected: "pattern first last step with a step that goes from first to last"
    })
  }
  const names: string[] = []
  for (let index = first; step > 0 ? index <= last : index >= last; index += step) {
    names.push(
      pattern.replace(/%(0?)(\d*)d/, (_, zero: string, width: string) =>
        String(index).padStart(width === "" ? 0 : Number(width), zero === "0" ? "0" : " ")
      )
    )
  }
  return names
}

const parseDataSource = (
  path: string,
  raw: RawHeader,
  nDims: number,
  dims: readonly number[]
): MetaDataSource => {
  const value = getField(raw.fields, "ElementDataFile")
  if (value === undefined) throw new HeaderKeyMissingError({ path, key: "ElementDataFile", expected: "LOCAL" })
  if (value.toUpperCase() === "LOCAL") return { kind: "local", offset: raw.dataOffset }

  const listMatch = /^LIST(?:\s+(\d)D?)?$/i.exec(value)
  if (listMatch !== null) {
    const sliceDims = listMatch[1] === undefined ? nDims - 1 : Number(listMatch[1])
    if (sliceDims < 1 || sliceDims >= nDims) {
      throw new HeaderValueInvalidError({
        path,
        key: "ElementDataFile",
        actual: value,
        expected: `LIST or LIST ${nDims - 1}D (each file contains one slice)`
      })
    }
    const fileCount = dims.slice(sliceDims).reduce((a, b) => a * b, 1)
    const names = raw.trailingLines.slice(0, fileCount)
    if (names.length !== fileCount) {
      throw new HeaderValueInvalidError({
        path,
        key: "ElementDataFile",
        actual: `LIST with ${names.length} file names`,
        expected: `${fileCount} file names after the LIST line, one per line`
      })
    }
    return { kind: "list", paths: names.map((name) => resolveDataPath(path, name)), sliceDims }
  }

  const patternNames = expandPattern(path, value)
  if (patternNames !== undefined) {
    const fileCount = dims[nDims - 1]
    if (patternNames.length !== fileCount) {
      throw new HeaderValueInvalidError({
        path,
        key: "ElementDataFile",
        actual: `${value} (${patternNames.length} files)`,
        expected: `a pattern that names ${fileCount} files, one per slice`
      })
    }
    return { kind: "list", paths: patternNames.map((name) => resolveDataPath(path, name)), sliceDims: nDims - 1 }
  }

  return { kind: "file", path: resolveDataPath(path, value) }
}

const parseHeaderFields = (path: string, raw: RawHeader): MetaImageHeader => {
  const { fields } = raw
  const objectType = getField(fields, "ObjectType")
  if (objectType !== undefined && objectType.toLowerCase() !== "image") {
    throw new HeaderValueInvalidError({ path, key: "ObjectType", actual: objectType, expected: "Image" })
  }

  const nDimsText = getField(fields, "NDims")
  if (nDimsText === undefined) throw new HeaderKeyMissingError({ path, key: "NDims", expected: "3" })
  const nDims = Number(nDimsText)
  if (nDims !== 2 && nDims !== 3) {
    throw new HeaderValueInvalidError({ path, key: "NDims", actual: nDimsText, expected: "2 or 3" })
  }

  const dimText = getField(fields, "DimSize")
  if (dimText === undefined) throw new HeaderKeyMissingError({ path, key: "DimSize", expected: "512 496 49" })
  const dimList = parseNumbers(path, "DimSize", dimText, nDims, true)

  const spacingText = getField(fields, "ElementSpacing", "ElementSize")
  const spacingList = spacingText === undefined ? dimList.map(() => 1) : parseNumbers(path, "ElementSpacing", spacingText, nDims, false)
  if (spacingList.some((s) => s <= 0)) {
    throw new HeaderValueInvalidError({ path, key: "ElementSpacing", actual: spacingText ?? "", expected: "positive spacings in mm" })
  }

  const typeText = getField(fields, "ElementType")
  if (typeText === undefined) throw new HeaderKeyMissingError({ path, key: "ElementType", expected: "MET_UCHAR" })
  const dtype = metElementTypes[typeText.toUpperCase()]
  if (dtype === undefined) {
    throw new UnsupportedElementTypeError({ path, actual: typeText, supported: Object.keys(metElementTypes) })
  }

  const channels = getField(fields, "ElementNumberOfChannels")
  if (channels !== undefined && Number(channels) !== 1) {
    throw new HeaderValueInvalidError({
      path,
      key: "ElementNumberOfChannels",
      actual: channels,
      expected: "1 (multi-channel images are not supported; extract one channel)"
    })
  }

  if (!parseBoolean(path, "BinaryData", getField(fields, "BinaryData"), true)) {
    throw new HeaderValueInvalidError({ path, key: "BinaryData", actual: "False", expected: "True (ASCII data is not supported)" })
  }
  const msb = parseBoolean(
    path,
    "BinaryDataByteOrderMSB",
    getField(fields, "BinaryDataByteOrderMSB", "ElementByteOrderMSB"),
    false
  )
  const compressed = parseBoolean(path, "CompressedData", getField(fields, "CompressedData"), false)

  const compressedSizeText = getField(fields, "CompressedDataSize")
  const compressedDataSize = compressedSizeText === undefined ? undefined : Number(compressedSizeText)
  if (compressedDataSize !== undefined && !(Number.isInteger(compressedDataSize) && compressedDataSize > 0)) {
    throw new HeaderValueInvalidError({ path, key: "CompressedDataSize", actual: compressedSizeText ?? "", expected: "a positive byte count" })
  }

  const headerSizeText = getField(fields, "HeaderSize")
  const headerSize = headerSizeText === undefined ? 0 : Number(headerSizeText)
  if (!Number.isInteger(headerSize) || headerSize < -1) {
    throw new HeaderValueInvalidError({ path, key: "HeaderSize", actual: headerSizeText ?? "", expected: "a byte count, or -1 for data at the end of the file" })
  }
  if (compressed && headerSize === -1 && compressedDataSize === undefined) {
    throw new HeaderKeyMissingError({ path, key: "CompressedDataSize", expected: "<compressed bytes> (HeaderSize = -1 with compressed data needs it)" })
  }

  const source = parseDataSource(path, raw, nDims, dimList)
  const dims: [number, number, number] = [dimList[0], dimList[1], nDims === 3 ? dimList[2] : 1]
  const spacingMm: [number, number, number] = [spacingList[0], spacingList[1], nDims === 3 ? spacingList[2] : 1]
  let dataFiles: readonly string[] = []
  if (source.kind === "file") dataFiles = [source.path]
  if (source.kind === "list") dataFiles = source.paths

  return {
    path,
    fields,
    nDims,
    dims,
    spacingMm,
    dtype,
    msb,
    compressed,
    compressedDataSize,
    headerSize,
    source,
    files: [path, ...dataFiles]
  }
}

const notFound = (path: string, referencedBy: string | undefined, cause: unknown): never => {
  const code = (cause as { code?: string } | undefined)?.code
  if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") {
    throw new VolumeFileNotFoundError({ path, referencedBy, cause })
  }
  throw cause
}

const readWhole = async (path: string, referencedBy?: string): Promise<Buffer> => {
  try {
    return await readFile(path)
  } catch (cause) {
    return notFound(path, referencedBy, cause)
  }
}

/** Reads the header bytes of a MetaImage; for `.mha` stops at the end of the header. */
const readHeaderBytes = async (path: string): Promise<Buffer> => {
  if (extname(path).toLowerCase() !== ".mha") return readWhole(path)
  let handle
  try {
    handle = await open(path, "r")
  } catch (cause) {
    return notFound(path, undefined, cause)
  }
  try {
    const chunks: Buffer[] = []
    let total = 0
    for (;;) {
      const chunk = Buffer.alloc(64 * 1024)
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, total)
      if (bytesRead === 0) break
      chunks.push(chunk.subarray(0, bytesRead))
      total += bytesRead
      const joined = Buffer.concat(chunks)
      const end = findHeaderEnd(joined)
      // A LIST header in a .mha is followed by file names, not data, so keep reading.
      if (end !== undefined && !/ElementDataFile\s*=\s*LIST/i.test(joined.subarray(0, end).toString("latin1"))) {
        return joined.subarray(0, end)
      }
    }
    return Buffer.concat(chunks)
  } finally {
    await handle.close()
  }
}

/** Reads and validates a MetaImage header without reading the voxel data. */
export const readMetaImageHeader = async (path: string): Promise<MetaImageHeader> => {
  const bytes = await readHeaderBytes(path)
  return parseHeaderFields(path, parseRawHeader(bytes, path))
}

// ---------------------------------------------------------------------------------------
// Voxel data

const sizeDetail = (header: MetaImageHeader, voxels: number): string =>
  `${voxels} voxels of ${metTypeOf(header.dtype)}, ${bytesPerVoxel(header.dtype)} bytes each`

/** Cuts the compressed data bytes out of a file's bytes, honouring HeaderSize and CompressedDataSize. */
const sliceCompressedBytes = (file: string, header: MetaImageHeader, bytes: Buffer, start: number): Buffer => {
  const available = bytes.length - start
  const size = header.compressedDataSize ?? available - Math.max(header.headerSize, 0)
  const offset = header.headerSize === -1 ? bytes.length - size : start + header.headerSize
  if (offset < start || offset + size > bytes.length) {
    throw new VolumeTruncatedError({
      path: file,
      expectedBytes: size,
      actualBytes: Math.max(available, 0),
      detail: "compressed data of CompressedDataSize bytes"
    })
  }
  return bytes.subarray(offset, offset + size)
}

/**
 * Returns the offset of uncompressed data in a file of `fileSize` bytes whose data region
 * starts at `start`, honouring HeaderSize, and checks that exactly `expectedBytes` remain.
 */
const locateRawData = (
  file: string,
  header: MetaImageHeader,
  fileSize: number,
  start: number,
  expectedBytes: number,
  voxels: number
): number => {
  const detail = sizeDetail(header, voxels)
  const offset = header.headerSize === -1 ? fileSize - expectedBytes : start + header.headerSize
  const available = fileSize - Math.max(offset, start)
  if (offset < start || available < expectedBytes) {
    throw new VolumeTruncatedError({ path: file, expectedBytes, actualBytes: fileSize - start - Math.max(header.headerSize, 0), detail })
  }
  if (available > expectedBytes) {
    throw new VolumeOversizedError({ path: file, expectedBytes, actualBytes: available, detail })
  }
  return offset
}

/** Reads uncompressed voxel bytes straight into `target`, without a whole-file buffer. */
const readRawInto = async (
  file: string,
  referencedBy: string | undefined,
  header: MetaImageHeader,
  start: number,
  voxels: number,
  target: Uint8Array
): Promise<void> => {
  let handle
  try {
    handle = await open(file, "r")
  } catch (cause) {
    return notFound(file, referencedBy, cause)
  }
  try {
    const expectedBytes = voxels * bytesPerVoxel(header.dtype)
    const { size } = await handle.stat()
    const offset = locateRawData(file, header, size, start, expectedBytes, voxels)
    let done = 0
    while (done < expectedBytes) {
      const { bytesRead } = await handle.read(target, done, expectedBytes - done, offset + done)
      if (bytesRead === 0) {
        throw new VolumeTruncatedError({ path: file, expectedBytes, actualBytes: done, detail: "file shrank while reading" })
      }
      done += bytesRead
    }
  } finally {
    await handle.close()
  }
}

const inflate = async (file: string, compressed: Buffer, expectedBytes: number, detail: string): Promise<Buffer> => {
  let inflated: Buffer
  try {
    inflated = await unzipAsync(compressed)
  } catch (cause) {
    throw new DecompressionFailedError({ path: file, reason: (cause as Error).message })
  }
  if (inflated.length < expectedBytes) {
    throw new VolumeTruncatedError({ path: file, expectedBytes, actualBytes: inflated.length, detail: `${detail}, after decompression` })
  }
  if (inflated.length > expectedBytes) {
    throw new VolumeOversizedError({ path: file, expectedBytes, actualBytes: inflated.length, detail: `${detail}, after decompression` })
  }
  return inflated
}

/** Inflates the compressed data of one part and checks that it contains `voxels` voxels. */
const readCompressedPart = async (
  file: string,
  header: MetaImageHeader,
  bytes: Buffer,
  start: number,
  voxels: number
): Promise<Buffer> => {
  const expectedBytes = voxels * bytesPerVoxel(header.dtype)
  const compressed = sliceCompressedBytes(file, header, bytes, start)
  return inflate(file, compressed, expectedBytes, sizeDetail(header, voxels))
}

/** Swaps the bytes of every element in place, for 2-, 4- and 8-byte elements. */
export const swapBytes = (bytes: Uint8Array, elementBytes: number): void => {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (elementBytes === 2) buffer.swap16()
  else if (elementBytes === 4) buffer.swap32()
  else if (elementBytes === 8) buffer.swap64()
}

const hostIsLittleEndian = endianness() === "LE"

/** Reads a MetaImage (`.mhd` or `.mha`) into a volume; 2D images become one slice. */
export const readMetaImage = async (path: string): Promise<Volume> => {
  const ext = extname(path).toLowerCase()
  if (ext !== ".mhd" && ext !== ".mha") {
    throw new UnsupportedFormatError({ path, supported: [".mhd", ".mha"] })
  }
  const headerBytes = await readHeaderBytes(path)
  const header = parseHeaderFields(path, parseRawHeader(headerBytes, path))
  const [width, height, depth] = header.dims
  const voxels = width * height * depth
  const elementBytes = bytesPerVoxel(header.dtype)
  const data = allocate(header.dtype, voxels)
  const target = new Uint8Array(data.buffer)
  const source = header.source

  // Each part is a data file (or the .mha itself) with the voxels it contributes.
  const parts: { file: string; referencedBy: string | undefined; start: number; voxels: number }[] = []
  if (source.kind === "local") parts.push({ file: path, referencedBy: undefined, start: source.offset, voxels })
  if (source.kind === "file") parts.push({ file: source.path, referencedBy: path, start: 0, voxels })
  if (source.kind === "list") {
    const voxelsPerFile = [width, height, depth].slice(0, source.sliceDims).reduce((a, b) => a * b, 1)
    for (const file of source.paths) parts.push({ file, referencedBy: path, start: 0, voxels: voxelsPerFile })
  }

  let targetOffset = 0
  for (const part of parts) {
    const partBytes = part.voxels * elementBytes
    const slot = target.subarray(targetOffset, targetOffset + partBytes)
    if (header.compressed) {
      const bytes = part.file === path && ext === ".mhd" ? headerBytes : await readWhole(part.file, part.referencedBy)
      slot.set(await readCompressedPart(part.file, header, bytes, part.start, part.voxels))
    } else {
      await readRawInto(part.file, part.referencedBy, header, part.start, part.voxels, slot)
    }
    targetOffset += partBytes
  }

  if (header.msb === hostIsLittleEndian) swapBytes(target, elementBytes)
  return { dims: header.dims, spacingMm: header.spacingMm, dtype: header.dtype, data }
}

// ---------------------------------------------------------------------------------------
// Writer

export interface MetaImageWriteOptions {
  /** Compress the voxel data with zlib (`CompressedData = True`); default false. */
  readonly compress?: boolean
  /** For `.mhd`: the data file name next to the header; default the header name with `.raw` or `.zraw`. */
  readonly dataFileName?: string
}

const formatNumbers = (values: readonly number[]): string => values.map((v) => String(v)).join(" ")

/** Builds the header text in the key order ITK's MetaIO writes. */
export const formatMetaImageHeader = (
  volume: Pick<Volume, "dims" | "spacingMm" | "dtype">,
  dataFile: string,
  compressedDataSize?: number
): string => {
  const lines = [
    "ObjectType = Image",
    "NDims = 3",
    "BinaryData = True",
    "BinaryDataByteOrderMSB = False",
    `CompressedData = ${compressedDataSize === undefined ? "False" : "True"}`
  ]
  if (compressedDataSize !== undefined) lines.push(`CompressedDataSize = ${compressedDataSize}`)
  lines.push(
    "TransformMatrix = 1 0 0 0 1 0 0 0 1",
    "Offset = 0 0 0",
    "CenterOfRotation = 0 0 0",
    "AnatomicalOrientation = RAI",
    `ElementSpacing = ${formatNumbers(volume.spacingMm)}`,
    `DimSize = ${formatNumbers(volume.dims)}`,
    `ElementType = ${metTypeOf(volume.dtype)}`,
    `ElementDataFile = ${dataFile}`
  )
  return lines.join("\n") + "\n"
}

const littleEndianBytes = (volume: Volume): Uint8Array => {
  const bytes = new Uint8Array(volume.data.buffer, volume.data.byteOffset, volume.data.byteLength)
  if (hostIsLittleEndian) return bytes
  const copy = new Uint8Array(bytes)
  swapBytes(copy, bytesPerVoxel(volume.dtype))
  return copy
}

const validateForWrite = (path: string, volume: Volume): void => {
  const expected = volume.dims[0] * volume.dims[1] * volume.dims[2]
  if (volume.data.length !== expected) {
    throw new RangeError(`${path}: volume has ${volume.data.length} voxels but dims ${volume.dims.join(" x ")} need ${expected}`)
  }
  metTypeOf(volume.dtype)
}

/**
 * Writes `volume` as `.mha` (header and data in one file) or `.mhd` + data file, chosen by
 * the extension of `path`. Data is little-endian. On a write error the files written so far
 * are removed.
 */
export const writeMetaImage = async (path: string, volume: Volume, options: MetaImageWriteOptions = {}): Promise<void> => {
  const ext = extname(path).toLowerCase()
  if (ext !== ".mhd" && ext !== ".mha") {
    throw new UnsupportedFormatError({ path, supported: [".mhd", ".mha"] })
  }
  validateForWrite(path, volume)
  const raw = littleEndianBytes(volume)
  const data = options.compress === true ? await deflateAsync(raw) : raw
  const compressedSize = options.compress === true ? data.length : undefined
  const written: string[] = []
  try {
    if (ext === ".mha") {
      const header = Buffer.from(formatMetaImageHeader(volume, "LOCAL", compressedSize), "latin1")
      written.push(path)
      const handle = await open(path, "w")
      try {
        await handle.write(header)
        await handle.write(data)
      } finally {
        await handle.close()
      }
      return
    }
    const dataName = options.dataFileName ?? basename(path, extname(path)) + (options.compress === true ? ".zraw" : ".raw")
    const dataPath = join(dirname(path), dataName)
    written.push(dataPath)
    await writeFile(dataPath, data)
    written.push(path)
    await writeFile(path, formatMetaImageHeader(volume, dataName, compressedSize), "latin1")
  } catch (cause) {
    await Promise.all(written.map((file) => rm(file, { force: true })))
    throw cause
  }
}
