import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../../src/ml/backend.ts"
import * as tf from "@tensorflow/tfjs-core"
import { buildUnet, buildUnetForInput, centreCropOffsets, cpuConfig, outputSize, paperConfig, UnetConfigError, UnetShapeError } from "../../src/ml/unet.ts"
import { buildDiscriminator } from "../../src/ml/discriminator.ts"
import { tinyConfig } from "./fixtures/synthetic.ts"

describe("outputSize", () => {
  it("paper config 256 x 128", () => {
    expect(outputSize(paperConfig, 256, 128)).toEqual({ height: 164, width: 36 })
  })

  it("cpu config patch", () => {
    expect(outputSize(cpuConfig, cpuConfig.patchHeight, cpuConfig.patchWidth)).toEqual({ height: 88, width: 24 })
  })

  it("tiny config 24 x 24", () => {
    expect(outputSize(tinyConfig, 24, 24)).toEqual({ height: 8, width: 8 })
  })

  it("rejects too small input", () => {
    expect(() => outputSize(paperConfig, 128, 64)).toThrow(UnetShapeError)
  })
})

describe("centreCropOffsets", () => {
  const cases = [
    { from: [10, 10], to: [6, 6], expected: [[2, 2], [2, 2]] },
    { from: [9, 8], to: [6, 5], expected: [[1, 2], [1, 2]] },
    { from: [4, 4], to: [4, 4], expected: [[0, 0], [0, 0]] }
  ] as const
  for (const c of cases) {
    it(`${c.from.join("x")} to ${c.to.join("x")}`, () => {
      const offsets = centreCropOffsets({ height: c.from[0], width: c.from[1] }, { height: c.to[0], width: c.to[1] })
      expect(offsets).toEqual(c.expected)
    })
  }
})

describe("buildUnet", () => {
  beforeAll(async () => {
    await initBackend({ backend: "cpu" })
  })

  it("output shape matches outputSize", () => {
    const model = buildUnet(tinyConfig)
    expect(model.outputs[0]!.shape).toEqual([null, 8, 8, 2])
    model.dispose()
  })

  it("paper config has four classes", () => {
    const model = buildUnet(paperConfig)
    expect(model.outputs[0]!.shape).toEqual([null, 164, 36, 4])
    model.dispose()
  })

  it("uses only built-in layers", () => {
    const model = buildUnet(tinyConfig)
    const builtIn = new Set(["InputLayer", "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D", "Conv2DTranspose", "Dropout", "Cropping2D", "Concatenate", "UpSampling2D", "Softmax"])
    for (const layer of model.layers) expect(builtIn.has(layer.getClassName())).toBe(true)
    model.dispose()
  })

  it("larger input matches patch interiors", () => {
    // 24 x 24 patches give 8 x 8 outputs; a 40 x 32 input is 16 and 8 pixels larger, both
    // multiples of 2^(depth - 1) = 2, so its output is 24 x 16 and output pixel (r, c) of
    // the patch at input offset (dy, dx) is output pixel (r + dy, c + dx) of the large input.
    // The same-padded convolutions see zeros at a patch's border but image pixels inside
    // the large input, so only pixels at least `margin` from the patch output's edge agree.
    const margin = 3
    const small = buildUnet(tinyConfig)
    const large = buildUnetForInput(tinyConfig, small, 40, 32)
    expect(large.outputs[0]!.shape).toEqual([null, 24, 16, 2])
    const image = tf.randomUniform([1, 40, 32, 3], -1, 1, "float32", 5) as tf.Tensor4D
    const whole = large.predict(image) as tf.Tensor4D
    for (const [dy, dx] of [[0, 0], [16, 8], [6, 4]] as const) {
      const patch = tf.slice(image, [0, dy, dx, 0], [1, 24, 24, 3])
      const expected = small.predict(patch) as tf.Tensor4D
      const interior = 8 - 2 * margin
      const actual = tf.slice(whole, [0, dy + margin, dx + margin, 0], [1, interior, interior, 2])
      const reference = tf.slice(expected, [0, margin, margin, 0], [1, interior, interior, 2])
      expect(tf.max(tf.abs(tf.sub(actual, reference))).dataSync()[0]).toBeLessThan(1e-5)
    }
    small.dispose()
    large.dispose()
  })

  it("rejects wrong dropout count", () => {
    expect(() => buildUnet({ ...tinyConfig, dropoutRates: [0.1, 0.2] })).toThrow(UnetConfigError)
  })
})

describe("buildDiscriminator", () => {
  it("scores one value per pair", () => {
    const model = buildDiscriminator({ height: 8, width: 8, numClasses: 2, convLayers: 5, filters: 4, weightDecay: 1e-3, seed: 1 })
    expect(model.outputs[0]!.shape).toEqual([null, 1])
    model.dispose()
  })
})
