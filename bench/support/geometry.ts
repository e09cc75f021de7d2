/** Full-size B-scan geometry per vendor, as RETOUCH volumes have it. */
import type { Vendor } from "../../src/volume/dataset.ts"

export interface BenchGeometry {
  readonly width: number
  readonly height: number
  readonly slices: number
  readonly maxValue: 255 | 65535
}

export const fullSizeGeometry: Readonly<Record<Vendor, BenchGeometry>> = {
  Cirrus: { width: 512, height: 1024, slices: 128, maxValue: 255 },
  Spectralis: { width: 512, height: 496, slices: 49, maxValue: 65535 },
  Topcon: { width: 512, height: 885, slices: 128, maxValue: 255 }
}

export const benchVendors: readonly Vendor[] = ["Cirrus", "Spectralis", "Topcon"]
