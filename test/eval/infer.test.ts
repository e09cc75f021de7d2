import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import "@tensorflow/tfjs-backend-cpu"
import * as tf from "@tensorflow/tfjs-core"
import * as tfl from "@tensorflow/tfjs-layers"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  inferVolume,
  InferenceInputError,
  MaskShapeError,
  type Predictor,
  PredictorOutputError,
  predictorFromModel,
  PredictorShapeError,
  tileStarts,
  writeLabelVolume
} from "../../src/eval/infer.ts"
import { buildUnet, cpuConfig, outputSize } from "../../src/ml/unet.ts"
import { readMetaImage } from "../../src/volume/metaimage.ts"
import { readNifti } from "../../src/volume/nifti.ts"
import { makeVolume, type Volume } from "../../src/volume/volume.ts"

/**
 * A predictor with input 12 x 10 and output 8 x 6 (margin 2 on every side) that labels a
 * pixel fluid when the centre channel at the same place is above 0 (intensity > 128).
 */
const thresholdPredictor: Predictor = {
  inputHeight: 12,
  inputWidth: 10,
  outputHeight: 8,
  outputWidth: 6,
  classCount: 2,
  predictBatch: async (x) => {
    const count = x.length / (12 * 10 * 3)
    const output = new Float32Array(count * 8 * 6 * 2)
    for (let n = 0; n < count; n++) {
      for (let i = 0; i < 8; i++) {
        for (let j = 0; j < 6; j++) {
          const fluid = x[(n * 120 + (i + 2) * 10 + j + 2) * 3 + 1] > 0 ? 1 : 0
          output[((n * 8 + i) * 6 + j) * 2] = 1 - fluid
          output[((n * 8 + i) * 6 + j) * 2 + 1] = fluid
        }
      }
    }
    return output
  }
}

const randomImage = (width: number, height: number, depth: number, seed: number, axialMm = 0.0039): Volume => {
  const image = makeVolume("uint8", [width, height, depth], [0.01, axialMm, 0.1])
  let state = seed >>> 0
  for (let i = 0; i < image.data.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    image.data[i] = state >>> 24
  }
  return image
}

describe("tileStarts", () => {
  const cases = [
    ["two tiles", 10, 6, 4, [0, 4]],
    ["image smaller than tile", 5, 6, 4, [0]],
    ["exact fit", 6, 6, 4, [0]],
    ["last flush with edge", 16, 6, 4, [0, 4, 8, 10]]
  ] as const
  it.each(cases)("%s", (_name, size, tile, step, expected) => {
    expect(tileStarts(size, tile, step)).toEqual(expected)
  })
})

describe("inferVolume", () => {
  it("threshold predictor reproduces the threshold", async () => {
    const image = randomImage(23, 17, 3, 1)
    const { labels } = await inferVolume(image, thresholdPredictor, { overlap: 2, batchSize: 3 })
    expect(Array.from(labels.data)).toEqual(Array.from(image.data, (value) => (value > 128 ? 1 : 0)))
  })

  it("keeps dims and spacing", async () => {
    const image = randomImage(7, 5, 2, 2)
    const { labels } = await inferVolume(image, thresholdPredictor)
    expect(labels.dims).toEqual([7, 5, 2])
    expect(labels.spacingMm).toEqual([0.01, 0.0039, 0.1])
  })

  it("height scale round trips rows", async () => {
    // Cirrus spacing: 20 rows shrink to 10 and come back, each row pair taking one row's label.
    const image = randomImage(6, 20, 1, 3, 0.00195)
    const { labels } = await inferVolume(image, thresholdPredictor, { overlap: 0 })
    const expected = Array.from(image.data, (_, i) => {
      const y = Math.floor(i / 6)
      const sourceRow = Math.floor(((Math.floor(((y + 0.5) * 10) / 20) + 0.5) * 20) / 10)
      return image.data[sourceRow * 6 + (i % 6)] > 128 ? 1 : 0
    })
    expect(Array.from(labels.data)).toEqual(expected)
  })

  it("averages overlapping tiles", async () => {
    // Image 10 x 8, output tiles 6 wide with overlap 2: tiles at columns 0 and 4 share 4..5.
    let call = 0
    const predictor: Predictor = {
      ...thresholdPredictor,
      predictBatch: async () => {
        const [background, fluid] = call === 0 ? [0.3, 0.7] : [0.9, 0.1]
        call += 1
        return Float32Array.from({ length: 8 * 6 * 2 }, (_, i) => (i % 2 === 0 ? background : fluid))
      }
    }
    const { labels, scores } = await inferVolume(makeVolume("uint8", [10, 8, 1], [1, 0.0039, 1]), predictor, {
      overlap: 2,
      batchSize: 1
    })
    expect(Array.from(labels.data.subarray(0, 10))).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    expect(scores.values[1]).toBeCloseTo(0.7, 6)
    expect(scores.values[0]).toBeCloseTo(0.7, 6)
  })

  it("slice scores per class", async () => {
    const image = makeVolume("uint8", [6, 8, 2], [1, 0.0039, 1])
    image.data.fill(200, 48)
    const { scores } = await inferVolume(image, thresholdPredictor)
    expect(Array.from(scores.values)).toEqual([0, 0, 1, 1])
  })

  it("mask zeroes labels outside it", async () => {
    const image = randomImage(9, 7, 2, 11)
    const mask = makeVolume("uint8", [9, 7, 2], [0.01, 0.0039, 0.1])
    for (let i = 0; i < mask.data.length; i++) mask.data[i] = i % 9 < 4 ? 1 : 0
    const { labels } = await inferVolume(image, thresholdPredictor, { mask })
    const expected = Array.from(image.data, (value, i) => (i % 9 < 4 && value > 128 ? 1 : 0))
    expect(Array.from(labels.data)).toEqual(expected)
  })

  it("mask leaves masked slices unscored", async () => {
    const image = makeVolume("uint8", [6, 8, 2], [1, 0.0039, 1])
    image.data.fill(200)
    const mask = makeVolume("uint8", [6, 8, 2], [1, 0.0039, 1])
    mask.data.fill(1, 48)
    const { scores } = await inferVolume(image, thresholdPredictor, { mask })
    expect(Array.from(scores.values)).toEqual([0, 0, 1, 1])
  })

  it("mask of other dims is rejected", async () => {
    const mask = makeVolume("uint8", [6, 8, 1])
    await expect(inferVolume(makeVolume("uint8", [6, 8, 2]), thresholdPredictor, { mask })).rejects.toThrow(MaskShapeError)
  })

  it("reports progress per slice", async () => {
    const seen: Array<string> = []
    await inferVolume(randomImage(6, 8, 3, 4), thresholdPredictor, { onProgress: (done, total) => seen.push(`${done}/${total}`) })
    expect(seen).toEqual(["1/3", "2/3", "3/3"])
  })

  it("matches the threshold for random sizes", async () => {
    const spec = fc.record({
      width: fc.integer({ min: 1, max: 30 }),
      height: fc.integer({ min: 1, max: 30 }),
      overlap: fc.integer({ min: 0, max: 5 }),
      batchSize: fc.integer({ min: 1, max: 5 }),
      seed: fc.integer()
    })
    await fc.assert(
      fc.asyncProperty(spec, async ({ width, height, overlap, batchSize, seed }) => {
        const image = randomImage(width, height, 2, seed)
        const { labels } = await inferVolume(image, thresholdPredictor, { overlap, batchSize })
        return labels.data.every((label, i) => label === (image.data[i] > 128 ? 1 : 0))
      }),
      { numRuns: 40 }
    )
  })
})

describe("inferVolume input checks", () => {
  const image = randomImage(6, 8, 1, 5)

  it("wrong output length is rejected", async () => {
    const broken = { ...thresholdPredictor, predictBatch: async () => new Float32Array(3) }
    await expect(inferVolume(image, broken)).rejects.toThrow(PredictorOutputError)
  })

  it("output larger than input is rejected", async () => {
    await expect(inferVolume(image, { ...thresholdPredictor, outputHeight: 20 })).rejects.toThrow(PredictorShapeError)
  })

  it("overlap of a whole tile is rejected", async () => {
    await expect(inferVolume(image, thresholdPredictor, { overlap: 6 })).rejects.toThrow(InferenceInputError)
  })

  it("float volume is rejected", async () => {
    await expect(inferVolume(makeVolume("float32", [6, 8, 1]), thresholdPredictor)).rejects.toThrow(/uint8/)
  })

  it("zero axial spacing is rejected", async () => {
    await expect(inferVolume(randomImage(6, 8, 1, 5, 0), thresholdPredictor)).rejects.toThrow(/axial spacing 0/)
  })
})

describe("predictorFromModel", () => {
  beforeAll(async () => {
    await tf.setBackend("cpu")
  })

  const buildModel = (): tfl.LayersModel => {
    const model = tfl.sequential()
    model.add(
      tfl.layers.conv2d({
        inputShape: [8, 6, 3],
        filters: 2,
        kernelSize: 3,
        padding: "valid",
        activation: "softmax",
        kernelInitializer: tfl.initializers.glorotUniform({ seed: 1 })
      })
    )
    return model
  }

  it("reads sizes from the model", () => {
    const predictor = predictorFromModel(buildModel())
    expect([predictor.inputHeight, predictor.inputWidth, predictor.outputHeight, predictor.outputWidth]).toEqual([8, 6, 6, 4])
    expect(predictor.classCount).toBe(2)
  })

  it("CPU U-Net sizes and labels", async () => {
    const model = buildUnet(cpuConfig)
    const predictor = predictorFromModel(model)
    const expected = outputSize(cpuConfig, cpuConfig.patchHeight, cpuConfig.patchWidth)
    expect([predictor.outputHeight, predictor.outputWidth]).toEqual([expected.height, expected.width])
    const { labels } = await inferVolume(randomImage(30, 90, 1, 7), predictor)
    expect(labels.data.every((label) => label < cpuConfig.numClasses)).toBe(true)
    model.dispose()
  })

  it("single tile matches model.predict", async () => {
    const model = buildModel()
    // A 4 x 6 B-scan is one output tile; the input tile adds a replicated 1-pixel border.
    const image = randomImage(4, 6, 1, 6)
    const { labels } = await inferVolume(image, predictorFromModel(model), { overlap: 0 })
    const tile = new Float32Array(8 * 6 * 3)
    for (let i = 0; i < 8; i++) {
      for (let j = 0; j < 6; j++) {
        const value = (image.data[Math.min(5, Math.max(0, i - 1)) * 4 + Math.min(3, Math.max(0, j - 1))] - 128) / 128
        tile.fill(value, (i * 6 + j) * 3, (i * 6 + j) * 3 + 3)
      }
    }
    const expected = tf.tidy(() => tf.argMax(model.predict(tf.tensor4d(tile, [1, 8, 6, 3])) as tf.Tensor, -1).dataSync())
    expect(Array.from(labels.data)).toEqual(Array.from(expected))
  })
})

describe("writeLabelVolume", () => {
  let dir = ""
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "octflow-infer-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  const labels = { dims: [3, 2, 2], spacingMm: [0.01, 0.0039, 0.12], dtype: "uint8", data: Uint8Array.of(0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 1) } as const

  it("MetaImage round trip", async () => {
    const paths = await writeLabelVolume({ ...labels, dims: [3, 2, 2], spacingMm: [0.01, 0.0039, 0.12] }, join(dir, "case"))
    const read = await readMetaImage(paths.metaImage)
    expect(Array.from(read.data)).toEqual(Array.from(labels.data))
    expect(read.spacingMm).toEqual([0.01, 0.0039, 0.12])
  })

  it("NIfTI round trip", async () => {
    const paths = await writeLabelVolume({ ...labels, dims: [3, 2, 2], spacingMm: [0.01, 0.0039, 0.12] }, join(dir, "case2"))
    const read = await readNifti(paths.nifti)
    expect(Array.from(read.data)).toEqual(Array.from(labels.data))
    expect(read.dims).toEqual([3, 2, 2])
    read.spacingMm.forEach((spacing, axis) => expect(spacing).toBeCloseTo([0.01, 0.0039, 0.12][axis], 6))
  })
})

describe("predictor pool", () => {
  let dir: string
  beforeAll(async () => {
    await tf.setBackend("cpu")
    dir = await mkdtemp(join(tmpdir(), "octflow-pool-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("two threads equal one", async () => {
    const { saveModel } = await import("../../src/ml/model-io.ts")
    const { buildUnetForInput } = await import("../../src/ml/unet.ts")
    const { startPredictorPool } = await import("../../src/eval/predictor-pool.ts")
    const config = { ...cpuConfig, baseFilters: 2 }
    const trained = buildUnet(config)
    await saveModel(trained, join(dir, "model"))
    const local = buildUnetForInput(config, trained, 144, 80)
    const image = randomImage(150, 120, 5, 3)
    const expected = await inferVolume(image, predictorFromModel(local))
    const pool = await startPredictorPool({ threads: 2, backend: "cpu", modelDir: join(dir, "model"), config, tileHeight: 144, tileWidth: 80 })
    try {
      expect(pool.predictor.concurrency).toBe(2)
      const progress: Array<number> = []
      const parallel = await inferVolume(image, pool.predictor, { onProgress: (done) => progress.push(done) })
      expect(Array.from(parallel.labels.data)).toEqual(Array.from(expected.labels.data))
      expect(Array.from(parallel.scores.values)).toEqual(Array.from(expected.scores.values))
      expect(progress).toEqual([1, 2, 3, 4, 5])
    } finally {
      await pool.close()
      trained.dispose()
      local.dispose()
    }
  })

  it("a missing model names the thread", async () => {
    const { startPredictorPool } = await import("../../src/eval/predictor-pool.ts")
    const start = startPredictorPool({ threads: 2, backend: "cpu", modelDir: join(dir, "missing"), config: cpuConfig, tileHeight: 128, tileWidth: 64 })
    await expect(start).rejects.toThrow(/Inference thread \d failed: .*missing/)
  })
})
