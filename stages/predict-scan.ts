/**
 * The one new scan that `workflow predict` segments: which files decide its content, and
 * which vendor it is. A scan is a MetaImage or NIfTI file, a case folder with `oct.*` and an
 * optional `reference.*`, or a B-scan folder with an `octflow.json` sidecar.
 *
 * Item metadata holds only names relative to the scan's folder, so the fingerprint stays
 * the same when the scan is moved.
 */
import { readdir, stat } from "node:fs/promises"
import { basename, dirname, join, resolve, sep } from "node:path"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type { Json, Source, SourceItem, SourceItemRef } from "../src/runtime/stage.ts"
import { listBscanCase, SIDECAR_NAME } from "../src/volume/bscans.ts"
import { type DatasetCase, type Vendor, vendorFromFolder, vendors } from "../src/volume/dataset.ts"
import type { LabelScheme } from "../src/volume/labels.ts"
import { readMetaImageHeader } from "../src/volume/metaimage.ts"
import { buildDatasetCase } from "./support/dataset.ts"

/** The path given for the scan does not exist. */
export class ScanNotFoundError extends Data.TaggedError("ScanNotFoundError")<{ readonly path: string }> {
  override get message(): string {
    return `scan ${this.path} not found; pass a .mhd, .mha, .nii or .nii.gz file, or a case or B-scan folder`
  }
}

/** The scan is a file or folder of a kind that octflow cannot read. */
export class ScanFormatError extends Data.TaggedError("ScanFormatError")<{
  readonly path: string
  readonly actual: string
}> {
  override get message(): string {
    return (
      `scan ${this.path} is ${this.actual}; expected a .mhd, .mha, .nii or .nii.gz file, a folder with ` +
      `oct.mhd, oct.mha, oct.nii or oct.nii.gz, or a B-scan folder with ${SIDECAR_NAME}`
    )
  }
}

/** No vendor could be decided for the scan, or the requested one is not a vendor. */
export class ScanVendorError extends Data.TaggedError("ScanVendorError")<{
  readonly path: string
  /** The requested vendor, or null when none was requested. */
  readonly value: string | null
  readonly folder: string
}> {
  override get message(): string {
    const problem =
      this.value === null
        ? `has no vendor: no --vendor was given, its sidecar names none, and the folder "${this.folder}" that contains ` +
          "it is not a vendor name (as in the RETOUCH layout, Cirrus/TRAIN001/oct.mhd)"
        : `has the vendor "${this.value}", which is not Cirrus, Spectralis or Topcon`
    return `scan ${this.path} ${problem}; pass --vendor Cirrus (or Spectralis, Topcon)`
  }
}

/** Item metadata of the scan. */
export interface ScanMeta {
  readonly format: DatasetCase["format"]
  readonly scheme: LabelScheme
  /** The OCT file (volume or sidecar) and the reference, relative to the scan's folder. */
  readonly octFile: string
  readonly referenceFile: string | null
  /** Name of the folder that contains the scan (a lone file or a case folder). */
  readonly parentFolder: string
  /** The sidecar's `vendor` field, for B-scan folders. */
  readonly sidecarVendor: string | null
  readonly sidecar: Json
}

const octNames = ["oct.mhd", "oct.mha", "oct.nii.gz", "oct.nii"]
const referenceNames = ["reference.mhd", "reference.mha", "reference.nii.gz", "reference.nii"]

const formatOfName = (name: string): "metaimage" | "nifti" | null => {
  const lower = name.toLowerCase()
  if (lower.endsWith(".mhd") || lower.endsWith(".mha")) return "metaimage"
  if (lower.endsWith(".nii") || lower.endsWith(".nii.gz")) return "nifti"
  return null
}

const stemOf = (name: string): string => name.replace(/\.(nii\.gz|nii|mhd|mha)$/i, "")

/** The files whose bytes a MetaImage (header and data files) or NIfTI volume reads. */
const volumeFiles = async (path: string, format: "metaimage" | "nifti"): Promise<ReadonlyArray<string>> =>
  format === "metaimage" ? (await readMetaImageHeader(path)).files : [path]

const statOrNull = (path: string) => stat(path).catch(() => null)

/**
 * Describes the scan at `path` as one source item: the key (file stem or folder name), every
 * file that decides its content, and its metadata.
 */
export const describeScan = async (path: string): Promise<SourceItem> => {
  const absolute = resolve(path)
  const info = await statOrNull(absolute)
  if (info === null) throw new ScanNotFoundError({ path: absolute })

  if (info.isFile()) {
    if (basename(absolute) === SIDECAR_NAME) return describeBscanFolder(dirname(absolute))
    const format = formatOfName(absolute)
    if (format === null) throw new ScanFormatError({ path: absolute, actual: "a file of another type" })
    // A case folder's oct.* file stands for the whole case, so its reference comes along.
    if (octNames.includes(basename(absolute).toLowerCase())) return describeCaseFolder(dirname(absolute))
    const meta: ScanMeta = {
      format,
      scheme: "retouch",
      octFile: basename(absolute),
      referenceFile: null,
      parentFolder: basename(dirname(absolute)),
      sidecarVendor: null,
      sidecar: null
    }
    return { key: stemOf(basename(absolute)), files: await volumeFiles(absolute, format), meta: meta as unknown as Json }
  }
  if (!info.isDirectory()) throw new ScanFormatError({ path: absolute, actual: "neither a file nor a folder" })

  const entries = await readdir(absolute)
  if (entries.includes(SIDECAR_NAME) && !entries.some((name) => octNames.includes(name))) {
    return describeBscanFolder(absolute)
  }
  return describeCaseFolder(absolute)
}

const describeCaseFolder = async (dir: string): Promise<SourceItem> => {
  const entries = await readdir(dir)
  const octs = octNames.filter((name) => entries.includes(name))
  if (octs.length !== 1) {
    const actual = octs.length === 0 ? "a folder without an OCT volume" : `a folder with several OCT volumes (${octs.join(", ")})`
    throw new ScanFormatError({ path: dir, actual })
  }
  const octFile = octs[0]!
  const format = formatOfName(octFile)!
  const referenceFile = referenceNames.find((name) => entries.includes(name)) ?? null
  const files = [...(await volumeFiles(join(dir, octFile), format))]
  if (referenceFile !== null) files.push(...(await volumeFiles(join(dir, referenceFile), formatOfName(referenceFile)!)))
  const meta: ScanMeta = {
    format,
    scheme: "retouch",
    octFile,
    referenceFile,
    parentFolder: basename(dirname(dir)),
    sidecarVendor: null,
    sidecar: null
  }
  return { key: basename(dir), files: [...new Set(files)].sort(), meta: meta as unknown as Json }
}

const describeBscanFolder = async (dir: string): Promise<SourceItem> => {
  const { sidecar, imageFiles, maskFiles } = await listBscanCase(join(dir, SIDECAR_NAME))
  const relative = (path: string) => path.slice(dir.length + 1).split(sep).join("/")
  const meta: ScanMeta = {
    format: "bscans",
    scheme: sidecar.labelScheme,
    octFile: SIDECAR_NAME,
    referenceFile: sidecar.referenceDir === undefined || maskFiles.length === 0 ? null : relative(sidecar.referenceDir),
    parentFolder: basename(dirname(dir)),
    sidecarVendor: sidecar.vendor ?? null,
    sidecar: sidecar.raw as Json
  }
  return { key: basename(dir), files: [join(dir, SIDECAR_NAME), ...imageFiles, ...maskFiles].sort(), meta: meta as unknown as Json }
}

/** The source of the predict workflow: the one scan named by `dataDir`. */
export const scanSource: Source = {
  name: "scan",
  discover: ({ dataDir }) =>
    Effect.tryPromise({
      try: async () => {
        if (dataDir === undefined) throw new ScanNotFoundError({ path: "(none given)" })
        return [await describeScan(dataDir)]
      },
      catch: (cause) => cause
    })
}

/** Origin of the scan's vendor: the request, the B-scan sidecar or the parent folder's name. */
export type VendorSource = "requested" | "sidecar" | "folder"

/**
 * Decides the scan's vendor: `requested` unless it is "auto", else the sidecar's `vendor`,
 * else the name of the folder that contains the scan (Cirrus, RETOUCH-TestSet-Topcon, ...).
 */
export const resolveScanVendor = (
  path: string,
  meta: ScanMeta,
  requested: string
): { readonly vendor: Vendor; readonly source: VendorSource } => {
  const parse = (value: string) => vendors.find((vendor) => vendor.toLowerCase() === value.toLowerCase())
  if (requested !== "auto") {
    const vendor = parse(requested)
    if (vendor === undefined) throw new ScanVendorError({ path, value: requested, folder: meta.parentFolder })
    return { vendor, source: "requested" }
  }
  if (meta.sidecarVendor !== null) {
    const vendor = parse(meta.sidecarVendor)
    if (vendor === undefined) throw new ScanVendorError({ path, value: meta.sidecarVendor, folder: meta.parentFolder })
    return { vendor, source: "sidecar" }
  }
  const fromFolder = vendorFromFolder(meta.parentFolder)
  if (fromFolder === undefined) throw new ScanVendorError({ path, value: null, folder: meta.parentFolder })
  return { vendor: fromFolder, source: "folder" }
}

/** Finds the folder of the scan from its files: the file named `octFile` lies in it. */
const scanDirOf = (item: SourceItemRef, meta: ScanMeta): string => {
  const octRef = item.files.find((file) => basename(file.path) === basename(meta.octFile))
  if (octRef === undefined) throw new ScanFormatError({ path: item.key, actual: `an item without its ${meta.octFile}` })
  return dirname(octRef.path)
}

/** Returns the path of the scan's OCT file (volume or sidecar). */
export const scanPathOf = (item: SourceItemRef): string => {
  const meta = item.meta as unknown as ScanMeta
  return join(scanDirOf(item, meta), meta.octFile)
}

/** Rebuilds the scan as a dataset case that `loadCase` reads, with the given vendor. */
export const caseOfScan = (item: SourceItemRef, vendor: Vendor): DatasetCase => {
  const meta = item.meta as unknown as ScanMeta
  return buildDatasetCase(item, {
    ...meta,
    vendor,
    vendorSource: "override",
    caseName: item.key,
    vendorFolder: meta.parentFolder,
    dir: scanDirOf(item, meta)
  })
}
