/**
 * A leaner gradient for FusedBatchNorm with per-channel (rank-1) statistics, the case
 * tfjs-layers' BatchNormalization produces. tfjs-core 4.22's gradient tiles the inverse
 * standard deviation to the full input size and makes about a dozen full-size temporaries;
 * this one makes five. Other ranks fall back to the original gradient.
 *
 * Forward (channels last, statistics of shape [C]): y = (x - m) * r * g + b with
 * r = 1 / sqrt(v + eps). With S1 = sum(dy) and S2 = sum(dy * (x - m)) over all axes but the
 * last:
 *   dx = dy * g * r,  dm = -g * r * S1,  dv = -0.5 * g * r^3 * S2,  dg = r * S2,  db = S1.
 */
import * as tf from "@tensorflow/tfjs-core"

interface FusedBatchNormAttrs {
  readonly varianceEpsilon: number
}

let original: tf.GradConfig | undefined

function leanGradient(dy: tf.Tensor, saved: Array<tf.Tensor>, attrs: tf.NamedAttrMap): Record<string, () => tf.Tensor> {
  const [x, mean, variance, scale] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor | undefined]
  if (mean.rank !== 1 || original === undefined) return original!.gradFunc(dy, saved, attrs) as Record<string, () => tf.Tensor>
  const { varianceEpsilon } = attrs as unknown as FusedBatchNormAttrs
  const axes = Array.from({ length: x.rank - 1 }, (_, i) => i)

  const gamma = scale ?? tf.onesLike(mean)
  const inverseStd = tf.rsqrt(tf.add(variance, varianceEpsilon))
  const gammaInverseStd = tf.mul(gamma, inverseStd)
  // Computed here, not inside the closures: the engine runs each closure in its own tidy,
  // which would free a sum cached by one closure before the next could use it.
  const sumDy = tf.sum(dy, axes)
  const sumDyCentred = tf.sum(tf.mul(dy, tf.sub(x, mean)), axes)

  return {
    x: () => tf.mul(dy, gammaInverseStd),
    mean: () => tf.neg(tf.mul(gammaInverseStd, sumDy)),
    variance: () => tf.mul(tf.mul(-0.5, tf.mul(gammaInverseStd, tf.square(inverseStd))), sumDyCentred),
    scale: () => tf.mul(inverseStd, sumDyCentred),
    offset: () => tf.clone(sumDy)
  }
}

/** Replaces the FusedBatchNorm gradient for every backend; registering again does nothing. */
export function registerFusedBatchNormGradient(): void {
  const current = tf.getGradient(tf.FusedBatchNorm)
  if (current?.gradFunc === leanGradient) return
  original = current
  tf.registerGradient({
    kernelName: tf.FusedBatchNorm,
    inputsToSave: ["x", "mean", "variance", "scale"],
    gradFunc: leanGradient as unknown as tf.GradFunc
  })
}
