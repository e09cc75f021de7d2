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
import { withinSquaredDistance } from "./edt.ts"
import { InvalidParameterError } from "./errors.ts"
import { ScratchArrays } from "./scratch.ts"

const checkRadius = (radius: number): number => {
  if (!Number.isInteger(radius) || radius < 0) {
    throw new InvalidParameterError({ parameter: "radius", expected: "an integer >= 0", actual: String(radius) })
  }
  return radius * radius
}

/** Dilates `mask` with the disk of `radius` into `out`, treating outside the image as background. */
export const dilateDisk = (
  mask: Uint8Array,
  width: number,
  height: number,
  radius: number,
  out: Uint8Array = new Uint8Array(mask.length),
  scratch: ScratchArrays = new ScratchArrays()
): Uint8Array => withinSquaredDistance(mask, width, height, "foreground", checkRadius(radius), out, scratch)

/** Erodes `mask` with the disk of `radius` into `out`, treating outside the image as foreground. */
export const erodeDisk = (
  mask: Uint8Array,
  width: number,
  height: number,
  radius: number,
  out: Uint8Array = new Uint8Array(mask.length),
  scratch: ScratchArrays = new ScratchArrays()
): Uint8Array => {
  const nearBackground = withinSquaredDistance(mask, width, height, "background", checkRadius(radius), out, scratch)
  for (let i = 0; i < nearBackground.length; i++) nearBackground[i] ^= 1
  return nearBackground
}

/** Closes `mask` with the disk of `radius` into `out`: dilation, then erosion. */
export const closeDisk = (
  mask: Uint8Array,
  width: number,
  height: number,
  radius: number,
  out: Uint8Array = new Uint8Array(mask.length),
  scratch: ScratchArrays = new ScratchArrays()
): Uint8Array => {
  const dilated = dilateDisk(mask, width, height, radius, scratch.uint8("dilated", mask.length), scratch)
  return erodeDisk(dilated, width, height, radius, out, scratch)
}
