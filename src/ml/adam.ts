/**
 * Adam with each variable's update fused into one wasm kernel call (adam_update in
 * src/ml/wasm/kernels.c) on the wasm backend. tfjs-core 4.22's AdamOptimizer runs about 15
 * kernels per variable per step, each allocating a tensor. The fused kernel updates the
 * weights and both moments in place with the same float32 operations in the same order,
 * so the results are bit for bit those of AdamOptimizer. On other backends, or when a
 * variable's buffer is shared with another tensor, it defers to AdamOptimizer.
 *
 * The state (moment variables named `<variable>/m` and `/v`, accBeta1, accBeta2 and the
 * iteration count) is AdamOptimizer's own, so getWeights, setWeights and checkpoints are
 * unchanged.
 */
import * as tf from "@tensorflow/tfjs-core"
import { addressOf, simdKernelsFor } from "./wasm/module.ts"

/** AdamOptimizer's private state, which the fused update reads and advances. */
interface AdamState {
  accBeta1: tf.Variable
  accBeta2: tf.Variable
  accumulatedFirstMoment: Array<{ originalName: string; variable: tf.Variable } | undefined>
  accumulatedSecondMoment: Array<{ originalName: string; variable: tf.Variable } | undefined>
}

interface RefCountingBackend {
  refCount(dataId: object): number
}

export class FusedAdamOptimizer extends tf.AdamOptimizer {
  override applyGradients(variableGradients: Parameters<tf.AdamOptimizer["applyGradients"]>[0]): void {
    const backend = tf.backend()
    const entries = Array.isArray(variableGradients)
      ? variableGradients.map((g) => [g.name, g.tensor] as const)
      : Object.entries(variableGradients).map(([name, tensor]) => [name, tensor] as const)
    const registered = tf.engine().registeredVariables
    const inPlace =
      tf.getBackend() === "wasm" &&
      entries.every(([name, gradient]) => {
        const value = registered[name]
        return (
          value !== undefined &&
          gradient != null &&
          value.dtype === "float32" &&
          gradient.dtype === "float32" &&
          gradient.size === value.size &&
          (backend as unknown as RefCountingBackend).refCount(value.dataId) === 1
        )
      })
    if (!inPlace) {
      super.applyGradients(variableGradients)
      return
    }

    const state = this as unknown as AdamState
    const kernels = simdKernelsFor(backend)
    const [accBeta1, accBeta2] = [state.accBeta1.dataSync()[0]!, state.accBeta2.dataSync()[0]!]
    entries.forEach(([name, gradient], index) => {
      const value = registered[name]!
      state.accumulatedFirstMoment[index] ??= {
        originalName: `${name}/m`,
        variable: tf.tidy(() => tf.zerosLike(value).variable(false))
      }
      state.accumulatedSecondMoment[index] ??= {
        originalName: `${name}/v`,
        variable: tf.tidy(() => tf.zerosLike(value).variable(false))
      }
      kernels.adam_update(
        addressOf(backend, value),
        addressOf(backend, state.accumulatedFirstMoment[index].variable),
        addressOf(backend, state.accumulatedSecondMoment[index].variable),
        addressOf(backend, gradient),
        value.size,
        this.beta1,
        1 - this.beta1,
        this.beta2,
        1 - this.beta2,
        1 - accBeta1,
        1 - accBeta2,
        this.epsilon,
        -this.learningRate
      )
    })
    tf.tidy(() => {
      state.accBeta1.assign(tf.mul(state.accBeta1, this.beta1))
      state.accBeta2.assign(tf.mul(state.accBeta2, this.beta2))
    })
    this.incrementIterations()
  }
}
