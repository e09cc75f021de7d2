/**
 * Deterministic synthetic OCT volumes with RETOUCH labels, for tests and benchmarks.
 *
 * A phantom is a layered retina on a smooth curved surface with a foveal pit, plus speckle
 * noise and fluid blobs. The blobs are IRF (intraretinal cysts, label 1), SRF (a lens of
 * fluid above the retinal pigment epithelium, label 2) and PED (the RPE lifted into a dome,
 * label 3). All randomness comes from one seeded PRNG, so the same options give the same bytes.
 *
 * Geometry follows each vendor's RETOUCH volumes (dims x, y, z; spacing in mm):
 * Cirrus 512 x 1024 x 128 uint8 (0.0117, 0.00195, 0.047), Spectralis 512 x 496 x 49 uint16
 * (0.0113, 0.0039, 0.12), Topcon 512 x 885 x 128 uint8 (0.0117, 0.0026, 0.047). `scale`
 * shrinks x and z (and y with `scaleHeight`), widening the spacing so that the scanned
 * area stays the same.
 */
import type { Vendor } from "../volume/dataset.ts"
import { RetouchClass } from "../volume/labels.ts"
import type { DType, Volume } from "../volume/volume.ts"
import { makeRandom, type Random } from "./random.ts"

export interface VendorPhantomGeometry {
  readonly dims: readonly [number, number, number]
  readonly spacingMm: readonly [number, number, number]
  readonly dtype: DType
  /** Intensity of a fully bright voxel. */
  readonly maxValue: number
}

export const phantomGeometry: Readonly<Record<Vendor, VendorPhantomGeometry>> = {
  Cirrus: { dims: [512, 1024, 128], spacingMm: [0.0117, 0.00195, 0.047], dtype: "uint8", maxValue: 255 },
  // RETOUCH Spectralis data is 16-bit; its values are spread over the full 0..65535 range here.
  Spectralis: { dims: [512, 496, 49], spacingMm: [0.0113, 0.0039, 0.12], dtype: "uint16", maxValue: 65535 },
  Topcon: { dims: [512, 885, 128], spacingMm: [0.0117, 0.0026, 0.047], dtype: "uint8", maxValue: 255 }
}

export interface PhantomOptions {
  readonly vendor: Vendor
  readonly seed: number
  /** Factor on x and z sizes (and y with `scaleHeight`), in (0, 1]; default 1. */
  readonly scale?: number
  readonly scaleHeight?: boolean
  /** Add fluid blobs; default true. */
  readonly fluid?: boolean
}

/** One fluid region, in mm from the volume origin. */
export interface FluidBlob {
  readonly label: number
  readonly centerMm: readonly [number, number, number]
  /** Semi-axes along x, y and z in mm. */
  readonly radiiMm: readonly [number, number, number]
}

export interface Phantom {
  readonly oct: Volume
  readonly labels: Volume<Uint8Array>
  readonly blobs: readonly FluidBlob[]
}

/** Band intensities (0..1) and their share of the retina's thickness, from the vitreous down. */
const retinaBands: ReadonlyArray<{ readonly share: number; readonly intensity: number }> = [
  { share: 0.12, intensity: 0.75 }, // nerve fibre layer
  { share: 0.2, intensity: 0.45 }, // ganglion cell and inner plexiform layers
  { share: 0.12, intensity: 0.25 }, // inner nuclear layer
  { share: 0.1, intensity: 0.5 }, // outer plexiform layer
  { share: 0.3, intensity: 0.18 }, // outer nuclear layer
  { share: 0.06, intensity: 0.8 }, // photoreceptor inner/outer segment junction
  { share: 0.1, intensity: 0.95 } // retinal pigment epithelium
]

const VITREOUS = 0.04
const CHOROID = 0.4
const FLUID = 0.03
const PED_INTENSITY = 0.12
const RPE_INTENSITY = 0.95
/** Squared normalised radius of the lifted RPE's outer edge around a PED. */
const LIFTED_RPE_SHELL = 1.35

interface Surfaces {
  /** Inner limiting membrane depth (mm) per column, x fastest then z. */
  readonly ilm: Float64Array
  /** Retina thickness (mm) per column. */
  readonly thickness: Float64Array
}

const buildSurfaces = (random: Random, dims: readonly number[], spacing: readonly number[]): Surfaces => {
  const [width, height, depth] = dims
  const extentX = width * spacing[0]
  const extentY = height * spacing[1]
  const extentZ = depth * spacing[2]
  const foveaX = extentX * random.uniform(0.4, 0.6)
  const foveaZ = extentZ * random.uniform(0.4, 0.6)

  const top = extentY * random.uniform(0.25, 0.35)
  const bowl = extentY * random.uniform(0.05, 0.12)
  const waves = Array.from({ length: 3 }, () => ({
    amplitude: extentY * random.uniform(0.005, 0.02),
    kx: random.uniform(0.5, 2) / extentX,
    kz: random.uniform(0.5, 2) / Math.max(extentZ, 1e-6),
    phase: random.uniform(0, 2 * Math.PI)
  }))
  const baseThickness = Math.min(0.3, extentY * 0.35)

  const ilm = new Float64Array(width * depth)
  const thickness = new Float64Array(width * depth)
  for (let z = 0; z < depth; z++) {
    const zMm = (z + 0.5) * spacing[2]
    for (let x = 0; x < width; x++) {
      const xMm = (x + 0.5) * spacing[0]
      const u = (xMm - foveaX) / extentX
      const v = (zMm - foveaZ) / Math.max(extentZ, 1e-6)
      // Bowl-shaped surface: the centre of the scan lies deeper than its edges, as in many macular B-scans.
      let surface = top + bowl * (1 - 2 * (u * u + v * v))
      for (const wave of waves) surface += wave.amplitude * Math.sin(2 * Math.PI * (wave.kx * xMm + wave.kz * zMm) + wave.phase)

      // Foveal pit: the inner retina thins to about 40% at the centre.
      const radius2 = (xMm - foveaX) ** 2 + (zMm - foveaZ) ** 2
      const pit = Math.exp(-radius2 / (2 * 0.35 * 0.35))
      const index = x + width * z
      thickness[index] = baseThickness * (1 - 0.6 * pit)
      ilm[index] = surface + baseThickness * 0.6 * pit
    }
  }
  return { ilm, thickness }
}

const placeBlobs = (random: Random, dims: readonly number[], spacing: readonly number[], surfaces: Surfaces): FluidBlob[] => {
  const [width, , depth] = dims
  const blobs: FluidBlob[] = []
  const column = (): { x: number; z: number; ilm: number; thickness: number } => {
    const x = random.int(Math.floor(width * 0.15), Math.ceil(width * 0.85))
    const z = random.int(Math.floor(depth * 0.15), Math.ceil(depth * 0.85))
    const index = Math.min(x, width - 1) + width * Math.min(z, depth - 1)
    return { x: (x + 0.5) * spacing[0], z: (z + 0.5) * spacing[2], ilm: surfaces.ilm[index], thickness: surfaces.thickness[index] }
  }
  const zRadius = (mm: number): number => Math.max(mm, spacing[2] * 1.5)

  const irfCount = random.int(1, 6)
  for (let i = 0; i < irfCount; i++) {
    const at = column()
    blobs.push({
      label: RetouchClass.IRF,
      centerMm: [at.x, at.ilm + at.thickness * random.uniform(0.35, 0.6), at.z],
      radiiMm: [random.uniform(0.08, 0.3), at.thickness * random.uniform(0.1, 0.22), zRadius(random.uniform(0.08, 0.3))]
    })
  }
  if (random.uniform(0, 1) < 0.6) {
    const at = column()
    blobs.push({
      label: RetouchClass.SRF,
      centerMm: [at.x, at.ilm + at.thickness * 0.84, at.z],
      radiiMm: [random.uniform(0.3, 0.8), at.thickness * random.uniform(0.06, 0.12), zRadius(random.uniform(0.3, 0.8))]
    })
  }
  if (random.uniform(0, 1) < 0.4) {
    const at = column()
    blobs.push({
      label: RetouchClass.PED,
      centerMm: [at.x, at.ilm + at.thickness, at.z],
      radiiMm: [random.uniform(0.3, 0.7), at.thickness * random.uniform(0.2, 0.45), zRadius(random.uniform(0.3, 0.7))]
    })
  }
  return blobs
}

/** Squared normalised distance of (x, y, z) mm from a blob's centre; inside when < 1. */
const blobDistance2 = (blob: FluidBlob, x: number, y: number, z: number): number =>
  ((x - blob.centerMm[0]) / blob.radiiMm[0]) ** 2 +
  ((y - blob.centerMm[1]) / blob.radiiMm[1]) ** 2 +
  ((z - blob.centerMm[2]) / blob.radiiMm[2]) ** 2

const scaledGeometry = (options: PhantomOptions): { dims: [number, number, number]; spacingMm: [number, number, number] } => {
  const geometry = phantomGeometry[options.vendor]
  const scale = options.scale ?? 1
  if (!(scale > 0 && scale <= 1)) throw new RangeError(`phantom scale must be in (0, 1], got ${scale}`)
  const factors = [scale, options.scaleHeight === true ? scale : 1, scale]
  const dims = geometry.dims.map((size, axis) => Math.max(1, Math.round(size * factors[axis])))
  const spacingMm = geometry.spacingMm.map((spacing, axis) => (spacing * geometry.dims[axis]) / dims[axis])
  return { dims: [dims[0], dims[1], dims[2]], spacingMm: [spacingMm[0], spacingMm[1], spacingMm[2]] }
}

/**
 * Rayleigh speckle factors sqrt(-ln(1 - u)) at the 65536 midpoints u = (i + 0.5) / 65536,
 * so that each 16 random bits give one voxel's speckle without a logarithm.
 */
const speckleTable = Float32Array.from({ length: 65536 }, (_, i) => Math.sqrt(-Math.log(1 - (i + 0.5) / 65536)))

/**
 * Generates a phantom volume and its RETOUCH label volume (every slice labelled). The
 * intensity at a voxel is the band's mean times Rayleigh speckle sqrt(-ln(1 - u)), with u
 * uniform in [0, 1) and quantised to 16 bits. A band of mean 1 maps to 1 / 1.3 of the vendor's
 * maximum on average (the speckle mean is 0.886), and values are clipped to that maximum.
 */
export const generatePhantom = (options: PhantomOptions): Phantom => {
  const random = makeRandom(options.seed)
  const geometry = phantomGeometry[options.vendor]
  const { dims, spacingMm } = scaledGeometry(options)
  const [width, height, depth] = dims
  const surfaces = buildSurfaces(random, dims, spacingMm)
  const blobs = options.fluid === false ? [] : placeBlobs(random, dims, spacingMm, surfaces)

  const voxels = width * height * depth
  const octData = geometry.dtype === "uint16" ? new Uint16Array(voxels) : new Uint8Array(voxels)
  const labelData = new Uint8Array(voxels)
  const bandEdges = new Float64Array(retinaBands.length)
  // Mean intensity and label of one B-scan, x fastest, filled column by column.
  const sliceIntensity = new Float32Array(width * height)
  const sliceLabel = new Uint8Array(width * height)
  const sliceSize = width * height
  const scale = geometry.maxValue / 0.886 / 1.3
  const choroidStep = Math.exp(-spacingMm[1] / 0.4)
  const lastBand = retinaBands.length - 1

  for (let z = 0; z < depth; z++) {
    const zMm = (z + 0.5) * spacingMm[2]
    sliceLabel.fill(RetouchClass.background)
    for (let x = 0; x < width; x++) {
      const xMm = (x + 0.5) * spacingMm[0]
      const column = x + width * z
      const ilm = surfaces.ilm[column]
      const thickness = surfaces.thickness[column]
      let edge = ilm
      for (let band = 0; band < retinaBands.length; band++) {
        edge += retinaBands[band].share * thickness
        bandEdges[band] = edge
      }
      const rpe = ilm + thickness

      // Intensity along the A-scan, before fluid. Depth only grows, so the band index only
      // advances. Below the RPE the choroid fades as CHOROID * exp(-(depth - rpe) / 0.4 mm).
      let band = 0
      let choroid = -1
      for (let y = 0; y < height; y++) {
        const yMm = (y + 0.5) * spacingMm[1]
        let intensity = VITREOUS
        if (yMm >= rpe) {
          // The exponential is evaluated once per column, then stepped by one voxel's decay.
          choroid = choroid < 0 ? CHOROID * Math.exp(-(yMm - rpe) / 0.4) : choroid * choroidStep
          intensity = choroid
        } else if (yMm >= ilm) {
          while (band < lastBand && yMm >= bandEdges[band]) band++
          intensity = retinaBands[band].intensity
        }
        sliceIntensity[x + width * y] = intensity
      }

      for (const blob of blobs) {
        if (Math.abs(xMm - blob.centerMm[0]) > blob.radiiMm[0] || Math.abs(zMm - blob.centerMm[2]) > blob.radiiMm[2]) continue
        const yFirst = Math.max(0, Math.floor((blob.centerMm[1] - blob.radiiMm[1]) / spacingMm[1]) - 1)
        const yLast = Math.min(height - 1, Math.ceil((blob.centerMm[1] + blob.radiiMm[1]) / spacingMm[1]) + 1)
        for (let y = yFirst; y <= yLast; y++) {
          const yMm = (y + 0.5) * spacingMm[1]
          const distance2 = blobDistance2(blob, xMm, yMm, zMm)
          if (blob.label !== RetouchClass.PED) {
            if (distance2 >= 1) continue
            sliceIntensity[x + width * y] = FLUID
            sliceLabel[x + width * y] = blob.label
            continue
          }
          // A PED is the upper half of the ellipsoid, under the RPE lifted into a dome.
          if (yMm > blob.centerMm[1]) continue
          if (distance2 < 1) {
            sliceIntensity[x + width * y] = PED_INTENSITY
            sliceLabel[x + width * y] = blob.label
          } else if (distance2 < LIFTED_RPE_SHELL) {
            sliceIntensity[x + width * y] = RPE_INTENSITY
          }
        }
      }

    }

    // Speckle in memory order; one 32-bit draw gives the speckle of two voxels, low half first.
    const offset = z * sliceSize
    let bits = 0
    for (let i = 0; i < sliceSize; i++) {
      if ((i & 1) === 0) bits = random.nextUint32()
      const speckle = speckleTable[(i & 1) === 0 ? bits & 0xffff : bits >>> 16]
      const value = sliceIntensity[i] * speckle * scale
      octData[offset + i] = value > geometry.maxValue ? geometry.maxValue : value
    }
    labelData.set(sliceLabel, offset)
  }

  return {
    oct: { dims, spacingMm, dtype: geometry.dtype, data: octData },
    labels: { dims, spacingMm, dtype: "uint8", data: labelData },
    blobs
  }
}
