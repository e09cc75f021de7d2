/**
 * Binary dilation, erosion and closing of a 2D mask with the disk `dx^2 + dy^2 <= r^2`,
 * computed exactly from squared Euclidean distance transforms, so the cost is linear in the
 * pixel count whatever the radius. Masks are row-major (x fastest), values 0 or nonzero in,
 * 0 or 1 out.
 *
 * Border rules match scipy.ndimage (as scikit-image 0.19.3 `binary_closing` calls it):
 * dilation treats outside the image as background, erosion treats it as foreground. So a
 * pixel is dilated iff some foreground pixel lies within distance r, and survives erosion
 * iff no background pixel of the image lies within distance r. A closing therefore never
 * removes a pixel.
 */
import { squaredDistanceTransform } from "./edt.ts"
import { InvalidParameterError } from "./errors.ts"

const checkRadius = (radius: number): number => {
  if (!Number.isInteger(radius) || radius < 0) {
    throw new InvalidParameterError({ parameter: "radius", expected: "an integer >= 0", actual: String(radius) })
  }
  return radius * radius
}

/** Dilates `mask` with the disk of `radius`; outside the image is background. */
export const dilateDisk = (mask: Uint8Array, width: number, height: number, radius: number): Uint8Array => {
  const limit = checkRadius(radius)
  const distances = squaredDistanceTransform(mask, width, height, "foreground")
  const out = new Uint8Array(mask.length)
  for (let i = 0; i < out.length; i++) out[i] = distances[i] <= limit ? 1 : 0
  return out
}

/** Erodes `mask` with the disk of `radius`; outside the image is foreground. */
export const erodeDisk = (mask: Uint8Array, width: number, height: number, radius: number): Uint8Array => {
  const limit = checkRadius(radius)
  const distances = squaredDistanceTransform(mask, width, height, "background")
  const out = new Uint8Array(mask.length)
  for (let i = 0; i < out.length; i++) out[i] = distances[i] > limit ? 1 : 0
  return out
}

/** Closes `mask` with the disk of `radius`: dilation, then erosion. */
export const closeDisk = (mask: Uint8Array, width: number, height: number, radius: number): Uint8Array =>
  erodeDisk(dilateDisk(mask, width, height, radius), width, height, radius)
