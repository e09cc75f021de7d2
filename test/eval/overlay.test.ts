import { mkdtemp, readFile, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { PNG } from "pngjs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  OverlayInputError,
  renderOverlay,
  renderOverlayPng,
  selectOverlaySlices,
  writeOverlays
} from "../../src/eval/overlay.ts"
import type { Volume } from "../../src/volume/volume.ts"

const volumeOf = (dims: readonly [number, number, number], values: ReadonlyArray<number>): Volume => ({
  dims,
  spacingMm: [1, 1, 1],
  dtype: "uint8",
  data: Uint8Array.from(values)
})

const pixel = (rgba: Uint8Array, index: number): number[] => Array.from(rgba.subarray(index * 4, index * 4 + 4))

describe("renderOverlay", () => {
  // One B-scan, 3 x 1 pixels, gray 100: background, IRF, PED.
  const image = volumeOf([3, 1, 1], [100, 100, 100])
  const prediction = volumeOf([3, 1, 1], [0, 1, 3])

  it("background stays gray", () => {
    expect(pixel(renderOverlay({ image, prediction }, 0), 0)).toEqual([100, 100, 100, 255])
  })

  it("IRF blends red", () => {
    // 0.6 x 100 + 0.4 x 255 = 162.
    expect(pixel(renderOverlay({ image, prediction }, 0, { alpha: 0.4 }), 1)).toEqual([162, 60, 60, 255])
  })

  it("PED blends blue", () => {
    expect(pixel(renderOverlay({ image, prediction }, 0, { alpha: 0.4 }), 2)).toEqual([60, 60, 162, 255])
  })

  it("binary fluid is yellow", () => {
    const binary = volumeOf([3, 1, 1], [0, 1, 0])
    expect(pixel(renderOverlay({ image, prediction: binary }, 0, { scheme: "binary", alpha: 1 }), 1)).toEqual([255, 255, 0, 255])
  })

  it("reference boundary at full opacity", () => {
    // 3 x 3 SRF square: the centre pixel is interior, the others are its boundary.
    const square = volumeOf([3, 3, 1], new Array(9).fill(80))
    const reference = volumeOf([3, 3, 1], new Array(9).fill(2))
    const rgba = renderOverlay({ image: square, reference }, 0)
    expect(pixel(rgba, 0)).toEqual([0, 255, 0, 255])
    expect(pixel(rgba, 4)).toEqual([80, 80, 80, 255])
  })

  it("binary reference boundary is cyan", () => {
    const reference = volumeOf([3, 1, 1], [1, 1, 1])
    const rgba = renderOverlay({ image, reference }, 0, { scheme: "binary" })
    expect(pixel(rgba, 0)).toEqual([0, 255, 255, 255])
  })

  it("contour can be turned off", () => {
    const reference = volumeOf([3, 1, 1], [2, 2, 2])
    expect(pixel(renderOverlay({ image, reference }, 0, { contour: false }), 0)).toEqual([100, 100, 100, 255])
  })

  it("unlabelled reference draws nothing", () => {
    const reference = volumeOf([3, 1, 1], [255, 255, 255])
    expect(pixel(renderOverlay({ image, reference }, 0), 0)).toEqual([100, 100, 100, 255])
  })

  it("mismatched prediction is rejected", () => {
    expect(() => renderOverlay({ image, prediction: volumeOf([2, 1, 1], [0, 0]) }, 0)).toThrow(OverlayInputError)
  })

  it("PNG decodes to the same pixels", () => {
    const decoded = PNG.sync.read(renderOverlayPng({ image, prediction }, 0))
    expect([decoded.width, decoded.height]).toEqual([3, 1])
    expect(Array.from(decoded.data)).toEqual(Array.from(renderOverlay({ image, prediction }, 0)))
  })
})

describe("selectOverlaySlices", () => {
  // Four 2 x 1 B-scans. Fluid voxels per slice: reference 0, 1, 2, 0; prediction 0, 2, 0, 1.
  const image = volumeOf([2, 1, 4], new Array(8).fill(0))
  const reference = volumeOf([2, 1, 4], [0, 0, 1, 0, 2, 3, 0, 0])
  const prediction = volumeOf([2, 1, 4], [0, 0, 1, 1, 0, 0, 0, 2])

  it("most fluid by either volume", () => {
    expect(selectOverlaySlices({ image, reference, prediction }, { mostFluid: 2 }, "retouch")).toEqual([1, 2])
  })

  it("slices without fluid are left out", () => {
    expect(selectOverlaySlices({ image, reference, prediction }, { mostFluid: 10 }, "retouch")).toEqual([1, 2, 3])
  })

  it("ties go to the lower index", () => {
    expect(selectOverlaySlices({ image, reference, prediction }, { mostFluid: 1 }, "retouch")).toEqual([1])
  })

  it("explicit list is sorted", () => {
    expect(selectOverlaySlices({ image }, { slices: [3, 0, 3] }, "retouch")).toEqual([0, 3])
  })

  it("out-of-range slice is rejected", () => {
    expect(() => selectOverlaySlices({ image }, { slices: [4] }, "retouch")).toThrow(/0\.\.3/)
  })

  it("unlabelled voxels are not fluid", () => {
    const unlabelled = volumeOf([2, 1, 4], [255, 255, 0, 0, 0, 0, 0, 0])
    expect(selectOverlaySlices({ image, reference: unlabelled }, { mostFluid: 2 }, "retouch")).toEqual([])
  })
})

describe("writeOverlays", () => {
  let dir = ""
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "octflow-overlay-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("writes one PNG per slice", async () => {
    const image = volumeOf([2, 1, 3], [10, 20, 30, 40, 50, 60])
    const prediction = volumeOf([2, 1, 3], [0, 0, 1, 0, 2, 2])
    const written = await writeOverlays({ image, prediction }, join(dir, "out"), "TEST001", { selection: { mostFluid: 2 } })
    expect(written.map((entry) => entry.z)).toEqual([1, 2])
    expect(written[0].path).toBe(join(dir, "out", "TEST001_z001.png"))
    const decoded = PNG.sync.read(await readFile(written[1].path))
    expect(Array.from(decoded.data.subarray(0, 4))).toEqual([30, 132, 30, 255])
  })
})
