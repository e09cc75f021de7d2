/**
 * Measures the peak memory growth of preprocessing or roi-masking one full-size synthetic
 * volume, in a fresh process so earlier work does not hide the peak.
 * Usage: node --expose-gc --import tsx bench/support/memory-probe.ts preprocess|roi VENDOR
 * Prints JSON: the volume's bytes and the peak resident-set growth during the call.
 */
import { histogram256 } from "../../src/kernels/histogram.ts"
import { preprocessVolume } from "../../src/kernels/preprocess.ts"
import { roiVolume } from "../../src/kernels/roi.ts"
import type { Vendor } from "../../src/volume/dataset.ts"
import type { Volume } from "../../src/volume/volume.ts"
import { fullSizeGeometry } from "./geometry.ts"
import { syntheticVolume } from "./synthetic-bscan.ts"

const [kind, vendorArgument] = process.argv.slice(2)
const vendor = vendorArgument as Vendor
const geometry = fullSizeGeometry[vendor]
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with node --expose-gc")

const reference = syntheticVolume(512, 496, 4, 99, 255) as Uint8Array
const referenceHistogram = histogram256(reference)
const data = syntheticVolume(geometry.width, geometry.height, geometry.slices, 1, kind === "roi" ? 255 : geometry.maxValue)
const volume: Volume = {
  dims: [geometry.width, geometry.height, geometry.slices],
  spacingMm: [0.01, 0.002, 0.05],
  dtype: data instanceof Uint16Array ? "uint16" : "uint8",
  data
}
gc()
const rssBefore = process.memoryUsage().rss
const start = performance.now()
const output =
  kind === "roi"
    ? roiVolume(volume as Volume<Uint8Array>)
    : preprocessVolume(volume, vendor, { referenceHistogram })
const seconds = (performance.now() - start) / 1000
// maxRSS is the process's peak resident set in KiB.
const peakRss = process.resourceUsage().maxRSS * 1024
process.stdout.write(
  JSON.stringify({
    kind,
    vendor,
    dims: volume.dims,
    volumeBytes: data.byteLength,
    outputBytes: output.data.byteLength,
    peakGrowthBytes: Math.max(0, peakRss - rssBefore),
    seconds
  }) + "\n"
)
