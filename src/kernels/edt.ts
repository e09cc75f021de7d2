/**
 * Exact squared Euclidean distance transform of a 2D binary image (Felzenszwalb and
 * Huttenlocher, "Distance Transforms of Sampled Functions", 2012), linear in the pixel count.
 *
 * Images are row-major (x fastest, then y), distances in pixels. For every pixel p the
 * output is `min over sites q of (px - qx)^2 + (py - qy)^2`, where the sites are the pixels
 * whose mask value is nonzero (`sites: "foreground"`) or zero (`sites: "background"`);
 * Infinity when the image has no site. Only pixels inside the image are sites. All values
 * are integers below 2^31, so the float64 arithmetic is exact.
 */
import { checkGeometry } from "./errors.ts"

export type SiteKind = "foreground" | "background"

/** Returns the squared distance from every pixel to the nearest site. */
export const squaredDistanceTransform = (
  mask: Uint8Array,
  width: number,
  height: number,
  sites: SiteKind
): Float64Array => {
  checkGeometry("distance transform mask", mask.length, width, height)
  const out = columnPass(mask, width, height, sites === "foreground")
  const row = new Float64Array(width)
  const envelope = new LowerEnvelope(width)
  for (let y = 0; y < height; y++) {
    const offset = y * width
    for (let x = 0; x < width; x++) row[x] = out[offset + x]
    envelope.transform(row, out.subarray(offset, offset + width))
  }
  return out
}

/** Squared distance along y to the nearest site in the same column (Infinity when none). */
const columnPass = (mask: Uint8Array, width: number, height: number, foregroundSites: boolean): Float64Array => {
  const out = new Float64Array(width * height)
  // `gap[x]` is the distance to the nearest site above in column x, or Infinity.
  const gap = new Float64Array(width).fill(Infinity)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x
      const isSite = mask[i] !== 0 === foregroundSites
      gap[x] = isSite ? 0 : gap[x] + 1
      out[i] = gap[x]
    }
  }
  gap.fill(Infinity)
  for (let y = height - 1; y >= 0; y--) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x
      gap[x] = out[i] === 0 ? 0 : gap[x] + 1
      const nearest = Math.min(out[i], gap[x])
      out[i] = nearest * nearest
    }
  }
  return out
}

/** One-dimensional transform `d[q] = min over p of (q - p)^2 + f[p]` via the lower envelope of parabolas. */
class LowerEnvelope {
  private readonly vertices: Int32Array
  private readonly boundaries: Float64Array

  constructor(length: number) {
    this.vertices = new Int32Array(length)
    this.boundaries = new Float64Array(length + 1)
  }

  transform(f: Float64Array, out: Float64Array): void {
    const n = f.length
    const v = this.vertices
    const z = this.boundaries
    // Pixels with f = Infinity have no parabola and are left out of the envelope.
    let k = -1
    for (let q = 0; q < n; q++) {
      const fq = f[q]
      if (fq === Infinity) continue
      if (k < 0) {
        k = 0
        v[0] = q
        z[0] = -Infinity
        z[1] = Infinity
        continue
      }
      let s = intersection(f, q, v[k])
      // z[0] is -Infinity, so k stays >= 0.
      while (s <= z[k]) {
        k--
        s = intersection(f, q, v[k])
      }
      k++
      v[k] = q
      z[k] = s
      z[k + 1] = Infinity
    }
    if (k < 0) {
      out.fill(Infinity)
      return
    }
    k = 0
    for (let q = 0; q < n; q++) {
      while (z[k + 1] < q) k++
      const dx = q - v[k]
      out[q] = dx * dx + f[v[k]]
    }
  }
}

/** Abscissa where the parabolas rooted at q and p (p < q) cross. */
const intersection = (f: Float64Array, q: number, p: number): number =>
  (f[q] + q * q - (f[p] + p * p)) / (2 * q - 2 * p)
