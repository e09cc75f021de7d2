/**
 * Dataset discovery for `--data DIR` and case loading.
 *
 * Layout: `<root>/<Vendor>/<CASE>/` with `oct.mhd` (or `oct.mha`, `oct.nii`, `oct.nii.gz`)
 * and an optional `reference.*` of the same format family, or a B-scan folder with an
 * `octflow.json` sidecar. Vendor folders are `Cirrus`, `Spectralis`, `Topcon` or
 * `RETOUCH-TrainingSet-<Vendor>` / `RETOUCH-TestSet-<Vendor>`, matched case-insensitively.
 * Case folders may have any name (TRAIN025, TEST001, a hash).
 *
 * Discovery reads headers only. A problem with one case (unknown vendor, geometry that does
 * not fit the vendor, a damaged header, a reference of another size) is stored on that case
 * as `error`, and `loadCase` raises it. Discovery itself raises only when the root folder is
 * missing, empty or has no case at all.
 */
import { open, readdir, readFile, stat } from "node:fs/promises"
import { basename, join } from "node:path"
import * as UTIF from "utif2"
import { listBscanCase, listImageFiles, readBscanCase, SIDECAR_NAME } from "./bscans.ts"
import {
  DatasetLayoutError,
  EmptyFolderError,
  ImageDecodeError,
  ReferenceSizeMismatchError,
  UnsupportedElementTypeError,
  VendorMismatchError,
  VendorUnknownError,
  VolumeFileNotFoundError
} from "./errors.ts"
import { type LabelScheme, validateLabels } from "./labels.ts"
import { readMetaImage, readMetaImageHeader } from "./metaimage.ts"
import { readNifti, readNiftiInfo } from "./nifti.ts"
import type { DType, Volume } from "./volume.ts"

export type Vendor = "Cirrus" | "Spectralis" | "Topcon"

export const vendors: readonly Vendor[] = ["Cirrus", "Spectralis", "Topcon"]

export type CaseFormat = "metaimage" | "nifti" | "bscans"

/** Element types and B-scan heights (voxels along y) that each vendor's scanner produces. */
export const vendorGeometry: Readonly<Record<Vendor, { readonly dtypes: readonly DType[]; readonly heights: readonly number[] }>> = {
  Cirrus: { dtypes: ["uint8"], heights: [1024] },
  // RETOUCH Spectralis volumes are uint16; B-scan image exports of Spectralis scans are 8-bit.
  Spectralis: { dtypes: ["uint16", "uint8"], heights: [496] },
  Topcon: { dtypes: ["uint8"], heights: [885, 650] }
}

/** Returns whether a volume's element type and B-scan height (dims[1]) are ones `vendor`'s scanner produces. */
export const fitsVendorGeometry = (
  vendor: Vendor,
  volume: { readonly dtype: DType; readonly dims: readonly [number, number, number] }
): boolean => vendorGeometry[vendor].dtypes.includes(volume.dtype) && vendorGeometry[vendor].heights.includes(volume.dims[1])

export interface DiscoveryOptions {
  /**
   * Vendor per case, overriding the folder name; keyed by case key ("Topcon/TRAIN001") or by
   * case folder name ("TRAIN001").
   */
  readonly vendor?: Readonly<Record<string, string>>
  /** Check element type and B-scan height against the vendor; default true. */
  readonly strictGeometry?: boolean
  /** Label scheme of MetaImage and NIfTI references; default "retouch". B-scan cases use their sidecar's. */
  readonly scheme?: LabelScheme
}

export interface CaseMeta {
  readonly caseName: string
  readonly vendorFolder: string
  /** Source of the vendor: a `vendor` override, the vendor folder name, or the B-scan sidecar. */
  readonly vendorSource: "override" | "folder" | "sidecar"
  readonly dims?: readonly [number, number, number]
  readonly dtype?: DType
  readonly spacingMm?: readonly [number, number, number]
  readonly geometryChecked: boolean
  /** The B-scan sidecar's fields, for B-scan cases. */
  readonly sidecar?: Readonly<Record<string, unknown>>
}

/** One case of a dataset as discovery found it. */
export interface DatasetCase {
  /** Stable identifier, `<vendor folder>/<case folder>`, e.g. "Spectralis/TRAIN025". */
  readonly key: string
  /** The vendor, or undefined when it could not be decided (then `error` is set). */
  readonly vendor: Vendor | undefined
  readonly dir: string
  /** The OCT volume: a MetaImage or NIfTI file, or the sidecar of a B-scan folder. */
  readonly octPath: string
  readonly referencePath?: string
  readonly format: CaseFormat
  /** Every file whose bytes decide the case's content, sorted, for hashing. */
  readonly files: readonly string[]
  readonly scheme: LabelScheme
  readonly meta: CaseMeta
  /** Reason the case cannot be used, raised by `loadCase`. */
  readonly error?: Error
}

const vendorFolderPattern = /^(?:RETOUCH-(?:Training|Test)Set-)?(.+)$/i

/** Maps a vendor folder name to a vendor, case-insensitively; undefined when unknown. */
export const vendorFromFolder = (name: string): Vendor | undefined => {
  const core = vendorFolderPattern.exec(name)?.[1] ?? name
  return vendors.find((vendor) => vendor.toLowerCase() === core.toLowerCase())
}

const parseVendor = (value: string | undefined): Vendor | undefined =>
  value === undefined ? undefined : vendors.find((vendor) => vendor.toLowerCase() === value.toLowerCase())

const listDir = async (path: string): Promise<string[]> => {
  try {
    return (await readdir(path)).sort()
  } catch (cause) {
    const code = (cause as { code?: string }).code
    if (code === "ENOTDIR") throw new DatasetLayoutError({ path, reason: "it is a file, not a folder; point --data at the dataset folder" })
    if (code === "ENOENT") throw new VolumeFileNotFoundError({ path, cause })
    throw cause
  }
}

const isDirectory = async (path: string): Promise<boolean> => {
  try {
    return (await stat(path)).isDirectory()
  } catch {
    return false
  }
}

const hidden = (name: string): boolean => name.startsWith(".") || name.startsWith("_")

// ---------------------------------------------------------------------------------------
// Volume files of a case folder

const octNames: ReadonlyArray<{ name: string; format: CaseFormat }> = [
  { name: "oct.mhd", format: "metaimage" },
  { name: "oct.mha", format: "metaimage" },
  { name: "oct.nii.gz", format: "nifti" },
  { name: "oct.nii", format: "nifti" }
]

const referenceNames = ["reference.mhd", "reference.mha", "reference.nii.gz", "reference.nii"]

interface Probe {
  readonly dims: readonly [number, number, number]
  readonly dtype: DType
  readonly spacingMm: readonly [number, number, number]
  readonly files: readonly string[]
}

const probeVolumeFile = async (path: string, format: CaseFormat): Promise<Probe> => {
  if (format === "metaimage") {
    const header = await readMetaImageHeader(path)
    return { dims: header.dims, dtype: header.dtype, spacingMm: header.spacingMm, files: header.files }
  }
  const info = await readNiftiInfo(path)
  return { dims: info.dims, dtype: info.dtype, spacingMm: info.spacingMm, files: [path] }
}

/** Reads width, height and bit depth of a PNG (IHDR chunk) or TIFF without decoding pixels. */
const probeImage = async (path: string): Promise<{ width: number; height: number; bitDepth: number }> => {
  const handle = await open(path, "r")
  try {
    const head = Buffer.alloc(64 * 1024)
    const { bytesRead } = await handle.read(head, 0, head.length, 0)
    const bytes = head.subarray(0, bytesRead)
    if (bytes.length >= 26 && bytes.readUInt32BE(0) === 0x89504e47) {
      return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20), bitDepth: bytes[24] === 16 ? 16 : 8 }
    }
    const whole = bytes.length < head.length ? bytes : await readFile(path)
    const ifd = UTIF.decode(whole)[0]
    if (ifd === undefined) throw new ImageDecodeError({ path, reason: "no TIFF image directory" })
    const width = (ifd.t256 as number[] | undefined)?.[0] ?? 0
    const height = (ifd.t257 as number[] | undefined)?.[0] ?? 0
    const bits = (ifd.t258 as number[] | undefined)?.[0] ?? 8
    return { width, height, bitDepth: bits === 16 ? 16 : 8 }
  } catch (cause) {
    if (cause instanceof ImageDecodeError) throw cause
    throw new ImageDecodeError({ path, reason: (cause as Error).message })
  } finally {
    await handle.close()
  }
}

// ---------------------------------------------------------------------------------------
// Discovery

interface CaseDraft {
  readonly key: string
  readonly caseName: string
  readonly vendorFolder: string
  readonly dir: string
}

const decideVendor = (
  draft: CaseDraft,
  options: DiscoveryOptions,
  sidecarVendor: string | undefined
): { vendor: Vendor; source: CaseMeta["vendorSource"] } => {
  const override = options.vendor?.[draft.key] ?? options.vendor?.[draft.caseName]
  if (override !== undefined) {
    const vendor = parseVendor(override)
    if (vendor === undefined) throw new VendorUnknownError({ path: draft.dir, caseKey: draft.caseName, actual: override })
    return { vendor, source: "override" }
  }
  const fromFolder = vendorFromFolder(draft.vendorFolder)
  if (fromFolder !== undefined) return { vendor: fromFolder, source: "folder" }
  const fromSidecar = parseVendor(sidecarVendor)
  if (fromSidecar !== undefined) return { vendor: fromSidecar, source: "sidecar" }
  throw new VendorUnknownError({ path: draft.dir, caseKey: draft.caseName, actual: draft.vendorFolder })
}

const checkGeometry = (draft: CaseDraft, path: string, vendor: Vendor, probe: Pick<Probe, "dims" | "dtype">): void => {
  if (fitsVendorGeometry(vendor, probe)) return
  const rule = vendorGeometry[vendor]
  throw new VendorMismatchError({
    path,
    caseKey: draft.caseName,
    vendor,
    expected: `${rule.dtypes.join(" or ")} with B-scans ${rule.heights.join(" or ")} voxels high`,
    actual: `${probe.dtype} with B-scans ${probe.dims[1]} voxels high (${probe.dims.join(" x ")}, x y z)`
  })
}

const failedCase = (draft: CaseDraft, octPath: string, format: CaseFormat, scheme: LabelScheme, error: Error): DatasetCase => ({
  key: draft.key,
  vendor: vendorFromFolder(draft.vendorFolder),
  dir: draft.dir,
  octPath,
  format,
  files: [],
  scheme,
  meta: { caseName: draft.caseName, vendorFolder: draft.vendorFolder, vendorSource: "folder", geometryChecked: false },
  error
})

const discoverVolumeCase = async (
  draft: CaseDraft,
  octPath: string,
  format: CaseFormat,
  options: DiscoveryOptions
): Promise<DatasetCase> => {
  const scheme = options.scheme ?? "retouch"
  try {
    const { vendor, source } = decideVendor(draft, options, undefined)
    const probe = await probeVolumeFile(octPath, format)
    const strict = options.strictGeometry ?? true
    if (strict) checkGeometry(draft, octPath, vendor, probe)

    const entries = await listDir(draft.dir)
    const referenceName = referenceNames.find((name) => entries.includes(name))
    const referencePath = referenceName === undefined ? undefined : join(draft.dir, referenceName)
    let files = [...probe.files]
    if (referencePath !== undefined) {
      const referenceFormat: CaseFormat = referencePath.includes(".nii") ? "nifti" : "metaimage"
      const reference = await probeVolumeFile(referencePath, referenceFormat)
      if (reference.dims.some((size, axis) => size !== probe.dims[axis])) {
        throw new ReferenceSizeMismatchError({ path: referencePath, octPath, expected: probe.dims, actual: reference.dims })
      }
      files = [...files, ...reference.files]
    }
    return {
      key: draft.key,
      vendor,
      dir: draft.dir,
      octPath,
      referencePath,
      format,
      files: [...new Set(files)].sort(),
      scheme,
      meta: {
        caseName: draft.caseName,
        vendorFolder: draft.vendorFolder,
        vendorSource: source,
        dims: probe.dims,
        dtype: probe.dtype,
        spacingMm: probe.spacingMm,
        geometryChecked: strict
      }
    }
  } catch (cause) {
    if (!(cause instanceof Error)) throw cause
    return failedCase(draft, octPath, format, scheme, cause)
  }
}

/** Lists the mask files of the folders named in a sidecar's `additionalReferences`. */
const listAdditionalReferences = async (dir: string, raw: Readonly<Record<string, unknown>>): Promise<string[]> => {
  const extra = raw.additionalReferences
  if (typeof extra !== "object" || extra === null) return []
  const files: string[] = []
  for (const folder of Object.values(extra)) {
    if (typeof folder === "string") files.push(...(await listImageFiles(join(dir, folder))))
  }
  return files
}

const discoverBscanCase = async (draft: CaseDraft, options: DiscoveryOptions): Promise<DatasetCase> => {
  const sidecarPath = join(draft.dir, SIDECAR_NAME)
  try {
    const listing = await listBscanCase(sidecarPath)
    const { sidecar, imageFiles, maskFiles } = listing
    const { vendor, source } = decideVendor(draft, options, sidecar.vendor)
    const first = await probeImage(imageFiles[0])
    const probe = {
      dims: [first.width, first.height, imageFiles.length] as const,
      dtype: (first.bitDepth === 16 ? "uint16" : "uint8") as DType
    }
    const strict = options.strictGeometry ?? true
    if (strict) checkGeometry(draft, imageFiles[0], vendor, probe)
    const extraFiles = await listAdditionalReferences(draft.dir, sidecar.raw)
    return {
      key: draft.key,
      vendor,
      dir: draft.dir,
      octPath: sidecarPath,
      referencePath: sidecar.referenceDir,
      format: "bscans",
      files: [sidecarPath, ...imageFiles, ...maskFiles, ...extraFiles].sort(),
      scheme: sidecar.labelScheme,
      meta: {
        caseName: draft.caseName,
        vendorFolder: draft.vendorFolder,
        vendorSource: source,
        dims: probe.dims,
        dtype: probe.dtype,
        spacingMm: sidecar.spacingMm,
        geometryChecked: strict,
        sidecar: sidecar.raw
      }
    }
  } catch (cause) {
    if (!(cause instanceof Error)) throw cause
    return failedCase(draft, sidecarPath, "bscans", "binary", cause)
  }
}

const discoverCase = async (draft: CaseDraft, options: DiscoveryOptions): Promise<DatasetCase> => {
  const entries = await listDir(draft.dir)
  const octFiles = octNames.filter(({ name }) => entries.includes(name))
  if (octFiles.length > 1) {
    const names = octFiles.map(({ name }) => name).join(", ")
    const error = new DatasetLayoutError({ path: draft.dir, reason: `the case has several OCT volumes (${names}); keep one` })
    return failedCase(draft, join(draft.dir, octFiles[0].name), octFiles[0].format, options.scheme ?? "retouch", error)
  }
  if (octFiles.length === 1) return discoverVolumeCase(draft, join(draft.dir, octFiles[0].name), octFiles[0].format, options)
  if (entries.includes(SIDECAR_NAME)) return discoverBscanCase(draft, options)
  const error = new EmptyFolderError({ path: draft.dir, expected: `oct.mhd, oct.mha, oct.nii, oct.nii.gz or ${SIDECAR_NAME}` })
  return failedCase(draft, join(draft.dir, "oct.mhd"), "metaimage", options.scheme ?? "retouch", error)
}

/** Orders case keys by UTF-16 code units, the same on every locale. */
const compareKeys = (a: DatasetCase, b: DatasetCase): number => {
  if (a.key < b.key) return -1
  if (a.key > b.key) return 1
  return 0
}

/**
 * Lists the cases of a dataset folder, sorted by key. Reads headers, not voxel data. Raises
 * only for a missing or empty root or one without any case folder; per-case problems are
 * stored in each case's `error`.
 */
export const discoverDataset = async (dir: string, options: DiscoveryOptions = {}): Promise<DatasetCase[]> => {
  const rootEntries = (await listDir(dir)).filter((name) => !hidden(name))
  if (rootEntries.length === 0) throw new EmptyFolderError({ path: dir, expected: "vendor folders (Cirrus, Spectralis, Topcon)" })

  const rootHasVolume = rootEntries.some((name) => octNames.some((oct) => oct.name === name) || name === SIDECAR_NAME)
  if (rootHasVolume) {
    throw new DatasetLayoutError({ path: dir, reason: "it is a case folder; point --data at the folder two levels up" })
  }

  const drafts: CaseDraft[] = []
  for (const vendorFolder of rootEntries) {
    const vendorDir = join(dir, vendorFolder)
    if (!(await isDirectory(vendorDir))) continue
    const caseNames = (await listDir(vendorDir)).filter((name) => !hidden(name))
    const vendorHasVolume = caseNames.some((name) => octNames.some((oct) => oct.name === name) || name === SIDECAR_NAME)
    if (vendorHasVolume) {
      throw new DatasetLayoutError({ path: vendorDir, reason: `${vendorFolder} is a case folder, not a vendor folder; move it into a vendor folder` })
    }
    for (const caseName of caseNames) {
      const caseDir = join(vendorDir, caseName)
      if (!(await isDirectory(caseDir))) continue
      drafts.push({ key: `${vendorFolder}/${caseName}`, caseName, vendorFolder, dir: caseDir })
    }
  }
  if (drafts.length === 0) throw new DatasetLayoutError({ path: dir, reason: "no case folders were found" })

  const cases: DatasetCase[] = []
  for (const draft of drafts) cases.push(await discoverCase(draft, options))
  return cases.sort(compareKeys)
}

// ---------------------------------------------------------------------------------------
// Loading

const readVolume = (path: string, format: CaseFormat): Promise<Volume> =>
  format === "nifti" || path.toLowerCase().includes(".nii") ? readNifti(path) : readMetaImage(path)

/** Converts an integer label volume to uint8, raising when a value does not fit. */
const labelsAsUint8 = (path: string, volume: Volume): Volume<Uint8Array> => {
  if (volume.data instanceof Uint8Array) return volume as Volume<Uint8Array>
  if (volume.dtype === "float32" || volume.dtype === "float64") {
    // Float labels are accepted only when every value is an integer 0..255.
    for (let i = 0; i < volume.data.length; i++) {
      const value = volume.data[i]
      if (!Number.isInteger(value) || value < 0 || value > 255) {
        throw new UnsupportedElementTypeError({ path, actual: `${volume.dtype} with value ${value}`, supported: ["integer label codes 0..255"] })
      }
    }
  }
  const data = new Uint8Array(volume.data.length)
  for (let i = 0; i < data.length; i++) {
    const value = volume.data[i]
    if (value < 0 || value > 255) {
      throw new UnsupportedElementTypeError({ path, actual: `${volume.dtype} with value ${value}`, supported: ["label codes 0..255 (uint8)"] })
    }
    data[i] = value
  }
  return { dims: volume.dims, spacingMm: volume.spacingMm, dtype: "uint8", data }
}

export interface LoadOptions {
  /**
   * For B-scan cases, a reference folder to read in place of the sidecar's: a name from the
   * sidecar's `additionalReferences` (e.g. "grader2") or a folder name inside the case.
   */
  readonly reference?: string
}

/**
 * Reads a case's OCT volume and, when it has a reference, its label volume, validated
 * against the case's scheme. Raises the case's discovery error, if any.
 */
export const loadCase = async (
  datasetCase: DatasetCase,
  options: LoadOptions = {}
): Promise<{ oct: Volume; labels?: Volume<Uint8Array> }> => {
  if (datasetCase.error !== undefined) throw datasetCase.error

  if (datasetCase.format === "bscans") {
    const extra = datasetCase.meta.sidecar?.additionalReferences as Record<string, string> | undefined
    const folder = options.reference === undefined ? undefined : join(datasetCase.dir, extra?.[options.reference] ?? options.reference)
    const { oct, labels } = await readBscanCase(datasetCase.octPath, folder)
    if (labels !== undefined) validateLabels(labels, datasetCase.scheme, datasetCase.referencePath ?? datasetCase.octPath)
    return labels === undefined ? { oct } : { oct, labels }
  }

  const oct = await readVolume(datasetCase.octPath, datasetCase.format)
  if (datasetCase.referencePath === undefined) return { oct }
  const reference = await readVolume(datasetCase.referencePath, datasetCase.format)
  if (reference.dims.some((size, axis) => size !== oct.dims[axis])) {
    throw new ReferenceSizeMismatchError({
      path: datasetCase.referencePath,
      octPath: datasetCase.octPath,
      expected: oct.dims,
      actual: reference.dims
    })
  }
  const labels = labelsAsUint8(datasetCase.referencePath, reference)
  validateLabels(labels, datasetCase.scheme, datasetCase.referencePath)
  return { oct, labels }
}

/** Returns the case folder name of a case key ("Spectralis/TRAIN025" -> "TRAIN025"). */
export const caseName = (datasetCase: Pick<DatasetCase, "key">): string => basename(datasetCase.key)
