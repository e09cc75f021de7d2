import * as tf from "@tensorflow/tfjs-core"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../../src/ml/backend.ts"
import { binaryCrossEntropy, discriminatorLoss, generatorLoss, segmentationLossParts } from "../../src/ml/loss.ts"

function parts(probabilities: number[][], labels: number[]) {
  const numClasses = probabilities[0]!.length
  const p = tf.tensor4d(probabilities.flat(), [1, 1, probabilities.length, numClasses])
  const y = tf.tensor3d(labels, [1, 1, labels.length], "int32")
  const result = segmentationLossParts(p, y)
  const values = { loss: result.loss.dataSync()[0]!, crossEntropy: result.crossEntropy.dataSync()[0]!, dice: result.dice.dataSync()[0]! }
  tf.dispose([p, y, result.loss, result.crossEntropy, result.dice])
  return values
}

describe("segmentation loss", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
  })

  it("two pixels two classes", () => {
    // CE = (-ln 0.8 - ln 0.6) / 2; Dice = 2 * 0.6 / (0.2 + 0.6 + 1).
    const result = parts([[0.8, 0.2], [0.4, 0.6]], [0, 1])
    expect(result.crossEntropy).toBeCloseTo(0.366985, 5)
    expect(result.dice).toBeCloseTo(2 / 3, 5)
    expect(result.loss).toBeCloseTo(0.5 * (0.366985 + 1 / 3), 5)
  })

  it("absent classes left out", () => {
    // Only class 0 occurs: CE = (-ln 0.5 - ln 0.25) / 2; no fluid so Dice ~ 0.
    const result = parts([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]], [0, 0])
    expect(result.crossEntropy).toBeCloseTo(1.039721, 5)
    expect(result.dice).toBeLessThan(1e-5)
    expect(result.loss).toBeCloseTo(0.5 * (1.039721 + 1), 4)
  })

  it("unlabelled pixels ignored", () => {
    // The first pixel is 255: CE = -ln 0.6, Dice = 1.2 / (0.6 + 1).
    const result = parts([[0.8, 0.2], [0.4, 0.6]], [255, 1])
    expect(result.crossEntropy).toBeCloseTo(0.510826, 5)
    expect(result.dice).toBeCloseTo(0.75, 5)
    expect(result.loss).toBeCloseTo(0.5 * (0.510826 + 0.25), 5)
  })

  it("perfect prediction near zero", () => {
    const result = parts([[1, 0, 0], [0, 0, 1], [0, 1, 0]], [0, 2, 1])
    expect(result.crossEntropy).toBeCloseTo(0, 5)
    expect(result.dice).toBeCloseTo(1, 5)
    expect(result.loss).toBeCloseTo(0, 5)
  })

  it("better fluid overlap lowers loss", () => {
    const worse = parts([[0.6, 0.4], [0.6, 0.4]], [0, 1])
    const better = parts([[0.6, 0.4], [0.3, 0.7]], [0, 1])
    expect(better.dice).toBeGreaterThan(worse.dice)
    expect(better.loss).toBeLessThan(worse.loss)
  })

  it("all unlabelled gives zero cross-entropy", () => {
    const result = parts([[0.5, 0.5]], [255])
    expect(result.crossEntropy).toBe(0)
  })
})

describe("adversarial losses", () => {
  it("bce of one half", () => {
    const d = tf.tensor1d([0.5, 0.5])
    expect(binaryCrossEntropy(d, 1).dataSync()[0]).toBeCloseTo(Math.LN2, 6)
    expect(binaryCrossEntropy(d, 0).dataSync()[0]).toBeCloseTo(Math.LN2, 6)
  })

  it("generator thirds", () => {
    // 0.3 / 3 + (-ln 0.5) / 3
    const value = generatorLoss(tf.scalar(0.3), tf.tensor1d([0.5])).dataSync()[0]!
    expect(value).toBeCloseTo(0.1 + Math.LN2 / 3, 6)
  })

  it("discriminator real and fake", () => {
    // -ln 0.8 + -ln(1 - 0.2)
    const value = discriminatorLoss(tf.tensor1d([0.8]), tf.tensor1d([0.2])).dataSync()[0]!
    expect(value).toBeCloseTo(-2 * Math.log(0.8), 6)
  })
})
