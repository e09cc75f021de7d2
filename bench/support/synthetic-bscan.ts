/**
 * Deterministic synthetic OCT B-scans for the kernel benchmarks: a curved, layered retina
 * with a foveal dip and speckle over a dark, noisy background, so entropy, closing and
 * medians do the same kind of work as on real scans. Slices are row-major (x fastest, then
 * y = depth); a volume stacks them along z with a slowly drifting surface.
 */

/** Returns a seeded mulberry32 generator of uniform numbers in [0, 1). */
const makeUniform = (seed: number): (() => number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Layer intensities (0..1) from the inner surface down, with their share of the thickness. */
const layers = [
  { share: 0.08, intensity: 0.85 },
  { share: 0.2, intensity: 0.55 },
  { share: 0.25, intensity: 0.3 },
  { share: 0.2, intensity: 0.5 },
  { share: 0.12, intensity: 0.25 },
  { share: 0.15, intensity: 0.95 }
]

/**
 * Returns `slices` B-scans of width x height as one uint8 array, intensities 0..`maxValue`
 * (255 for 8-bit vendors, 65535 for Spectralis), stored in a Uint8Array or Uint16Array.
 */
export const syntheticVolume = (
  width: number,
  height: number,
  slices: number,
  seed: number,
  maxValue: 255 | 65535
): Uint8Array | Uint16Array => {
  const uniform = makeUniform(seed)
  const out = maxValue === 255 ? new Uint8Array(width * height * slices) : new Uint16Array(width * height * slices)
  const thickness = 0.28 * height
  for (let z = 0; z < slices; z++) {
    const tilt = 0.04 * height * Math.sin((z / Math.max(slices, 1)) * Math.PI)
    for (let x = 0; x < width; x++) {
      const u = x / width - 0.5
      const fovea = 0.06 * height * Math.exp(-(u * u) / 0.004) * Math.exp(-((z / slices - 0.5) ** 2) / 0.02)
      const surface = 0.3 * height + 0.08 * height * u * u * 4 + tilt + fovea
      for (let y = 0; y < height; y++) {
        const depth = (y - surface) / thickness
        let level = 0.12
        if (depth >= 0 && depth < 1) {
          let start = 0
          for (const layer of layers) {
            if (depth < start + layer.share) {
              level = layer.intensity
              break
            }
            start += layer.share
          }
        } else if (depth >= 1) {
          level = 0.2 * Math.exp(-(depth - 1) * 4) + 0.1
        }
        // Multiplicative speckle: an exponential draw has mean 1, as fully developed speckle does.
        const speckle = -Math.log(1 - uniform())
        const value = Math.min(1, level * (0.45 + 0.55 * speckle))
        out[(z * height + y) * width + x] = Math.round(value * maxValue)
      }
    }
  }
  return out
}
