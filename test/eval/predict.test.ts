import { access, mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import "@tensorflow/tfjs-backend-cpu"
import * as tf from "@tensorflow/tfjs-core"
import * as tfl from "@tensorflow/tfjs-layers"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { inferVolume, type Predictor, predictorFromModel } from "../../src/eval/infer.ts"
import { PredictOptionsError, predictVolume } from "../../src/eval/predict.ts"
import { saveModel } from "../../src/ml/model-io.ts"
import { readMetaImage } from "../../src/volume/metaimage.ts"
import { makeVolume, type Volume } from "../../src/volume/volume.ts"

/** Input 6 x 6, output 4 x 4; fluid where the centre channel is above 0 (intensity > 128). */
const thresholdPredictor: Predictor = {
  inputHeight: 6,
  inputWidth: 6,
  outputHeight: 4,
  outputWidth: 4,
  classCount: 2,
  predictBatch: async (x) => {
    const count = x.length / (6 * 6 * 3)
    const output = new Float32Array(count * 4 * 4 * 2)
    for (let n = 0; n < count; n++) {
      for (let i = 0; i < 4; i++) {
        for (let j = 0; j < 4; j++) {
          const fluid = x[(n * 36 + (i + 1) * 6 + j + 1) * 3 + 1] > 0 ? 1 : 0
          output[((n * 4 + i) * 4 + j) * 2] = 1 - fluid
          output[((n * 4 + i) * 4 + j) * 2 + 1] = fluid
        }
      }
    }
    return output
  }
}

/** Builds a 9 x 7 x 3 volume with a bright block in slice 1. */
const makeImage = (): Volume => {
  const image = makeVolume("uint8", [9, 7, 3], [0.01, 0.0039, 0.1])
  image.data.fill(40)
  for (let y = 2; y < 5; y++) for (let x = 3; x < 7; x++) image.data[x + 9 * (y + 7 * 1)] = 220
  return image
}

let dir = ""
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "octflow-predict-"))
  await tf.setBackend("cpu")
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe("predictVolume", () => {
  it("writes labels, overlays and metrics", async () => {
    const image = makeImage()
    const reference = makeVolume("uint8", image.dims, image.spacingMm)
    reference.data.set(image.data.map((value) => (value > 128 ? 1 : 0)))
    const result = await predictVolume({
      predictor: thresholdPredictor,
      volume: image,
      vendor: "Spectralis",
      caseId: "TEST001",
      reference,
      outputBase: join(dir, "labels", "TEST001"),
      overlayDir: join(dir, "overlays")
    })

    expect(result.scheme).toBe("binary")
    expect(Array.from(result.labels.data)).toEqual(Array.from(reference.data))
    const written = await readMetaImage(result.files!.metaImage)
    expect(Array.from(written.data)).toEqual(Array.from(reference.data))
    await access(result.files!.nifti)
    expect(result.overlays.map((overlay) => overlay.z)).toEqual([1])
    expect(result.evaluation!.metrics.classes[0].dice).toBe(1)
  })

  it("loads a model folder", async () => {
    const model = tfl.sequential()
    model.add(
      tfl.layers.conv2d({
        inputShape: [6, 6, 3],
        filters: 4,
        kernelSize: 3,
        activation: "softmax",
        kernelInitializer: tfl.initializers.glorotUniform({ seed: 2 })
      })
    )
    const modelDir = join(dir, "model")
    await saveModel(model, modelDir)
    const image = makeImage()

    const result = await predictVolume({ modelDir, volume: image, vendor: "Cirrus", caseId: "TEST002" })
    const direct = await inferVolume(image, predictorFromModel(model))
    expect(result.scheme).toBe("retouch")
    expect(Array.from(result.labels.data)).toEqual(Array.from(direct.labels.data))
  })

  it("binary model merges a RETOUCH reference", async () => {
    const image = makeImage()
    const reference = makeVolume("uint8", image.dims, image.spacingMm)
    reference.data.set(image.data.map((value) => (value > 128 ? 3 : 0)))
    const result = await predictVolume({ predictor: thresholdPredictor, volume: image, vendor: "Topcon", caseId: "T5", reference })
    expect(result.evaluation!.metrics.classes[0].dice).toBe(1)
  })

  it("missing model is rejected", async () => {
    await expect(predictVolume({ volume: makeImage(), vendor: "Cirrus", caseId: "TEST003" })).rejects.toThrow(
      PredictOptionsError
    )
  })

  it("three classes are rejected", async () => {
    const predictor = { ...thresholdPredictor, classCount: 3 }
    await expect(predictVolume({ predictor, volume: makeImage(), vendor: "Cirrus", caseId: "TEST004" })).rejects.toThrow(
      /4 \(RETOUCH/
    )
  })
})
