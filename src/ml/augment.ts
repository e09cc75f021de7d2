/**
 * Patch augmentation: left-right flip and in-plane rotation, both nearest neighbour so
 * labels stay integral and aligned with the image.
 *
 * Geometry: a patch has `height` rows (depth, y) and `width` columns (x). Its pixel (r, c)
 * covers [r, r + 1) x [c, c + 1), so its centre lies at offset
 * (dr, dc) = (r + 0.5 - height / 2, c + 0.5 - width / 2) from the patch centre. An
 * augmentation maps that offset to a source offset: mirror dc when flipped, then rotate it by
 * -angle, which turns the content by +angle: clockwise as displayed, with rows growing
 * downward.
 */
import type { Rng } from "./rng.ts"

export interface Augmentation {
  readonly flip: boolean
  /** Clockwise rotation of the content as displayed, in degrees; 0 for none. */
  readonly angleDeg: number
}

export interface AugmentOptions {
  /** Probability of a left-right flip (default 0.5). */
  readonly flipProbability: number
  /** Probability of a rotation (default 0.5). */
  readonly rotateProbability: number
  /** Rotation angles are uniform in [-maxRotationDeg, maxRotationDeg] (default 10). */
  readonly maxRotationDeg: number
}

export const defaultAugmentOptions: AugmentOptions = {
  flipProbability: 0.5,
  rotateProbability: 0.5,
  maxRotationDeg: 10
}

export const identityAugmentation: Augmentation = { flip: false, angleDeg: 0 }

/** Draws one augmentation: always two draws from `rng`, then one more when rotating. */
export const drawAugmentation = (rng: Rng, options: AugmentOptions = defaultAugmentOptions): Augmentation => {
  const flip = rng.bernoulli(options.flipProbability)
  const rotate = rng.bernoulli(options.rotateProbability)
  const angleDeg = rotate ? rng.uniform(-options.maxRotationDeg, options.maxRotationDeg) : 0
  return { flip, angleDeg }
}

/**
 * Affine map from a patch pixel (r, c) to the source offset (dy, dx) relative to the patch
 * centre: dy = rowFromR r + rowFromC c + row0 and dx = columnFromR r + columnFromC c + column0.
 */
export interface OffsetCoefficients {
  readonly rowFromR: number
  readonly rowFromC: number
  readonly row0: number
  readonly columnFromR: number
  readonly columnFromC: number
  readonly column0: number
}

/** Computes the affine offset map of an augmentation for a patch of `height` x `width`. */
export const offsetCoefficients = (height: number, width: number, augmentation: Augmentation): OffsetCoefficients => {
  const theta = (augmentation.angleDeg * Math.PI) / 180
  const cos = Math.cos(theta)
  const sin = Math.sin(theta)
  const mirror = augmentation.flip ? -1 : 1
  // dr = r + 0.5 - height / 2 and dc = mirror (c + 0.5 - width / 2), then the inverse
  // rotation in (row, column) coordinates with rows pointing down:
  // dy = cos dr - sin dc, dx = sin dr + cos dc.
  const dr0 = 0.5 - height / 2
  const dc0 = mirror * (0.5 - width / 2)
  return {
    rowFromR: cos,
    rowFromC: -sin * mirror,
    row0: cos * dr0 - sin * dc0,
    columnFromR: sin,
    columnFromC: cos * mirror,
    column0: sin * dr0 + cos * dc0
  }
}

/**
 * Returns a function that maps a patch pixel (r, c) to the offset, in patch pixels, of the
 * source point it samples, relative to the patch centre. Callers scale and translate the
 * offset into their source image.
 */
export const makeOffsetMap = (
  height: number,
  width: number,
  augmentation: Augmentation
): ((r: number, c: number) => readonly [number, number]) => {
  const k = offsetCoefficients(height, width, augmentation)
  return (r, c) => [k.rowFromR * r + k.rowFromC * c + k.row0, k.columnFromR * r + k.columnFromC * c + k.column0]
}

/** An image patch [height, width, channels] (channels fastest) with its labels [height, width]. */
export interface Patch {
  readonly height: number
  readonly width: number
  readonly channels: number
  readonly image: Float32Array
  readonly labels: Uint8Array
}

/**
 * Applies `augmentation` to a patch already cut out. Pixels that map outside the patch
 * take `imageFill` (default -1, intensity 0 after normalisation) and label `labelFill`
 * (default 0, background). The sampler avoids such fills by sampling the source slice
 * directly through `makeOffsetMap`.
 */
export const augmentPatch = (
  patch: Patch,
  augmentation: Augmentation,
  imageFill = -1,
  labelFill = 0
): Patch => {
  const { height, width, channels } = patch
  const image = new Float32Array(patch.image.length)
  const labels = new Uint8Array(patch.labels.length)
  const offsetOf = makeOffsetMap(height, width, augmentation)

  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) {
      const [dy, dx] = offsetOf(r, c)
      const sourceRow = Math.floor(height / 2 + dy)
      const sourceColumn = Math.floor(width / 2 + dx)
      const target = r * width + c
      const inside = sourceRow >= 0 && sourceRow < height && sourceColumn >= 0 && sourceColumn < width
      if (!inside) {
        labels[target] = labelFill
        image.fill(imageFill, target * channels, (target + 1) * channels)
        continue
      }
      const source = sourceRow * width + sourceColumn
      labels[target] = patch.labels[source]
      for (let k = 0; k < channels; k++) image[target * channels + k] = patch.image[source * channels + k]
    }
  }
  return { height, width, channels, image, labels }
}
