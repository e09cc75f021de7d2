import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { augmentPatch } from "../../src/ml/augment.ts"
import type { BatchSampler } from "../../src/ml/trainer.ts"
import {
  centerCrop,
  heightScaleOf,
  InvalidAxialSpacingError,
  InvalidSamplerStateError,
  makePatchSampler,
  NoSampleableSlicesError,
  patchSourceIndices,
  type PatchSamplerOptions,
  type SamplerCase,
  SamplerDtypeError,
  SamplerLabelError,
  SamplerShapeMismatchError
} from "../../src/ml/patches.ts"
import { makeVolume, type Volume } from "../../src/volume/volume.ts"

const width = 24
const height = 40
const depth = 5

/** Options for tiny patches without augmentation or dropping. */
const plain: Partial<PatchSamplerOptions> = {
  patchHeight: 8,
  patchWidth: 6,
  batchSize: 4,
  centredPerSlice: 3,
  randomFraction: 0.4,
  emptyDropProbability: 0,
  augment: { flipProbability: 0, rotateProbability: 0, maxRotationDeg: 10 }
}

interface CaseSpec {
  readonly axialMm?: number
  /** B-scans whose labels are all 255. */
  readonly unlabelled?: ReadonlyArray<number>
  /** Fills the image voxel at (x, y, z). */
  readonly intensity?: (x: number, y: number, z: number) => number
  /** Fills the label voxel of a labelled slice. */
  readonly label?: (x: number, y: number, z: number) => number
  /** ROI rows [top, bottom] for every column. */
  readonly roiRows?: readonly [number, number]
}

const makeCase = (spec: CaseSpec = {}, id = "case"): SamplerCase => {
  const spacing = [0.01, spec.axialMm ?? 0.0039, 0.1] as const
  const image = makeVolume("uint8", [width, height, depth], spacing)
  const roi = makeVolume("uint8", [width, height, depth], spacing)
  const labels = makeVolume("uint8", [width, height, depth], spacing)
  const [top, bottom] = spec.roiRows ?? [10, 29]
  const intensity = spec.intensity ?? ((x, y) => (x + y) % 256)
  const label = spec.label ?? ((x, y) => (y >= 18 && y < 22 && x < 12 ? 1 : 0))
  for (let z = 0; z < depth; z++) {
    const unlabelled = spec.unlabelled?.includes(z) ?? false
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = x + width * (y + height * z)
        image.data[i] = intensity(x, y, z)
        roi.data[i] = y >= top && y <= bottom ? 1 : 0
        labels.data[i] = unlabelled ? 255 : label(x, y, z)
      }
    }
  }
  return { id, vendor: "Spectralis", image, roi, labels }
}

/** Reads the intensity a normalised patch value came from. */
const intensityOf = (value: number): number => Math.round(value * 128 + 128)

const voxel = (volume: Volume, x: number, y: number, z: number): number =>
  volume.data[x + volume.dims[0] * (y + volume.dims[1] * z)]

describe("heightScaleOf", () => {
  const cases = [
    ["Cirrus", 0.00195, 2],
    ["Spectralis", 0.0039, 1],
    ["Topcon-650", 0.0035, 0.0039 / 0.0035],
    ["Topcon-885", 0.0026, 1.5]
  ] as const
  it.each(cases)("%s", (_vendor, spacing, expected) => {
    expect(heightScaleOf(spacing)).toBeCloseTo(expected, 12)
  })
})

describe("centerCrop", () => {
  const labels = Uint8Array.from({ length: 16 }, (_, i) => i)

  it("crops the centre", () => {
    expect(Array.from(centerCrop(labels, 4, 4, 2, 2))).toEqual([5, 6, 9, 10])
  })

  it("odd margin floors the top", () => {
    expect(Array.from(centerCrop(labels, 4, 4, 3, 1))).toEqual([1, 5, 9])
  })

  it("crops each batch item", () => {
    const batch = Uint8Array.from({ length: 32 }, (_, i) => i)
    expect(Array.from(centerCrop(batch, 4, 4, 2, 2))).toEqual([5, 6, 9, 10, 21, 22, 25, 26])
  })

  it("larger output is rejected", () => {
    expect(() => centerCrop(labels, 4, 4, 5, 2)).toThrow(/outH <= 4/)
  })
})

describe("patchSourceIndices", () => {
  const rowsOf = (indices: Int32Array, patchWidth: number, imageWidth: number): number[] =>
    Array.from({ length: indices.length / patchWidth }, (_, r) => Math.floor(indices[r * patchWidth] / imageWidth))
  const columnsOf = (indices: Int32Array, patchWidth: number, imageWidth: number): number[] =>
    Array.from(indices.subarray(0, patchWidth), (index) => index % imageWidth)
  const image = { width: 30, height: 30, heightScale: 1 }
  const still = { y: 10, x: 10, flip: false, angleDeg: 0 }

  it("identity window rows", () => {
    expect(rowsOf(patchSourceIndices(still, image, 4, 2), 2, 30)).toEqual([8, 9, 10, 11])
  })

  it("identity window columns", () => {
    expect(columnsOf(patchSourceIndices(still, image, 4, 2), 2, 30)).toEqual([9, 10])
  })

  it("height scale 2 skips rows", () => {
    const scaled = { ...image, heightScale: 2 }
    expect(rowsOf(patchSourceIndices(still, scaled, 4, 2), 2, 30)).toEqual([7, 9, 11, 13])
  })

  it("top border replicates row 0", () => {
    const top = { ...still, y: 0 }
    expect(rowsOf(patchSourceIndices(top, image, 4, 2), 2, 30)).toEqual([0, 0, 0, 1])
  })

  it("flip reverses columns", () => {
    const flipped = { ...still, flip: true }
    expect(columnsOf(patchSourceIndices(flipped, image, 4, 4), 4, 30)).toEqual([11, 10, 9, 8])
  })

  it("rotation 90 turns rows into columns", () => {
    const turned = { ...still, angleDeg: 90 }
    const indices = patchSourceIndices(turned, image, 4, 4)
    // Content turns clockwise: the top source row ends up in the right-most patch column.
    const rightColumnRows = [0, 1, 2, 3].map((r) => Math.floor(indices[r * 4 + 3] / 30))
    expect(rightColumnRows).toEqual([8, 8, 8, 8])
  })
})

describe("augmentPatch", () => {
  it("flip mirrors image and labels", () => {
    const patch = {
      height: 1,
      width: 3,
      channels: 1,
      image: Float32Array.of(0.1, 0.2, 0.3),
      labels: Uint8Array.of(1, 2, 3)
    }
    const flipped = augmentPatch(patch, { flip: true, angleDeg: 0 })
    expect(Array.from(flipped.labels)).toEqual([3, 2, 1])
    expect(Array.from(flipped.image)).toEqual(Array.from(Float32Array.of(0.3, 0.2, 0.1)))
  })

  it("rotation fills outside with background", () => {
    const patch = { height: 4, width: 4, channels: 1, image: new Float32Array(16).fill(0.5), labels: new Uint8Array(16).fill(2) }
    const rotated = augmentPatch(patch, { flip: false, angleDeg: 45 })
    expect(rotated.labels[0]).toBe(0)
    expect(rotated.image[0]).toBe(-1)
  })
})

describe("makePatchSampler", () => {
  it("batch shapes", () => {
    const batch = makePatchSampler([makeCase()], plain).nextBatch()
    expect(batch.x.length).toBe(4 * 8 * 6 * 3)
    expect(batch.y.length).toBe(4 * 8 * 6)
    expect(batch.presence.length).toBe(4)
  })

  it("centres lie inside the ROI", () => {
    const sample = makeCase({ roiRows: [15, 24] })
    const sampler = makePatchSampler([sample], { ...plain, seed: 5 })
    for (let i = 0; i < 10; i++) {
      for (const descriptor of sampler.nextBatch().descriptors) {
        expect(voxel(sample.roi, descriptor.x, descriptor.y, descriptor.z)).toBe(1)
      }
    }
  })

  it("patch rows stay in the window", () => {
    // Intensity = row, so every patch value names the source row it came from.
    const sample = makeCase({ intensity: (_x, y) => y })
    const sampler = makePatchSampler([sample], { ...plain, seed: 9 })
    for (let i = 0; i < 5; i++) {
      const batch = sampler.nextBatch()
      batch.descriptors.forEach((descriptor, slot) => {
        const rows = Array.from({ length: 8 }, (_, r) => intensityOf(batch.x[(slot * 48 + r * 6) * 3 + 1]))
        const expected = Array.from({ length: 8 }, (_, r) => Math.min(height - 1, Math.max(0, descriptor.y - 4 + r)))
        expect(rows).toEqual(expected)
      })
    }
  })

  it("Cirrus spacing doubles the depth covered", () => {
    const sample = makeCase({ intensity: (_x, y) => y, axialMm: 0.00195 })
    const batch = makePatchSampler([sample], { ...plain, seed: 2 }).nextBatch()
    const descriptor = batch.descriptors[0]
    const rows = Array.from({ length: 8 }, (_, r) => intensityOf(batch.x[(r * 6) * 3 + 1]))
    const expected = Array.from({ length: 8 }, (_, r) => Math.min(height - 1, Math.max(0, descriptor.y - 7 + 2 * r)))
    expect(rows).toEqual(expected)
  })

  it("side channels are the neighbour slices", () => {
    const sample = makeCase({ intensity: (_x, _y, z) => 100 + z })
    const sampler = makePatchSampler([sample], { ...plain, batchSize: 8, seed: 4 })
    for (let i = 0; i < 5; i++) {
      const batch = sampler.nextBatch()
      batch.descriptors.forEach((descriptor, slot) => {
        const channels = [0, 1, 2].map((k) => intensityOf(batch.x[slot * 48 * 3 + k]))
        const below = descriptor.z === 0 ? descriptor.z : descriptor.z - 1
        const above = descriptor.z === depth - 1 ? descriptor.z : descriptor.z + 1
        expect(channels).toEqual([100 + below, 100 + descriptor.z, 100 + above])
      })
    }
  })

  it("unlabelled slices are never sampled", () => {
    const sample = makeCase({ unlabelled: [0, 1, 3, 4] })
    const sampler = makePatchSampler([sample], { ...plain, seed: 1 })
    for (let i = 0; i < 10; i++) {
      const batch = sampler.nextBatch()
      expect(batch.descriptors.map((descriptor) => descriptor.z)).toEqual([2, 2, 2, 2])
      expect(batch.y.includes(255)).toBe(false)
    }
  })

  it("labels stay aligned under augmentation", () => {
    // Intensity encodes the label, so after any flip or rotation both must still agree.
    const label = (x: number, y: number) => ((x * 3 + y * 7) % 11 < 3 ? 1 + ((x + y) % 3) : 0)
    const sample = makeCase({ label, intensity: (x, y) => 10 + 60 * label(x, y) })
    const sampler = makePatchSampler([sample], {
      ...plain,
      seed: 3,
      augment: { flipProbability: 0.5, rotateProbability: 1, maxRotationDeg: 10 }
    })
    for (let i = 0; i < 5; i++) {
      const batch = sampler.nextBatch()
      const decoded = Array.from(batch.y, (_, p) => (intensityOf(batch.x[p * 3 + 1]) - 10) / 60)
      expect(decoded).toEqual(Array.from(batch.y))
    }
  })

  it("alternate stratification", () => {
    const sampler = makePatchSampler([makeCase()], { ...plain, seed: 8 })
    for (let i = 0; i < 5; i++) expect(Array.from(sampler.nextBatch().presence)).toEqual([1, 0, 1, 0])
  })

  it("presence matches the output region", () => {
    const sampler = makePatchSampler([makeCase()], { ...plain, outputHeight: 2, outputWidth: 2, seed: 6 })
    for (let i = 0; i < 5; i++) {
      const batch = sampler.nextBatch()
      const cropped = centerCrop(batch.y, 8, 6, 2, 2)
      for (let slot = 0; slot < 4; slot++) {
        const hasFluid = cropped.subarray(slot * 4, slot * 4 + 4).some((value) => value > 0)
        expect(batch.presence[slot]).toBe(hasFluid ? 1 : 0)
      }
    }
  })

  it("fluid-free data falls back", () => {
    const sampler = makePatchSampler([makeCase({ label: () => 0 })], { ...plain, seed: 8 })
    expect(Array.from(sampler.nextBatch().presence)).toEqual([0, 0, 0, 0])
  })

  it("empty patches are dropped", () => {
    // Fluid only at the bottom rows: with drop probability 1 every patch served contains fluid.
    const sample = makeCase({ label: (_x, y) => (y >= 26 ? 1 : 0) })
    const sampler = makePatchSampler([sample], { ...plain, emptyDropProbability: 1, seed: 12 })
    for (let i = 0; i < 5; i++) expect(Array.from(sampler.nextBatch().presence)).toEqual([1, 1, 1, 1])
  })

  it("drop-all without fluid raises", () => {
    const sampler = makePatchSampler([makeCase({ label: () => 0 })], { ...plain, emptyDropProbability: 1 })
    expect(() => sampler.nextBatch()).toThrow(NoSampleableSlicesError)
  })

  it("same seed, same batches", () => {
    const options = { ...plain, seed: 21, augment: { flipProbability: 0.5, rotateProbability: 0.5, maxRotationDeg: 10 } }
    const a = makePatchSampler([makeCase()], options)
    const b = makePatchSampler([makeCase()], options)
    for (let i = 0; i < 3; i++) {
      const batchA = a.nextBatch()
      const batchB = b.nextBatch()
      expect(batchB.x).toEqual(batchA.x)
      expect(batchB.y).toEqual(batchA.y)
    }
  })

  it("different seed, different batches", () => {
    const a = makePatchSampler([makeCase()], { ...plain, seed: 1 }).nextBatch()
    const b = makePatchSampler([makeCase()], { ...plain, seed: 2 }).nextBatch()
    expect(b.descriptors).not.toEqual(a.descriptors)
  })

  it("state resumes exactly", () => {
    const options = { ...plain, seed: 33, emptyDropProbability: 0.75 }
    const original = makePatchSampler([makeCase()], options)
    original.nextBatch()
    original.nextBatch()
    const saved = JSON.parse(JSON.stringify(original.getState()))
    const expected = [original.nextBatch(), original.nextBatch(), original.nextBatch()]
    const resumed = makePatchSampler([makeCase()], options)
    resumed.setState(saved)
    for (const batch of expected) {
      const next = resumed.nextBatch()
      expect(next.descriptors).toEqual(batch.descriptors)
      expect(next.x).toEqual(batch.x)
    }
  })

  it("malformed state is rejected", () => {
    const sampler = makePatchSampler([makeCase()], plain)
    expect(() => sampler.setState({ ...sampler.getState(), rng: [1, 2] })).toThrow(/rng/)
    expect(() => sampler.setState("epoch 3")).toThrow(InvalidSamplerStateError)
  })

  it("fits the trainer interface", () => {
    const sampler: BatchSampler = makePatchSampler([makeCase()], plain)
    const batch = sampler.nextBatch()
    expect(batch.batchSize).toBe(4)
    expect(batch.x.length).toBe(batch.batchSize * 8 * 6 * 3)
  })

  it("foreign state is rejected", () => {
    const sampler = makePatchSampler([makeCase()], { ...plain, seed: 1 })
    const other = makePatchSampler([makeCase()], { ...plain, seed: 2 })
    expect(() => sampler.setState(other.getState())).toThrow(InvalidSamplerStateError)
  })

  it("epochs advance after every slice", () => {
    const sampler = makePatchSampler([makeCase()], { ...plain, centredPerSlice: 1, randomFraction: 0 })
    expect(sampler.sliceCount).toBe(depth)
    for (let i = 0; i < 3; i++) sampler.nextBatch()
    expect(sampler.epoch()).toBeGreaterThan(0)
  })
})

describe("makePatchSampler input checks", () => {
  it("float image is rejected", () => {
    const sample = makeCase()
    const image = makeVolume("float32", sample.image.dims, sample.image.spacingMm)
    expect(() => makePatchSampler([{ ...sample, image }], plain)).toThrow(SamplerDtypeError)
  })

  it("ROI of another size is rejected", () => {
    const sample = makeCase()
    const roi = makeVolume("uint8", [width, height, depth + 1], sample.roi.spacingMm)
    expect(() => makePatchSampler([{ ...sample, roi }], plain)).toThrow(SamplerShapeMismatchError)
  })

  it("zero axial spacing is rejected", () => {
    expect(() => makePatchSampler([makeCase({ axialMm: 0 })], plain)).toThrow(InvalidAxialSpacingError)
  })

  it("all slices unlabelled is rejected", () => {
    const sample = makeCase({ unlabelled: [0, 1, 2, 3, 4] })
    expect(() => makePatchSampler([sample], plain)).toThrow(NoSampleableSlicesError)
  })

  it("label above classCount is rejected", () => {
    const sample = makeCase({ label: () => 2 })
    expect(() => makePatchSampler([sample], { ...plain, classCount: 2 })).toThrow(SamplerLabelError)
  })

  it("message names the case", () => {
    expect(() => makePatchSampler([makeCase({ axialMm: -1 }, "TRAIN007")], plain)).toThrow(/TRAIN007/)
  })
})

describe("makePatchSampler properties", () => {
  it("invariants hold for random volumes", () => {
    const spec = fc.record({
      seed: fc.integer({ min: 0, max: 2 ** 31 }),
      unlabelled: fc.subarray([0, 1, 2, 3], { minLength: 0, maxLength: 3 }),
      top: fc.integer({ min: 0, max: 30 }),
      span: fc.integer({ min: 0, max: 9 }),
      axialMm: fc.constantFrom(0.00195, 0.0026, 0.0035, 0.0039),
      flip: fc.double({ min: 0, max: 1, noNaN: true }),
      rotate: fc.double({ min: 0, max: 1, noNaN: true })
    })
    fc.assert(
      fc.property(spec, ({ seed, unlabelled, top, span, axialMm, flip, rotate }) => {
        const sample = makeCase({ unlabelled, roiRows: [top, top + span], axialMm })
        const sampler = makePatchSampler([sample], {
          ...plain,
          seed,
          emptyDropProbability: 0.75,
          augment: { flipProbability: flip, rotateProbability: rotate, maxRotationDeg: 10 }
        })
        for (let i = 0; i < 3; i++) {
          const batch = sampler.nextBatch()
          for (const descriptor of batch.descriptors) {
            if (unlabelled.includes(descriptor.z)) return false
            if (voxel(sample.roi, descriptor.x, descriptor.y, descriptor.z) !== 1) return false
            if (Math.abs(descriptor.angleDeg) > 10) return false
          }
          if (batch.y.includes(255)) return false
          if (batch.x.some((value) => value < -1 || value >= 1)) return false
        }
        return true
      }),
      { numRuns: 40 }
    )
  })
})
