/**
 * Segmentation and adversarial losses.
 *
 * Shapes: probabilities p [b, h, w, C] (softmax output), labels y [b, h, w] int32 with
 * values 0..C-1 (0 background, any other class is fluid) or 255 for an unlabelled pixel,
 * which no term counts. With Y the one-hot labels and N_c the labelled pixels of class c:
 *   CE   = mean over classes with N_c > 0 of ( -sum over pixels of Y_c log p_c ) / N_c
 *   Dice = (2 sum f g + eps) / (sum f + sum g + eps), f = 1 - p_0 (soft fluid), g = [y > 0]
 *   loss = 0.5 * (CE + (1 - Dice))
 * Classes absent from the batch are left out of the CE mean, because their term would be
 * 0/0. A batch with no labelled pixel has CE 0. Probabilities are clipped to [1e-7, 1] before the
 * log, as Keras does.
 */
import * as tf from "@tensorflow/tfjs-core"

/** Label value of a pixel with no reference annotation. */
export const UNLABELLED = 255

const probabilityFloor = 1e-7

export interface SegmentationLossOptions {
  /** Smoothing term of the soft Dice; small, so an empty prediction on no fluid scores ~1. */
  readonly diceEpsilon?: number
}

export interface SegmentationLossParts {
  readonly loss: tf.Scalar
  readonly crossEntropy: tf.Scalar
  readonly dice: tf.Scalar
}

/** Computes the class-balanced cross-entropy, the soft fluid Dice and their combined loss. */
export function segmentationLossParts(
  probabilities: tf.Tensor4D,
  labels: tf.Tensor3D,
  options: SegmentationLossOptions = {}
): SegmentationLossParts {
  const epsilon = options.diceEpsilon ?? 1e-6
  return tf.tidy(() => {
    const numClasses = probabilities.shape[3]
    const intLabels = tf.cast(labels, "int32")
    const labelled = tf.notEqual(intLabels, UNLABELLED)
    const labelledFloat = tf.cast(labelled, "float32")
    const cleanLabels = tf.where(labelled, intLabels, tf.zerosLike(intLabels))
    const oneHot = tf.mul(tf.oneHot(cleanLabels, numClasses), tf.expandDims(labelledFloat, -1))

    const logP = tf.log(tf.clipByValue(probabilities, probabilityFloor, 1))
    const perClassSum = tf.neg(tf.sum(tf.mul(oneHot, logP), [0, 1, 2]))
    const counts = tf.sum(oneHot, [0, 1, 2])
    const present = tf.cast(tf.greater(counts, 0), "float32")
    const perClassMean = tf.div(perClassSum, tf.maximum(counts, 1))
    const crossEntropy = tf.div(tf.sum(tf.mul(perClassMean, present)), tf.maximum(tf.sum(present), 1)) as tf.Scalar

    const background = tf.squeeze(tf.slice(probabilities, [0, 0, 0, 0], [-1, -1, -1, 1]), [3])
    const fluidProbability = tf.mul(tf.sub(1, background), labelledFloat)
    const fluidTruth = tf.mul(tf.cast(tf.greater(cleanLabels, 0), "float32"), labelledFloat)
    const intersection = tf.sum(tf.mul(fluidProbability, fluidTruth))
    const dice = tf.div(
      tf.add(tf.mul(2, intersection), epsilon),
      tf.add(tf.add(tf.sum(fluidProbability), tf.sum(fluidTruth)), epsilon)
    ) as tf.Scalar

    const loss = tf.mul(0.5, tf.add(crossEntropy, tf.sub(1, dice))) as tf.Scalar
    return { loss, crossEntropy, dice }
  })
}

/** 0.5 * (class-balanced cross-entropy + (1 - soft fluid Dice)); see the module header. */
export function segmentationLoss(
  probabilities: tf.Tensor4D,
  labels: tf.Tensor3D,
  options: SegmentationLossOptions = {}
): tf.Scalar {
  return tf.tidy(() => segmentationLossParts(probabilities, labels, options).loss)
}

/** Mean binary cross-entropy of discriminator outputs d in (0, 1) against a constant target. */
export function binaryCrossEntropy(d: tf.Tensor, target: 0 | 1): tf.Scalar {
  return tf.tidy(() => {
    const clipped = tf.clipByValue(d, probabilityFloor, 1 - probabilityFloor)
    const terms = target === 1 ? tf.log(clipped) : tf.log(tf.sub(1, clipped))
    return tf.neg(tf.mean(terms)) as tf.Scalar
  })
}

export interface AdversarialWeights {
  /** Weight of the segmentation loss in the generator loss. */
  readonly segmentation: number
  /** Weight of the adversarial term -log D(image, prediction). */
  readonly adversarial: number
}

/**
 * The method's generator weights: one third each. NOTE: the method names only these two
 * thirds, so the remaining third is left out rather than guessed.
 */
export const methodAdversarialWeights: AdversarialWeights = { segmentation: 1 / 3, adversarial: 1 / 3 }

/** Generator loss: w_seg * segmentation loss + w_adv * BCE(D(image, prediction), real). */
export function generatorLoss(
  segmentation: tf.Scalar,
  discriminatorOnFake: tf.Tensor,
  weights: AdversarialWeights = methodAdversarialWeights
): tf.Scalar {
  return tf.tidy(() =>
    tf.add(
      tf.mul(weights.segmentation, segmentation),
      tf.mul(weights.adversarial, binaryCrossEntropy(discriminatorOnFake, 1))
    ) as tf.Scalar
  )
}

/** Discriminator loss: BCE(D(real), 1) + BCE(D(fake), 0), before weight decay. */
export function discriminatorLoss(discriminatorOnReal: tf.Tensor, discriminatorOnFake: tf.Tensor): tf.Scalar {
  return tf.tidy(() =>
    tf.add(binaryCrossEntropy(discriminatorOnReal, 1), binaryCrossEntropy(discriminatorOnFake, 0)) as tf.Scalar
  )
}
