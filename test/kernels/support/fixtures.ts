/**
 * Loaders for the real sample images the reference tests read: 8-bit grayscale PNG (via
 * pngjs, first channel) and baseline grayscale JPEG (via the decoder in jpeg.ts).
 */
import { existsSync } from "node:fs"
import { readFile } from "node:fs/promises"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { PNG } from "pngjs"
import { decodeGrayJpeg, type GrayImage } from "./jpeg.ts"

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")

/** Path of the shared data folder beside the repository, or null when this checkout has none. */
export const sharedRoot: string | null = (() => {
  const root = path.resolve(repoRoot, "../shared")
  return existsSync(path.join(root, "reference")) && existsSync(path.join(root, "data", "real")) ? root : null
})()

export const readGrayPng = async (file: string): Promise<GrayImage> => {
  const image = PNG.sync.read(await readFile(file))
  const pixels = new Uint8Array(image.width * image.height)
  // pngjs expands every colour type to RGBA, and a grayscale pixel has R = G = B = gray.
  for (let i = 0; i < pixels.length; i++) pixels[i] = image.data[4 * i]
  return { width: image.width, height: image.height, pixels }
}

export const readGrayJpeg = async (file: string): Promise<GrayImage> =>
  decodeGrayJpeg(new Uint8Array(await readFile(file)), file)

/** Counts the positions where two equally long arrays differ. */
export const countDifferences = (actual: ArrayLike<number>, expected: ArrayLike<number>): number => {
  let differences = 0
  for (let i = 0; i < expected.length; i++) if (actual[i] !== expected[i]) differences++
  return differences
}
