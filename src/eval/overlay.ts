/**
 * PNG overlays of predicted (and optionally reference) fluid on gray B-scans.
 *
 * Each B-scan is drawn as width x height RGBA pixels, rows top to bottom (y = depth). A
 * pixel with predicted class c is alpha-blended with the class colour:
 * out = (1 - alpha) x gray + alpha x colour. Reference boundaries (pixels of class c with a
 * 4-neighbour of another value, or on the image edge) are drawn in the class colour at full
 * opacity, over the blend. Colours: IRF red, SRF green, PED blue; binary fluid yellow with
 * cyan reference boundaries, so prediction and reference stay apart with one class.
 */
import { mkdir, writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as Data from "effect/Data"
import { PNG } from "pngjs"
import { type LabelScheme, UNLABELLED } from "../volume/labels.ts"
import type { Volume } from "../volume/volume.ts"

export type Rgb = readonly [number, number, number]

/** Colour per class code; index 0 (background) is never drawn. */
export const classColours: Readonly<Record<LabelScheme, ReadonlyArray<Rgb>>> = {
  retouch: [
    [0, 0, 0],
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255]
  ],
  binary: [
    [0, 0, 0],
    [255, 255, 0]
  ]
}

/** Colours of reference boundaries; the class colours, except cyan for binary fluid. */
const contourColours: Readonly<Record<LabelScheme, ReadonlyArray<Rgb>>> = {
  retouch: classColours.retouch,
  binary: [
    [0, 0, 0],
    [0, 255, 255]
  ]
}

/** Selection of the B-scans to draw: the `mostFluid` with the most fluid, or an explicit list. */
export type SliceSelection = { readonly mostFluid: number } | { readonly slices: ReadonlyArray<number> }

export interface OverlayOptions {
  readonly scheme: LabelScheme
  /** Opacity of the predicted class colour, 0..1. */
  readonly alpha: number
  /** Draw reference boundaries when a reference is given. */
  readonly contour: boolean
  readonly selection: SliceSelection
}

export const defaultOverlayOptions: OverlayOptions = {
  scheme: "retouch",
  alpha: 0.4,
  contour: true,
  selection: { mostFluid: 3 }
}

export class OverlayInputError extends Data.TaggedError("OverlayInputError")<{
  readonly field: string
  readonly expected: string
  readonly actual: string
}> {
  override get message(): string {
    return `overlay input ${this.field} is ${this.actual}, expected ${this.expected}`
  }
}

export interface OverlayVolumes {
  /** Preprocessed B-scans, uint8 gray levels. */
  readonly image: Volume
  readonly prediction?: Volume
  readonly reference?: Volume
}

const validateVolumes = (volumes: OverlayVolumes, options: OverlayOptions): void => {
  if (volumes.image.dtype !== "uint8") {
    throw new OverlayInputError({ field: "image element type", expected: "uint8 (a preprocessed volume)", actual: volumes.image.dtype })
  }
  for (const name of ["prediction", "reference"] as const) {
    const volume = volumes[name]
    if (volume === undefined) continue
    if (volume.dtype !== "uint8") {
      throw new OverlayInputError({ field: `${name} element type`, expected: "uint8 labels", actual: volume.dtype })
    }
    if (volume.dims.some((size, axis) => size !== volumes.image.dims[axis])) {
      throw new OverlayInputError({
        field: `${name} dims`,
        expected: `[${volumes.image.dims.join(", ")}] like the image`,
        actual: `[${volume.dims.join(", ")}]`
      })
    }
  }
  if (!(options.alpha >= 0 && options.alpha <= 1)) {
    throw new OverlayInputError({ field: "alpha", expected: "a number in [0, 1]", actual: String(options.alpha) })
  }
}

/** Counts voxels of B-scan z with a label in 1..maxCode (so 255 is not fluid). */
const fluidCount = (labels: Volume, z: number, maxCode: number): number => {
  const size = labels.dims[0] * labels.dims[1]
  let count = 0
  for (let i = z * size; i < (z + 1) * size; i++) if (labels.data[i] > 0 && labels.data[i] <= maxCode) count += 1
  return count
}

/**
 * Returns the B-scans to draw, in ascending order. For `mostFluid`, slices rank by the
 * larger of their reference and predicted fluid voxel counts, ties going to the lower
 * index, and slices without any fluid are left out.
 */
export const selectOverlaySlices = (volumes: OverlayVolumes, selection: SliceSelection, scheme: LabelScheme): Array<number> => {
  const depth = volumes.image.dims[2]
  if ("slices" in selection) {
    for (const z of selection.slices) {
      if (!Number.isInteger(z) || z < 0 || z >= depth) {
        throw new OverlayInputError({ field: "slice index", expected: `an integer in 0..${depth - 1}`, actual: String(z) })
      }
    }
    return [...new Set(selection.slices)].sort((a, b) => a - b)
  }

  const maxCode = classColours[scheme].length - 1
  const ranked = Array.from({ length: depth }, (_, z) => {
    const reference = volumes.reference === undefined ? 0 : fluidCount(volumes.reference, z, maxCode)
    const prediction = volumes.prediction === undefined ? 0 : fluidCount(volumes.prediction, z, maxCode)
    return { z, fluid: Math.max(reference, prediction) }
  })
    .filter((entry) => entry.fluid > 0)
    .sort((a, b) => b.fluid - a.fluid || a.z - b.z)
  return ranked
    .slice(0, selection.mostFluid)
    .map((entry) => entry.z)
    .sort((a, b) => a - b)
}

const isBoundary = (labels: Uint8Array, width: number, height: number, x: number, y: number): boolean => {
  const value = labels[y * width + x]
  if (x === 0 || y === 0 || x === width - 1 || y === height - 1) return true
  return (
    labels[y * width + x - 1] !== value ||
    labels[y * width + x + 1] !== value ||
    labels[(y - 1) * width + x] !== value ||
    labels[(y + 1) * width + x] !== value
  )
}

/** Draws B-scan z as RGBA [height, width, 4] bytes. */
export const renderOverlay = (volumes: OverlayVolumes, z: number, overrides: Partial<OverlayOptions> = {}): Uint8Array => {
  const options = { ...defaultOverlayOptions, ...overrides }
  validateVolumes(volumes, options)
  const [width, height] = volumes.image.dims
  const size = width * height
  const colours = classColours[options.scheme]
  const gray = volumes.image.data.subarray(z * size, (z + 1) * size)
  const prediction = volumes.prediction?.data.subarray(z * size, (z + 1) * size)
  const reference = volumes.reference?.data.subarray(z * size, (z + 1) * size) as Uint8Array | undefined
  const rgba = new Uint8Array(size * 4)

  for (let pixel = 0; pixel < size; pixel++) {
    const level = gray[pixel]
    const label = prediction?.[pixel] ?? 0
    const colour = label > 0 && label < colours.length ? colours[label] : undefined
    for (let k = 0; k < 3; k++) {
      rgba[pixel * 4 + k] = colour === undefined ? level : Math.round((1 - options.alpha) * level + options.alpha * colour[k])
    }
    rgba[pixel * 4 + 3] = 255
  }

  // A B-scan without reference (255) gets no boundary, since there is nothing to outline.
  if (options.contour && reference !== undefined && !reference.includes(UNLABELLED)) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const label = reference[y * width + x]
        if (label === 0 || label >= colours.length || !isBoundary(reference, width, height, x, y)) continue
        rgba.set(contourColours[options.scheme][label], (y * width + x) * 4)
      }
    }
  }
  return rgba
}

/** Encodes B-scan z as a PNG file's bytes. */
export const renderOverlayPng = (volumes: OverlayVolumes, z: number, overrides: Partial<OverlayOptions> = {}): Buffer => {
  const [width, height] = volumes.image.dims
  const png = new PNG({ width, height })
  png.data = Buffer.from(renderOverlay(volumes, z, overrides))
  return PNG.sync.write(png)
}

export interface WrittenOverlay {
  readonly z: number
  readonly path: string
}

/** Writes `<dir>/<caseId>_z<NNN>.png` for each selected B-scan and returns the files. */
export const writeOverlays = async (
  volumes: OverlayVolumes,
  dir: string,
  caseId: string,
  overrides: Partial<OverlayOptions> = {}
): Promise<Array<WrittenOverlay>> => {
  const options = { ...defaultOverlayOptions, ...overrides }
  validateVolumes(volumes, options)
  const slices = selectOverlaySlices(volumes, options.selection, options.scheme)
  await mkdir(dir, { recursive: true })
  const written: Array<WrittenOverlay> = []
  for (const z of slices) {
    const path = join(dir, `${caseId}_z${String(z).padStart(3, "0")}.png`)
    await writeFile(path, renderOverlayPng(volumes, z, options))
    written.push({ z, path })
  }
  return written
}
