/**
 * The adversarial variant's discriminator: it scores an (image patch, mask) pair as real
 * (reference mask) or fake (the U-Net's probabilities).
 *
 * Input NHWC [batch, outH, outW, 3 + C]: the image patch centre-cropped to the U-Net's
 * output size, concatenated on channels with a C-class mask (one-hot for the reference,
 * softmax for a prediction). Layers: 5 x (3x3 same conv, 64 filters, ReLU), global max pool
 * over space, one dense unit with a sigmoid. Weight decay (L2, 1e-3 by default) is applied
 * by `weightDecayLoss` in the training step, not by layer regularisers, so the saved
 * model.json stays plain.
 */
import * as tf from "@tensorflow/tfjs-core"
import * as tfl from "@tensorflow/tfjs-layers"

export interface DiscriminatorConfig {
  readonly height: number
  readonly width: number
  readonly numClasses: number
  readonly convLayers: number
  readonly filters: number
  /** L2 coefficient: the loss adds weightDecay * sum of squared kernel weights. */
  readonly weightDecay: number
  readonly seed: number
}

export const methodDiscriminator = { convLayers: 5, filters: 64, weightDecay: 1e-3 } as const

export function buildDiscriminator(config: DiscriminatorConfig): tfl.LayersModel {
  const input = tfl.input({ shape: [config.height, config.width, 3 + config.numClasses], name: "pair" })
  let x: tfl.SymbolicTensor = input
  for (let i = 0; i < config.convLayers; i++) {
    x = tfl.layers
      .conv2d({
        filters: config.filters,
        kernelSize: 3,
        padding: "same",
        activation: "relu",
        name: `disc_conv${i + 1}`,
        kernelInitializer: tfl.initializers.glorotUniform({ seed: config.seed + i + 1 })
      })
      .apply(x) as tfl.SymbolicTensor
  }
  x = tfl.layers.globalMaxPooling2d({ name: "disc_max" }).apply(x) as tfl.SymbolicTensor
  const score = tfl.layers
    .dense({
      units: 1,
      activation: "sigmoid",
      name: "disc_score",
      kernelInitializer: tfl.initializers.glorotUniform({ seed: config.seed + config.convLayers + 1 })
    })
    .apply(x) as tfl.SymbolicTensor
  return tfl.model({ inputs: input, outputs: score, name: "discriminator" })
}

/** weightDecay * sum of squared kernel weights (biases excluded, as Keras L2 on kernels). */
export function weightDecayLoss(model: tfl.LayersModel, weightDecay: number): tf.Scalar {
  return tf.tidy(() => {
    // originalName, because a second model in the same process gets suffixed names (kernel_1).
    const kernels = model.trainableWeights.filter((w) => w.originalName.endsWith("/kernel"))
    const squares = kernels.map((w) => tf.sum(tf.square(w.read())))
    return tf.mul(weightDecay, tf.addN(squares)) as tf.Scalar
  })
}

/**
 * Builds the discriminator's input: the image centre-cropped to the mask's height and
 * width, concatenated with the mask on the channel axis.
 */
export function discriminatorPair(image: tf.Tensor4D, mask: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [, h, w] = image.shape
    const [, mh, mw] = mask.shape
    const top = Math.floor((h - mh) / 2)
    const left = Math.floor((w - mw) / 2)
    const cropped = tf.slice(image, [0, top, left, 0], [-1, mh, mw, -1])
    return tf.concat([cropped, mask], 3)
  })
}
