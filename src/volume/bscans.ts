/**
 * Folders of B-scan images (PNG or TIFF, one file per B-scan) with an `octflow.json` sidecar.
 *
 * Image files carry no voxel spacing, vendor or label coding, so the sidecar supplies them.
 * B-scans are stacked in the numeric order of the digits in their names (2 before 10): the
 * k-th file is slice z = k. Each image is 8- or 16-bit gray; an RGB(A) file is read as gray
 * when its channels are equal and rejected otherwise. Masks in the reference folder are
 * matched to images by the last number in their names (image number = mask number +
 * `referenceNumberOffset`). B-scans without a mask are unlabelled (255), not empty.
 */
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises"
import { basename, dirname, extname, join, resolve } from "node:path"
import { PNG } from "pngjs"
import * as UTIF from "utif2"
import {
  EmptyFolderError,
  ImageDecodeError,
  ImageNotGrayError,
  ImageSizeMismatchError,
  LabelValueOutOfSchemeError,
  SidecarInvalidError,
  VolumeFileNotFoundError
} from "./errors.ts"
import { isLabelScheme, type LabelScheme, UNLABELLED } from "./labels.ts"
import type { Volume } from "./volume.ts"

/** Name of the sidecar file in a B-scan case folder. */
export const SIDECAR_NAME = "octflow.json"

/** Coding of label values in mask pixels. */
export type MaskEncoding = "0/1" | "0/255" | "retouch" | "retouch-x85"

const maskEncodings: Readonly<Record<MaskEncoding, { scheme: LabelScheme; values: readonly number[]; divisor: number }>> = {
  "0/1": { scheme: "binary", values: [0, 1], divisor: 1 },
  "0/255": { scheme: "binary", values: [0, 255], divisor: 255 },
  retouch: { scheme: "retouch", values: [0, 1, 2, 3], divisor: 1 },
  "retouch-x85": { scheme: "retouch", values: [0, 85, 170, 255], divisor: 85 }
}

/** The parsed `octflow.json` of a B-scan case. */
export interface BscanSidecar {
  readonly path: string
  readonly vendor: string | undefined
  /** Millimetres per pixel across (x) and along (y) the A-scan, and between B-scans (z). */
  readonly spacingMm: readonly [number, number, number]
  /** Per axis, whether the spacing is an estimate rather than a value from the device. */
  readonly spacingEstimated: readonly [boolean, boolean, boolean]
  /** Folder of B-scan images, absolute. */
  readonly imagesDir: string
  /** Folder of masks, absolute; undefined when the case has no reference. */
  readonly referenceDir: string | undefined
  readonly labelScheme: LabelScheme
  readonly maskEncoding: MaskEncoding
  /** Image number = mask number + this offset (1 when masks are numbered from 0 and images from 1). */
  readonly referenceNumberOffset: number
  /** The whole JSON object, including fields this reader does not interpret. */
  readonly raw: Readonly<Record<string, unknown>>
}

const imageExtensions = new Set([".png", ".tif", ".tiff"])

const naturalOrder = new Intl.Collator("en", { numeric: true, sensitivity: "base" })

/** Sorts file names by the numeric value of their digit runs, so "2" comes before "10". */
export const sortNumerically = (names: readonly string[]): string[] => [...names].sort(naturalOrder.compare)

/** Returns the last run of digits in a file name's stem as a number, or undefined. */
export const fileNumber = (name: string): number | undefined => {
  const stem = basename(name, extname(name))
  const runs = stem.match(/\d+/g)
  return runs === null ? undefined : Number(runs[runs.length - 1])
}

const fsError = (path: string, cause: unknown): never => {
  const code = (cause as { code?: string }).code
  if (code === "ENOENT" || code === "ENOTDIR") throw new VolumeFileNotFoundError({ path, cause })
  throw cause
}

/** Lists the PNG and TIFF files of a folder in numeric order, as absolute paths. */
export const listImageFiles = async (dir: string): Promise<string[]> => {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (cause) {
    return fsError(dir, cause)
  }
  const images = names.filter((name) => imageExtensions.has(extname(name).toLowerCase()) && !name.startsWith("."))
  return sortNumerically(images).map((name) => join(dir, name))
}

// ---------------------------------------------------------------------------------------
// Sidecar

const invalid = (path: string, field: string, actual: unknown, expected: string): never => {
  throw new SidecarInvalidError({ path, field, actual: JSON.stringify(actual) ?? "undefined", expected })
}

const isDirectory = async (path: string): Promise<boolean> => {
  try {
    return (await stat(path)).isDirectory()
  } catch {
    return false
  }
}

/**
 * Reads and validates `octflow.json`. Required: `spacingMm` ([x, y, z] in mm). Optional:
 * `vendor`, `spacingEstimated` ([x, y, z] booleans), `images` (folder, default "oct"),
 * `reference` (folder, default "reference" when it exists), `labelScheme` ("binary" or
 * "retouch", default "binary"), `maskEncoding` (default "0/1" for binary, "retouch" for
 * retouch) and `referenceNumberOffset` (integer, default 0).
 */
export const readBscanSidecar = async (path: string): Promise<BscanSidecar> => {
  let text: string
  try {
    text = await readFile(path, "utf8")
  } catch (cause) {
    return fsError(path, cause)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (cause) {
    return invalid(path, "(file)", (cause as Error).message, "valid JSON")
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return invalid(path, "(file)", raw, "a JSON object")
  const fields = raw as Record<string, unknown>
  const root = dirname(path)

  const spacing = fields.spacingMm
  const spacingValid = Array.isArray(spacing) && spacing.length === 3 && spacing.every((v) => typeof v === "number" && v > 0)
  if (!spacingValid) invalid(path, "spacingMm", spacing, "[x, y, z] spacing in mm, three positive numbers (image files carry no spacing)")
  const spacingMm = spacing as [number, number, number]

  const estimated = fields.spacingEstimated ?? [false, false, false]
  const estimatedValid = Array.isArray(estimated) && estimated.length === 3 && estimated.every((v) => typeof v === "boolean")
  if (!estimatedValid) invalid(path, "spacingEstimated", estimated, "[x, y, z] booleans")

  const vendor = fields.vendor
  if (vendor !== undefined && typeof vendor !== "string") invalid(path, "vendor", vendor, "a vendor name such as Spectralis")

  const images = fields.images ?? "oct"
  if (typeof images !== "string") return invalid(path, "images", images, "a folder name relative to the sidecar")
  const imagesDir = resolve(root, images)

  let referenceDir: string | undefined
  if (fields.reference !== undefined && fields.reference !== null) {
    if (typeof fields.reference !== "string") return invalid(path, "reference", fields.reference, "a folder name relative to the sidecar")
    referenceDir = resolve(root, fields.reference)
  } else if (fields.reference === undefined && (await isDirectory(join(root, "reference")))) {
    referenceDir = join(root, "reference")
  }

  const labelScheme = fields.labelScheme ?? "binary"
  if (!isLabelScheme(labelScheme)) return invalid(path, "labelScheme", labelScheme, '"binary" or "retouch"')

  const maskEncoding = fields.maskEncoding ?? (labelScheme === "binary" ? "0/1" : "retouch")
  if (typeof maskEncoding !== "string" || !(maskEncoding in maskEncodings)) {
    return invalid(path, "maskEncoding", maskEncoding, Object.keys(maskEncodings).map((e) => `"${e}"`).join(", "))
  }
  const encodingScheme = maskEncodings[maskEncoding as MaskEncoding].scheme
  if (encodingScheme !== labelScheme) {
    invalid(path, "maskEncoding", maskEncoding, `an encoding of the ${labelScheme} scheme, or set labelScheme to "${encodingScheme}"`)
  }

  const offset = fields.referenceNumberOffset ?? 0
  if (typeof offset !== "number" || !Number.isInteger(offset)) {
    invalid(path, "referenceNumberOffset", offset, "an integer: image number minus mask number")
  }

  return {
    path,
    vendor: vendor as string | undefined,
    spacingMm,
    spacingEstimated: estimated as [boolean, boolean, boolean],
    imagesDir,
    referenceDir,
    labelScheme,
    maskEncoding: maskEncoding as MaskEncoding,
    referenceNumberOffset: offset as number,
    raw: fields
  }
}

// ---------------------------------------------------------------------------------------
// Image decoding

/** One decoded gray image; `data` is row-major, x fastest. */
export interface GrayImage {
  readonly width: number
  readonly height: number
  readonly bitDepth: 8 | 16
  readonly data: Uint8Array | Uint16Array
}

/** Copies channel 0 of interleaved samples, checking that channels 0..2 are equal when `color`. */
const extractGray = <A extends Uint8Array | Uint16Array>(
  path: string,
  samples: ArrayLike<number>,
  channels: number,
  color: boolean,
  width: number,
  height: number,
  output: A
): A => {
  for (let i = 0; i < width * height; i++) {
    const base = i * channels
    const value = samples[base]
    if (color && (samples[base + 1] !== value || samples[base + 2] !== value)) {
      throw new ImageNotGrayError({
        path,
        x: i % width,
        y: Math.floor(i / width),
        actual: [value, samples[base + 1], samples[base + 2]]
      })
    }
    output[i] = value
  }
  return output
}

const decodePng = (path: string, bytes: Buffer): GrayImage => {
  let png: PNG & { depth?: number; colorType?: number }
  try {
    // skipRescale keeps stored values: 1-bit masks stay 0/1 and 16-bit stays 16-bit.
    png = PNG.sync.read(bytes, { skipRescale: true } as Parameters<typeof PNG.sync.read>[1])
  } catch (cause) {
    throw new ImageDecodeError({ path, reason: (cause as Error).message })
  }
  const depth = png.depth ?? 8
  const colorType = png.colorType ?? 6
  // pngjs always returns RGBA samples; palette images (colour type 3) arrive expanded.
  const color = colorType === 2 || colorType === 3 || colorType === 6
  const { width, height } = png
  const samples = png.data as unknown as ArrayLike<number>
  if (depth === 16) {
    return { width, height, bitDepth: 16, data: extractGray(path, samples, 4, color, width, height, new Uint16Array(width * height)) }
  }
  // NOTE: gray PNGs of 1, 2 or 4 bits keep their stored values (0..1, 0..3, 0..15), which suits masks.
  return { width, height, bitDepth: 8, data: extractGray(path, samples, 4, color, width, height, new Uint8Array(width * height)) }
}

const decodeTiff = (path: string, bytes: Buffer): GrayImage => {
  let ifd: UTIF.IFD
  try {
    const ifds = UTIF.decode(bytes)
    if (ifds.length === 0) throw new Error("no image directory")
    ifd = ifds[0]
    UTIF.decodeImage(bytes, ifd)
  } catch (cause) {
    throw new ImageDecodeError({ path, reason: (cause as Error).message })
  }
  const tag = (name: string, fallback: number): number => {
    const value = ifd[name]
    return Array.isArray(value) && typeof value[0] === "number" ? value[0] : fallback
  }
  const bitsPerSample = tag("t258", 1)
  const samplesPerPixel = tag("t277", 1)
  const photometric = tag("t262", 1)
  const { width, height } = ifd
  if (photometric > 2) {
    throw new ImageDecodeError({ path, reason: `photometric interpretation ${photometric} (only gray or RGB is read)` })
  }
  const color = photometric === 2 || samplesPerPixel >= 3
  if (bitsPerSample !== 8 && bitsPerSample !== 16) {
    throw new ImageDecodeError({ path, reason: `${bitsPerSample} bits per sample (8 or 16 are read)` })
  }
  const raw = ifd.data
  const samples =
    bitsPerSample === 16 ? new Uint16Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + width * height * samplesPerPixel * 2)) : raw
  const output = bitsPerSample === 16 ? new Uint16Array(width * height) : new Uint8Array(width * height)
  const gray = extractGray(path, samples, samplesPerPixel, color, width, height, output)
  if (photometric === 0) {
    // WhiteIsZero: invert so that larger values are brighter, as in every other input.
    const max = bitsPerSample === 16 ? 65535 : 255
    for (let i = 0; i < gray.length; i++) gray[i] = max - gray[i]
  }
  return { width, height, bitDepth: bitsPerSample, data: gray }
}

/** Reads one PNG or TIFF B-scan as a gray image. */
export const readGrayImage = async (path: string): Promise<GrayImage> => {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (cause) {
    return fsError(path, cause)
  }
  const ext = extname(path).toLowerCase()
  return ext === ".png" ? decodePng(path, bytes) : decodeTiff(path, bytes)
}

// ---------------------------------------------------------------------------------------
// Volumes

const describeImage = (image: Pick<GrayImage, "width" | "height" | "bitDepth">): string =>
  `${image.width} x ${image.height} ${image.bitDepth}-bit`

/** Stacks the B-scans of a folder into a uint8 or uint16 volume with the given spacing. */
export const readBscanFolder = async (
  dir: string,
  spacingMm: readonly [number, number, number]
): Promise<Volume<Uint8Array | Uint16Array>> => {
  const files = await listImageFiles(dir)
  if (files.length === 0) throw new EmptyFolderError({ path: dir, expected: "PNG or TIFF B-scan images" })
  const first = await readGrayImage(files[0])
  const sliceSize = first.width * first.height
  const data = first.bitDepth === 16 ? new Uint16Array(sliceSize * files.length) : new Uint8Array(sliceSize * files.length)
  data.set(first.data, 0)
  for (let z = 1; z < files.length; z++) {
    const image = await readGrayImage(files[z])
    if (image.width !== first.width || image.height !== first.height || image.bitDepth !== first.bitDepth) {
      throw new ImageSizeMismatchError({ path: files[z], actual: describeImage(image), expected: describeImage(first), reference: files[0] })
    }
    data.set(image.data, z * sliceSize)
  }
  return {
    dims: [first.width, first.height, files.length],
    spacingMm,
    dtype: first.bitDepth === 16 ? "uint16" : "uint8",
    data
  }
}

/** Mask files of a reference folder, each with the slice z of the image it belongs to. */
export interface MaskAssignment {
  readonly path: string
  readonly z: number
}

/**
 * Matches mask files to image slices: a mask numbered n belongs to the image numbered
 * n + `offset`. Raises `SidecarInvalidError` for a mask with no number or no such image.
 */
export const assignMasks = (
  sidecarPath: string,
  imageFiles: readonly string[],
  maskFiles: readonly string[],
  offset: number
): MaskAssignment[] => {
  const zByNumber = new Map<number, number>()
  imageFiles.forEach((file, z) => {
    const number = fileNumber(file)
    if (number !== undefined) zByNumber.set(number, z)
  })
  return maskFiles.map((path) => {
    const number = fileNumber(path)
    const z = number === undefined ? undefined : zByNumber.get(number + offset)
    if (z === undefined) {
      return invalid(
        sidecarPath,
        "referenceNumberOffset",
        offset,
        `an offset that maps mask ${basename(path)} (number ${number ?? "none"}) to an image number; ` +
          `image numbers run ${fileNumber(imageFiles[0])}..${fileNumber(imageFiles[imageFiles.length - 1])}`
      )
    }
    return { path, z }
  })
}

const decodeMask = (path: string, image: GrayImage, encoding: MaskEncoding): Uint8Array => {
  const { values, divisor, scheme } = maskEncodings[encoding]
  const allowed = new Set(values)
  const counts = new Map<number, number>()
  const slice = new Uint8Array(image.data.length)
  for (let i = 0; i < image.data.length; i++) {
    const value = image.data[i]
    if (!allowed.has(value)) counts.set(value, (counts.get(value) ?? 0) + 1)
    else slice[i] = value / divisor
  }
  if (counts.size > 0) {
    const entries = [...counts.entries()].sort((a, b) => a[0] - b[0])
    throw new LabelValueOutOfSchemeError({
      path,
      scheme: `${scheme} (mask encoding ${encoding})`,
      allowed: values,
      invalid: entries.map(([value, voxels]) => ({ value, voxels })),
      fix: `set maskEncoding in ${SIDECAR_NAME} to the coding the masks use (${Object.keys(maskEncodings).join(", ")})`
    })
  }
  return slice
}

/**
 * Builds the label volume of a B-scan case: every slice starts as `UNLABELLED`, and each mask
 * fills its slice with codes of the sidecar's scheme.
 */
export const readBscanLabels = async (
  sidecar: BscanSidecar,
  imageFiles: readonly string[],
  dims: readonly [number, number, number],
  referenceDir: string
): Promise<Volume<Uint8Array>> => {
  const maskFiles = await listImageFiles(referenceDir)
  const sliceSize = dims[0] * dims[1]
  const data = new Uint8Array(sliceSize * dims[2]).fill(UNLABELLED)
  for (const { path, z } of assignMasks(sidecar.path, imageFiles, maskFiles, sidecar.referenceNumberOffset)) {
    const image = await readGrayImage(path)
    if (image.width !== dims[0] || image.height !== dims[1]) {
      throw new ImageSizeMismatchError({
        path,
        actual: `${image.width} x ${image.height}`,
        expected: `${dims[0]} x ${dims[1]}`,
        reference: imageFiles[z]
      })
    }
    data.set(decodeMask(path, image, sidecar.maskEncoding), z * sliceSize)
  }
  return { dims, spacingMm: sidecar.spacingMm, dtype: "uint8", data }
}

/** The files of a B-scan case whose bytes decide its content. */
export interface BscanCaseFiles {
  readonly sidecar: BscanSidecar
  readonly imageFiles: readonly string[]
  readonly maskFiles: readonly string[]
}

/** Lists the sidecar's image and mask files without decoding them. */
export const listBscanCase = async (sidecarPath: string, referenceDir?: string): Promise<BscanCaseFiles> => {
  const sidecar = await readBscanSidecar(sidecarPath)
  const imageFiles = await listImageFiles(sidecar.imagesDir)
  if (imageFiles.length === 0) throw new EmptyFolderError({ path: sidecar.imagesDir, expected: "PNG or TIFF B-scan images" })
  const masks = referenceDir ?? sidecar.referenceDir
  const maskFiles = masks === undefined ? [] : await listImageFiles(masks)
  return { sidecar, imageFiles, maskFiles }
}

/**
 * Reads a B-scan case from its sidecar: the OCT volume and, when the case has a reference
 * folder (or `referenceDir` names another, e.g. a second grader's masks), the label volume.
 */
export const readBscanCase = async (
  sidecarPath: string,
  referenceDir?: string
): Promise<{ oct: Volume<Uint8Array | Uint16Array>; labels?: Volume<Uint8Array>; sidecar: BscanSidecar }> => {
  const sidecar = await readBscanSidecar(sidecarPath)
  const oct = await readBscanFolder(sidecar.imagesDir, sidecar.spacingMm)
  const masks = referenceDir ?? sidecar.referenceDir
  if (masks === undefined) return { oct, sidecar }
  const imageFiles = await listImageFiles(sidecar.imagesDir)
  const labels = await readBscanLabels(sidecar, imageFiles, oct.dims, masks)
  return { oct, labels, sidecar }
}

// ---------------------------------------------------------------------------------------
// Writer

const encodeGrayPng = (width: number, height: number, pixels: Uint8Array | Uint16Array): Buffer => {
  const bitDepth = pixels instanceof Uint16Array ? 16 : 8
  const png = new PNG({ width, height, colorType: 0, inputColorType: 0, bitDepth, inputHasAlpha: false } as ConstructorParameters<typeof PNG>[0])
  // pngjs reads 16-bit input through a Uint16Array over the whole buffer, so give it its own copy.
  png.data = Buffer.from(pixels.slice().buffer)
  return PNG.sync.write(png, { colorType: 0, inputColorType: 0, bitDepth, inputHasAlpha: false } as Parameters<typeof PNG.sync.write>[1])
}

export interface BscanCaseWrite {
  readonly oct: Volume<Uint8Array | Uint16Array>
  /** Label volume; slices that are all `UNLABELLED` get no mask file. */
  readonly labels?: Volume<Uint8Array>
  readonly labelScheme?: LabelScheme
  readonly vendor?: string
  readonly spacingEstimated?: readonly [boolean, boolean, boolean]
  /** Extra sidecar fields, written as given. */
  readonly extra?: Readonly<Record<string, unknown>>
}

/**
 * Writes a B-scan case: `oct/bscan_<z>.png` (8- or 16-bit gray), masks
 * `reference/bscan_<z>.png` (RETOUCH or 0/1 codes) for labelled slices, and `octflow.json`.
 * Removes the folder's written files when a write fails.
 */
export const writeBscanCase = async (dir: string, content: BscanCaseWrite): Promise<void> => {
  const { oct, labels } = content
  if (oct.dtype !== "uint8" && oct.dtype !== "uint16") {
    throw new RangeError(`${dir}: B-scan folders store uint8 or uint16 volumes, not ${oct.dtype}; convert the volume first`)
  }
  const [width, height, depth] = oct.dims
  const sliceSize = width * height
  const digits = String(Math.max(depth - 1, 0)).length
  const name = (z: number): string => `bscan_${String(z).padStart(digits, "0")}.png`
  const scheme = content.labelScheme ?? "retouch"
  const written: string[] = []
  try {
    await mkdir(join(dir, "oct"), { recursive: true })
    for (let z = 0; z < depth; z++) {
      const path = join(dir, "oct", name(z))
      written.push(path)
      await writeFile(path, encodeGrayPng(width, height, oct.data.subarray(z * sliceSize, (z + 1) * sliceSize)))
    }
    if (labels !== undefined) {
      await mkdir(join(dir, "reference"), { recursive: true })
      for (let z = 0; z < depth; z++) {
        const slice = labels.data.subarray(z * sliceSize, (z + 1) * sliceSize)
        if (slice[0] === UNLABELLED) continue
        const path = join(dir, "reference", name(z))
        written.push(path)
        await writeFile(path, encodeGrayPng(width, height, slice))
      }
    }
    const sidecar = {
      vendor: content.vendor,
      spacingMm: oct.spacingMm,
      spacingEstimated: content.spacingEstimated ?? [false, false, false],
      images: "oct",
      reference: labels === undefined ? null : "reference",
      labelScheme: scheme,
      maskEncoding: scheme === "binary" ? "0/1" : "retouch",
      referenceNumberOffset: 0,
      ...content.extra
    }
    const sidecarPath = join(dir, SIDECAR_NAME)
    written.push(sidecarPath)
    await writeFile(sidecarPath, JSON.stringify(sidecar, null, 2) + "\n")
  } catch (cause) {
    await Promise.all(written.map((file) => rm(file, { force: true })))
    throw cause
  }
}
