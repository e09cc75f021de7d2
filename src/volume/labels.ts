/**
 * Label schemes for reference volumes, their validation and per-slice summaries.
 *
 * A label volume is a `Volume<Uint8Array>` of the OCT volume's size. Two schemes exist:
 * - `retouch`: 0 background, 1 IRF (intraretinal fluid), 2 SRF (subretinal fluid),
 *   3 PED (pigment epithelial detachment), the RETOUCH challenge coding;
 * - `binary`: 0 background, 1 fluid of any kind.
 * In both, `UNLABELLED` (255) fills every voxel of a B-scan that has no reference, so an
 * ungraded slice is never mistaken for a slice without fluid.
 */
import { LabelSlicePartlyUnlabelledError, LabelValueOutOfSchemeError } from "./errors.ts"
import type { Volume } from "./volume.ts"

export type LabelScheme = "retouch" | "binary"

export const labelSchemes: readonly LabelScheme[] = ["retouch", "binary"]

/** The value of every voxel of a slice that has no reference. */
export const UNLABELLED = 255

export const BACKGROUND = 0

/** RETOUCH class codes. */
export const RetouchClass = { background: 0, IRF: 1, SRF: 2, PED: 3 } as const

/** Binary scheme codes. */
export const BinaryClass = { background: 0, fluid: 1 } as const

/** Class names by code, per scheme. */
export const schemeClassNames: Readonly<Record<LabelScheme, readonly string[]>> = {
  retouch: ["background", "IRF", "SRF", "PED"],
  binary: ["background", "fluid"]
}

/** The largest class code of a scheme. */
export const maxClass = (scheme: LabelScheme): number => schemeClassNames[scheme].length - 1

export const isLabelScheme = (value: unknown): value is LabelScheme =>
  typeof value === "string" && (labelSchemes as readonly string[]).includes(value)

/** Counts the voxels of each value 0..255 in `data`. */
export const histogram256 = (data: Uint8Array): Uint32Array => {
  const counts = new Uint32Array(256)
  for (let i = 0; i < data.length; i++) counts[data[i]]++
  return counts
}

const fixFor = (scheme: LabelScheme, invalid: readonly number[]): string => {
  if (scheme === "binary" && invalid.every((value) => value >= 1 && value <= 3)) {
    return "these are RETOUCH codes, so read the reference with the retouch scheme"
  }
  if (scheme === "retouch" && invalid.every((value) => [85, 170].includes(value))) {
    return "values 85/170/255 are RETOUCH codes times 85, so divide the mask by 85 before use"
  }
  return `map the reference to the ${scheme} scheme (${schemeClassNames[scheme].map((n, i) => `${i} ${n}`).join(", ")}) and use 255 only for unlabelled slices`
}

/**
 * Checks that every voxel is a class of `scheme` or `UNLABELLED`, and that each slice is
 * either wholly unlabelled or wholly labelled. Raises `LabelValueOutOfSchemeError` listing
 * every invalid value and its voxel count, or `LabelSlicePartlyUnlabelledError`. `path` names
 * the file in the error.
 */
export const validateLabels = (labels: Volume<Uint8Array>, scheme: LabelScheme, path: string): void => {
  const counts = histogram256(labels.data)
  const top = maxClass(scheme)
  const invalid: { value: number; voxels: number }[] = []
  for (let value = top + 1; value < UNLABELLED; value++) {
    if (counts[value] > 0) invalid.push({ value, voxels: counts[value] })
  }
  if (invalid.length > 0) {
    const allowed = [...schemeClassNames[scheme].map((_, code) => code), UNLABELLED]
    throw new LabelValueOutOfSchemeError({
      path,
      scheme,
      allowed,
      invalid,
      fix: fixFor(scheme, invalid.map((entry) => entry.value))
    })
  }
  if (counts[UNLABELLED] === 0) return

  const sliceVoxels = labels.dims[0] * labels.dims[1]
  for (let z = 0; z < labels.dims[2]; z++) {
    let unlabelled = 0
    const offset = z * sliceVoxels
    for (let i = 0; i < sliceVoxels; i++) if (labels.data[offset + i] === UNLABELLED) unlabelled++
    if (unlabelled > 0 && unlabelled < sliceVoxels) {
      throw new LabelSlicePartlyUnlabelledError({ path, z, unlabelledVoxels: unlabelled, sliceVoxels })
    }
  }
}

/** Flags, per B-scan z, whether it has a reference (its first voxel is not `UNLABELLED`). */
export const labelledSlices = (labels: Volume<Uint8Array>): boolean[] => {
  const sliceVoxels = labels.dims[0] * labels.dims[1]
  const flags: boolean[] = []
  for (let z = 0; z < labels.dims[2]; z++) flags.push(labels.data[z * sliceVoxels] !== UNLABELLED)
  return flags
}

/** Number of B-scans that have a reference. */
export const countLabelledSlices = (labels: Volume<Uint8Array>): number =>
  labelledSlices(labels).filter(Boolean).length

/** Contents of one B-scan of a label volume. */
export interface SliceLabelSummary {
  readonly z: number
  /** False when the B-scan has no reference (all voxels `UNLABELLED`). */
  readonly labelled: boolean
  /** Voxel count per class code, index = code; all zero for an unlabelled slice. */
  readonly classVoxels: readonly number[]
  /** Any fluid voxel (code > 0); false for an unlabelled slice. */
  readonly hasFluid: boolean
  /** IRF present; null under the binary scheme, which does not tell fluid types apart. */
  readonly hasIrf: boolean | null
  readonly hasSrf: boolean | null
  readonly hasPed: boolean | null
}

/** Summarises each B-scan: whether it is labelled and which classes it contains. */
export const summarizeSlices = (labels: Volume<Uint8Array>, scheme: LabelScheme): SliceLabelSummary[] => {
  const sliceVoxels = labels.dims[0] * labels.dims[1]
  const classCount = maxClass(scheme) + 1
  const summaries: SliceLabelSummary[] = []
  for (let z = 0; z < labels.dims[2]; z++) {
    const slice = labels.data.subarray(z * sliceVoxels, (z + 1) * sliceVoxels)
    const labelled = slice[0] !== UNLABELLED
    const classVoxels = new Array<number>(classCount).fill(0)
    if (labelled) {
      for (let i = 0; i < slice.length; i++) {
        const value = slice[i]
        if (value < classCount) classVoxels[value]++
      }
    }
    const present = (code: number): boolean => labelled && classVoxels[code] > 0
    const retouch = scheme === "retouch"
    summaries.push({
      z,
      labelled,
      classVoxels,
      hasFluid: classVoxels.slice(1).some((count) => count > 0),
      hasIrf: retouch ? present(RetouchClass.IRF) : null,
      hasSrf: retouch ? present(RetouchClass.SRF) : null,
      hasPed: retouch ? present(RetouchClass.PED) : null
    })
  }
  return summaries
}

/** Maps RETOUCH codes 1..3 to binary fluid 1, keeping 0 and `UNLABELLED`. Returns a new volume. */
export const toBinaryFluid = (labels: Volume<Uint8Array>): Volume<Uint8Array> => {
  const data = new Uint8Array(labels.data.length)
  for (let i = 0; i < data.length; i++) {
    const value = labels.data[i]
    if (value === UNLABELLED) data[i] = UNLABELLED
    else data[i] = value > 0 ? 1 : 0
  }
  return { dims: labels.dims, spacingMm: labels.spacingMm, dtype: "uint8", data }
}
