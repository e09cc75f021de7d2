/**
 * Binary dilation, erosion and closing of a 2D mask with the disk `dx^2 + dy^2 <= r^2`,
 * computed exactly in time linear in the pixel count whatever the radius, with integer
 * arithmetic only. Masks are row-major (x fastest), values 0 or nonzero in, 0 or 1 out.
 *
 * Let g(x') be the vertical distance from a pixel's row to the nearest site in column x'.
 * The pixel (x, y) lies within distance r of a site iff some column x' has
 * `(x - x')^2 + g(x')^2 <= r^2`, that is `|x - x'| <= w(g(x'))`, where w is the disk's
 * half-width at height g. So each row is the union of the intervals `[x' - w, x' + w]`. A left-to-right running maximum of `x' + w`
 * covers the intervals whose centre is left of x, a right-to-left running minimum of
 * `x' - w` the others. This gives the same masks as thresholding an exact squared
 * Euclidean distance transform (edt.ts) at r^2.
 *
 * Border rules match scipy.ndimage (as scikit-image 0.19.3 `binary_closing` calls it):
 * dilation treats outside the image as background, erosion treats it as foreground. So a
 * pixel is dilated iff some foreground pixel lies within distance r, and survives erosion
 * iff no background pixel of the image lies within distance r. A closing therefore never
 * removes a pixel.
 */
import { checkGeometry, InvalidParameterError } from "./errors.ts"
import { ScratchArrays } from "./scratch.ts"

const checkRadius = (radius: number): number => {
  if (!Number.isInteger(radius) || radius < 0) {
    throw new InvalidParameterError({ parameter: "radius", expected: "an integer >= 0", actual: String(radius) })
  }
  return radius
}

/**
 * Writes into `out` 1 where a site lies within the disk of `radius` around the pixel and 0
 * elsewhere, or the reverse with `invert`. Sites are the nonzero pixels of `mask` when
 * `foregroundSites`, else its zero pixels. Only pixels inside the image are sites.
 */
const withinDisk = (
  mask: Uint8Array,
  width: number,
  height: number,
  foregroundSites: boolean,
  radius: number,
  invert: boolean,
  out: Uint8Array,
  scratch: ScratchArrays
): Uint8Array => {
  checkGeometry("morphology mask", mask.length, width, height)
  checkGeometry("morphology output", out.length, width, height)
  // Column distances beyond the radius (or the image) reach no pixel, so they are capped.
  const cap = Math.min(radius, width + height) + 1
  // halfWidths[g] = floor(sqrt(radius^2 - g^2)), the largest dx with dx^2 + g^2 <= radius^2.
  const halfWidths = scratch.int32("disk half-widths", cap + 1)
  for (let g = 0; g < cap; g++) {
    const room = radius * radius - g * g
    let halfWidth = Math.floor(Math.sqrt(room))
    while (halfWidth * halfWidth > room) halfWidth--
    while ((halfWidth + 1) * (halfWidth + 1) <= room) halfWidth++
    halfWidths[g] = halfWidth
  }
  // A cap entry of -width - 1 makes the interval of a far column empty of every x.
  halfWidths[cap] = -width - 1
  const siteValue = foregroundSites ? 1 : 0
  const hit = invert ? 0 : 1
  const miss = invert ? 1 : 0

  // Downward pass: distance to the nearest site at or above, per pixel, capped.
  const above = scratch.int32("column distance above", width * height)
  for (let x = 0; x < width; x++) above[x] = ((mask[x] !== 0 ? 1 : 0) === siteValue) ? 0 : cap
  for (let y = 1; y < height; y++) {
    const row = y * width
    for (let x = 0; x < width; x++) {
      const isSite = (mask[row + x] !== 0 ? 1 : 0) === siteValue
      const next = Math.min(above[row - width + x] + 1, cap)
      above[row + x] = isSite ? 0 : next
    }
  }

  // Upward pass: finish each row's column distances, then cover the row's intervals.
  const below = scratch.int32("column distance below", width).fill(cap)
  const rowHalfWidths = scratch.int32("row half-widths", width)
  for (let y = height - 1; y >= 0; y--) {
    const row = y * width
    let reach = -1
    for (let x = 0; x < width; x++) {
      const isSite = (mask[row + x] !== 0 ? 1 : 0) === siteValue
      const fromBelow = isSite ? 0 : Math.min(below[x] + 1, cap)
      below[x] = fromBelow
      const fromAbove = above[row + x]
      const halfWidth = halfWidths[fromAbove < fromBelow ? fromAbove : fromBelow]
      rowHalfWidths[x] = halfWidth
      const end = x + halfWidth
      if (end > reach) reach = end
      out[row + x] = reach >= x ? hit : miss
    }
    let leftReach = width
    for (let x = width - 1; x >= 0; x--) {
      const start = x - rowHalfWidths[x]
      if (start < leftReach) leftReach = start
      if (leftReach <= x) out[row + x] = hit
    }
  }
  return out
}

/** Dilates `mask` with the disk of `radius` into `out`, treating outside the image as background. */
export const dilateDisk = (
  mask: Uint8Array,
  width: number,
  height: number,
  radius: number,
  out: Uint8Array = new Uint8Array(mask.length),
  scratch: ScratchArrays = new ScratchArrays()
): Uint8Array => withinDisk(mask, width, height, true, checkRadius(radius), false, out, scratch)

/** Erodes `mask` with the disk of `radius` into `out`, treating outside the image as foreground. */
export const erodeDisk = (
  mask: Uint8Array,
  width: number,
  height: number,
  radius: number,
  out: Uint8Array = new Uint8Array(mask.length),
  scratch: ScratchArrays = new ScratchArrays()
): Uint8Array => {
  return withinDisk(mask, width, height, false, checkRadius(radius), true, out, scratch)
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
