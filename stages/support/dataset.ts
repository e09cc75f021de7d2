/**
 * The `dataset` source of the RETOUCH workflow and the way stages turn one of its items
 * back into a case they can load. Item metadata holds only names relative to the case
 * folder, never absolute paths, so fingerprints are the same wherever the data lives.
 */
import { join, resolve, sep } from "node:path"
import { fileURLToPath } from "node:url"
import * as Effect from "effect/Effect"
import type { Json, Source, SourceItemRef } from "../../src/runtime/stage.ts"
import {
  type CaseMeta,
  type DatasetCase,
  discoverDataset,
  fitsVendorGeometry,
  type Vendor,
  vendorGeometry,
  vendors
} from "../../src/volume/dataset.ts"
import type { Volume } from "../../src/volume/volume.ts"
import { CaseDiscoveryError, CaseGeometryError, CaseVendorError } from "./errors.ts"

/** The real sample shipped in the repository, used when `--data` is not given. */
export const sampleDataDir = fileURLToPath(new URL("../../data/sample", import.meta.url))

const relativeTo = (dir: string, path: string): string => path.slice(dir.length + 1).split(sep).join("/")

/** Item metadata of one discovered case. */
export interface CaseItemMeta {
  readonly caseName: string
  readonly vendorFolder: string
  readonly vendor: Vendor | null
  readonly format: DatasetCase["format"]
  readonly scheme: DatasetCase["scheme"]
  /** The OCT file and reference file, relative to the case folder. */
  readonly octFile: string
  readonly referenceFile: string | null
  readonly sidecar: Json
  /** Reason discovery could not use the case, raised by the stage for this item only. */
  readonly discoveryError: { readonly tag: string; readonly message: string } | null
}

const toItemMeta = (datasetCase: DatasetCase): CaseItemMeta => ({
  caseName: datasetCase.meta.caseName,
  vendorFolder: datasetCase.meta.vendorFolder,
  vendor: datasetCase.vendor ?? null,
  format: datasetCase.format,
  scheme: datasetCase.scheme,
  octFile: relativeTo(datasetCase.dir, datasetCase.octPath),
  referenceFile: datasetCase.referencePath === undefined ? null : relativeTo(datasetCase.dir, datasetCase.referencePath),
  sidecar: (datasetCase.meta.sidecar ?? null) as Json,
  discoveryError:
    datasetCase.error === undefined
      ? null
      : { tag: (datasetCase.error as { _tag?: string })._tag ?? datasetCase.error.name, message: datasetCase.error.message }
})

/**
 * Lists the cases of `--data DIR` (RETOUCH layout, NIfTI or B-scan folders), or of the
 * shipped sample. Vendor and geometry are checked by the preprocess stage, where the
 * `vendor` and `strictGeometry` params apply, so one odd case fails only its own
 * preprocess item (split, train and evaluate then wait for every case).
 */
export const datasetSource: Source = {
  name: "dataset",
  discover: ({ dataDir }) =>
    Effect.tryPromise({
      try: async () => {
        const root = resolve(dataDir ?? sampleDataDir)
        const cases = await discoverDataset(root, { strictGeometry: false })
        // A case in a folder that names no vendor is listed again with a placeholder vendor,
        // only to learn its files. Its vendor stays unknown until a `vendor` param sets it.
        const unknownVendor = cases
          .filter((datasetCase) => (datasetCase.error as { _tag?: string } | undefined)?._tag === "VendorUnknownError")
          .map((datasetCase) => datasetCase.key)
        const relisted =
          unknownVendor.length === 0
            ? new Map<string, DatasetCase>()
            : new Map(
                (
                  await discoverDataset(root, {
                    strictGeometry: false,
                    vendor: Object.fromEntries(unknownVendor.map((key) => [key, "Spectralis"]))
                  })
                )
                  .filter((datasetCase) => unknownVendor.includes(datasetCase.key))
                  .map((datasetCase) => [datasetCase.key, { ...datasetCase, vendor: undefined }])
              )
        return cases.map((listed) => {
          const datasetCase = relisted.get(listed.key) ?? listed
          return { key: datasetCase.key, files: datasetCase.files, meta: toItemMeta(datasetCase) as unknown as Json }
        })
      },
      catch: (cause) => cause
    }),
  roots: ({ dataDir }) => [resolve(dataDir ?? sampleDataDir)]
}

/**
 * Fields of a case taken from a source item's metadata, with the vendor and case folder
 * that the caller decided.
 */
export interface CaseFields {
  readonly vendor: Vendor
  readonly vendorSource: CaseMeta["vendorSource"]
  readonly caseName: string
  readonly vendorFolder: string
  /** The case folder, which `octFile` and `referenceFile` are relative to. */
  readonly dir: string
  readonly octFile: string
  readonly referenceFile: string | null
  readonly format: DatasetCase["format"]
  readonly scheme: DatasetCase["scheme"]
  readonly sidecar: Json
}

/** Builds the dataset case that `loadCase` reads from a source item and its case fields. */
export const buildDatasetCase = (item: SourceItemRef, fields: CaseFields): DatasetCase => ({
  key: item.key,
  vendor: fields.vendor,
  dir: fields.dir,
  octPath: join(fields.dir, fields.octFile),
  ...(fields.referenceFile === null ? {} : { referencePath: join(fields.dir, fields.referenceFile) }),
  format: fields.format,
  files: item.files.map((file) => file.path),
  scheme: fields.scheme,
  meta: {
    caseName: fields.caseName,
    vendorFolder: fields.vendorFolder,
    vendorSource: fields.vendorSource,
    geometryChecked: false,
    ...(fields.sidecar === null ? {} : { sidecar: fields.sidecar as Record<string, unknown> })
  }
})

/** Finds the folder of a case from its files: the file named `octFile` lies in it. */
const caseDirOf = (item: SourceItemRef, meta: CaseItemMeta): string => {
  const suffix = `/${item.key}/${meta.octFile}`
  const octRef = item.files.find((file) => file.path.split(sep).join("/").endsWith(suffix))
  if (octRef === undefined) {
    throw new CaseDiscoveryError({ item: item.key, tag: "MissingFile", reason: `none of its listed files is ${meta.octFile}` })
  }
  return octRef.path.slice(0, octRef.path.length - meta.octFile.length - 1)
}

/**
 * Rebuilds the case of a source item with the vendor the params decide: an entry of
 * `vendorOverrides` keyed by case key, case folder name or vendor folder name (in that
 * order) wins over the vendor folder's own name.
 */
export const caseOfItem = (item: SourceItemRef, vendorOverrides: Readonly<Record<string, string>>): DatasetCase => {
  const meta = item.meta as unknown as CaseItemMeta
  if (meta.discoveryError !== null) {
    throw new CaseDiscoveryError({ item: item.key, tag: meta.discoveryError.tag, reason: meta.discoveryError.message })
  }
  const override = vendorOverrides[item.key] ?? vendorOverrides[meta.caseName] ?? vendorOverrides[meta.vendorFolder]
  const vendor = override === undefined ? meta.vendor : vendors.find((name) => name.toLowerCase() === override.toLowerCase())
  if (override !== undefined && vendor === undefined) {
    throw new CaseVendorError({ item: item.key, folder: meta.vendorFolder, value: override })
  }
  if (vendor === null || vendor === undefined) {
    throw new CaseVendorError({ item: item.key, folder: meta.vendorFolder, value: null })
  }
  return buildDatasetCase(item, {
    ...meta,
    vendor,
    vendorSource: override === undefined ? "folder" : "override",
    dir: caseDirOf(item, meta)
  })
}

/** Checks element type and B-scan height against what the vendor's scanner produces. */
export const checkVendorGeometry = (key: string, path: string, vendor: Vendor, volume: Volume): void => {
  const expected = vendorGeometry[vendor]
  const height = volume.dims[1]
  if (!fitsVendorGeometry(vendor, volume)) {
    throw new CaseGeometryError({
      item: key,
      path,
      vendor,
      actual: `${volume.dtype}, ${height} voxels high`,
      expected: `${expected.dtypes.join(" or ")}, ${expected.heights.join(" or ")} voxels high`
    })
  }
}
