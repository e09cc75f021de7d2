/**
 * Exact squared Euclidean distance transform of a 2D binary image (Felzenszwalb and
 * Huttenlocher, "Distance Transforms of Sampled Functions", 2012), linear in the pixel count.
 *
 * Images are row-major (x fastest, then y), distances in pixels. For every pixel p the
 * output is `min over sites q of (px - qx)^2 + (py - qy)^2`, where the sites are the pixels
 * whose mask value is nonzero (`sites: "foreground"`) or zero (`sites: "background"`);
 * Infinity when the image has no site. Only pixels inside the image are sites. Distances are
 * integers below 2^31 and the envelope's crossing points are compared in float64, which
 * represents them closely enough that the minimum found is exact.
 */
import { checkGeometry } from "./errors.ts"
import { ScratchArrays } from "./scratch.ts"

export type SiteKind = "foreground" | "background"

/** Stands for "no site in this column" in the integer column pass. */
const NO_SITE = 0x7fffffff

/** Returns the squared distance from every pixel to the nearest site. */
export const squaredDistanceTransform = (
  mask: Uint8Array,
  width: number,
  height: number,
  sites: SiteKind
): Float64Array => {
  const out = new Float64Array(width * height)
  transformRows(mask, width, height, sites, new ScratchArrays(), (offset, row) => out.set(row, offset))
  return out
}

/**
 * Writes 1 where the squared distance to the nearest site is at most `limit` and 0
 * elsewhere into `out` (a new array by default), without storing the distances.
 */
export const withinSquaredDistance = (
  mask: Uint8Array,
  width: number,
  height: number,
  sites: SiteKind,
  limit: number,
  out: Uint8Array = new Uint8Array(width * height),
  scratch: ScratchArrays = new ScratchArrays()
): Uint8Array => {
  checkGeometry("distance transform output", out.length, width, height)
  transformRows(mask, width, height, sites, scratch, (offset, row) => {
    for (let x = 0; x < width; x++) out[offset + x] = row[x] <= limit ? 1 : 0
  })
  return out
}

/** Runs the transform and hands each finished row (a reused buffer) to `emit`. */
const transformRows = (
  mask: Uint8Array,
  width: number,
  height: number,
  sites: SiteKind,
  scratch: ScratchArrays,
  emit: (offset: number, row: Float64Array) => void
): void => {
  checkGeometry("distance transform mask", mask.length, width, height)
  const columns = columnPass(mask, width, height, sites === "foreground", scratch.int32("column distances", width * height))
  const envelope = new LowerEnvelope(width)
  const row = new Float64Array(width)
  for (let y = 0; y < height; y++) {
    envelope.transform(columns, y * width, row)
    emit(y * width, row)
  }
}

/** Squared distance along y to the nearest site in the same column, or NO_SITE. */
const columnPass = (mask: Uint8Array, width: number, height: number, foregroundSites: boolean, out: Int32Array): Int32Array => {
  // `gap[x]` is the distance to the nearest site above in column x; above `height` means none.
  const none = height + 1
  const gap = new Int32Array(width).fill(none)
  for (let y = 0; y < height; y++) {
    const offset = y * width
    for (let x = 0; x < width; x++) {
      const isSite = (mask[offset + x] !== 0) === foregroundSites
      const distance = isSite ? 0 : Math.min(gap[x] + 1, none)
      gap[x] = distance
      out[offset + x] = distance
    }
  }
  gap.fill(none)
  for (let y = height - 1; y >= 0; y--) {
    const offset = y * width
    for (let x = 0; x < width; x++) {
      const above = out[offset + x]
      const below = above === 0 ? 0 : Math.min(gap[x] + 1, none)
      gap[x] = below
      const nearest = above < below ? above : below
      out[offset + x] = nearest === none ? NO_SITE : nearest * nearest
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

  /** Transforms `f[offset .. offset + out.length)` into `out`. */
  transform(f: Int32Array, offset: number, out: Float64Array): void {
    const n = out.length
    const v = this.vertices
    const z = this.boundaries
    // Pixels whose column contains no site have no parabola and are left out of the envelope.
    let k = -1
    for (let q = 0; q < n; q++) {
      const fq = f[offset + q]
      if (fq === NO_SITE) continue
      if (k < 0) {
        k = 0
        v[0] = q
        z[0] = -Infinity
        z[1] = Infinity
        continue
      }
      const lifted = fq + q * q
      let p = v[k]
      let s = (lifted - (f[offset + p] + p * p)) / (2 * (q - p))
      // z[0] is -Infinity, so k stays >= 0.
      while (s <= z[k]) {
        k--
        p = v[k]
        s = (lifted - (f[offset + p] + p * p)) / (2 * (q - p))
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
      out[q] = dx * dx + f[offset + v[k]]
    }
  }
}
