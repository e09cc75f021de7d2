/**
 * A gradient for Mean whose full-size tensor of ones is made by the Fill kernel. tfjs-core
 * 4.22's gradient builds that tensor as a JavaScript array and uploads it on every call,
 * and batch normalisation in training takes two means per layer. The values are the same:
 * dx = (dy broadcast to x's shape) * 1 / n, with n the number of elements averaged into
 * each output. Broadcasting with Tile instead was 30 times slower on wasm (tfjs 4.22).
 */
import * as tf from "@tensorflow/tfjs-core"

interface MeanAttrs {
  readonly axis: number | Array<number>
}

function meanGradient(dy: tf.Tensor, saved: Array<tf.Tensor>, attrs: tf.NamedAttrMap): Record<string, () => tf.Tensor> {
  const x = saved[0]!
  const axes = tf.util.parseAxisParam((attrs as unknown as MeanAttrs).axis, x.shape)
  const keptShape = [...x.shape]
  let reduceSize = 1
  for (const axis of axes) {
    reduceSize *= x.shape[axis]!
    keptShape[axis] = 1
  }
  return { x: () => tf.div(tf.mul(tf.reshape(dy, keptShape), tf.fill(x.shape, 1)), reduceSize) }
}

/** Replaces the Mean gradient for every backend. Registering again does nothing. */
export function registerMeanGradient(): void {
  if (tf.getGradient(tf.Mean)?.gradFunc === meanGradient) return
  tf.registerGradient({ kernelName: tf.Mean, inputsToSave: ["x"], gradFunc: meanGradient as unknown as tf.GradFunc })
}
