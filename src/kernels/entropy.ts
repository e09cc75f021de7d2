/**
 * Local Shannon entropy (bits) of an 8-bit image over a disk footprint, as scikit-image
 * 0.19.3 `filters.rank.entropy` computes it, in far less time.
 *
 * Images are row-major (x fastest, then y). The footprint is the disk `dx^2 + dy^2 <= r^2`
 * centred on the pixel. Only footprint pixels inside the image are counted, so `pop` (the
 * pixel count) shrinks near the border. With `h[v]` the count of value v and `p = h[v] / pop`,
 * `entropy = -sum over v = 0..255 with h[v] > 0 of p * ln(p) / ln(2)`. The terms are summed
 * in float64 in ascending v, the order scikit-image's kernel uses, so the results agree bit
 * for bit wherever this module's log and the C library's `log` agree.
 *
 * NOTE: the log here is correctly rounded (see log.ts), and glibc 2.36's `log` is not for
 * 182 of the 251,695 ratios count / pop with pop <= 709, so a pixel whose histogram uses
 * one of those ratios can differ from scikit-image 0.19.3 in the last bit. The thresholded
 * roi masks are identical on all reference data.
 *
 * The histogram slides along each row: a step right removes the disk's left edge pixels
 * and adds its right edge pixels (2 per disk row), so cost does not grow with the disk's area.
 * Occupied bins are tracked in a 256-bit set, so each pixel's sum visits only nonzero bins.
 * Each term comes from a table of `p * ln(p) / ln(2)` per (pop, count), computed once.
 */
import { checkGeometry, InvalidParameterError } from "./errors.ts"
import { logRoundedToNearest } from "./log.ts"
import { ScratchArrays } from "./scratch.ts"

const LN2 = 0.6931471805599453

/** Returns the half-widths of the disk of `radius`: row dy (index dy + radius) spans dx in [-w, w]. */
export const diskHalfWidths = (radius: number): Int32Array => {
  if (!Number.isInteger(radius) || radius < 0) {
    throw new InvalidParameterError({ parameter: "radius", expected: "an integer >= 0", actual: String(radius) })
  }
  const widths = new Int32Array(2 * radius + 1)
  for (let dy = -radius; dy <= radius; dy++) {
    let halfWidth = 0
    while ((halfWidth + 1) * (halfWidth + 1) + dy * dy <= radius * radius) halfWidth++
    widths[dy + radius] = halfWidth
  }
  return widths
}

/**
 * Tables of entropy terms `p * ln(p) / ln(2)` with `p = count / pop`, one per pop, built on
 * first use. A table is stored in `shared` while that cache has room for it, else here.
 */
export class EntropyTerms {
  private readonly tables: (Float64Array | undefined)[] = []
  private entries = 0

  constructor(
    private readonly maxEntries: number,
    private readonly shared?: EntropyTerms
  ) {}

  forPop(pop: number): Float64Array {
    const cached = this.tables[pop] ?? this.shared?.tables[pop]
    if (cached !== undefined) return cached
    const table = new Float64Array(pop + 1)
    for (let count = 1; count <= pop; count++) {
      const p = count / pop
      table[count] = (p * logRoundedToNearest(p)) / LN2
    }
    if (this.shared !== undefined && this.shared.entries + table.length <= this.shared.maxEntries) {
      this.shared.tables[pop] = table
      this.shared.entries += table.length
    } else {
      this.tables[pop] = table
      this.entries += table.length
    }
    return table
  }
}

// The tables depend only on pop and cost one correctly rounded log per entry, so they are
// kept for the life of the process, up to 2^22 entries (32 MiB). Every pop of a disk of
// radius 15 (at most 709 pixels) needs 252,404 entries.
export const processTerms = new EntropyTerms(1 << 22)

/** Sum of `-terms[count]` over the occupied bins, in ascending bin order. */
export const sumOccupied = (counts: Int32Array, occupied: Int32Array, terms: Float64Array): number => {
  let entropy = 0
  for (let word = 0; word < 8; word++) {
    let bits = occupied[word]
    while (bits !== 0) {
      const lowest = bits & -bits
      const bin = (word << 5) | (31 - Math.clz32(lowest))
      entropy -= terms[counts[bin]]
      bits ^= lowest
    }
  }
  return entropy
}

/**
 * Summed-area table of nonzero pixels, (width + 1) x (height + 1): entry (x, y) counts the
 * nonzero pixels with column < x and row < y.
 */
export const countNonzero = (image: Uint8Array, width: number, height: number, table: Int32Array): Int32Array => {
  const stride = width + 1
  table.fill(0, 0, stride)
  for (let y = 0; y < height; y++) {
    table[(y + 1) * stride] = 0
    let rowCount = 0
    for (let x = 0; x < width; x++) {
      if (image[y * width + x] !== 0) rowCount++
      table[(y + 1) * stride + x + 1] = table[y * stride + x + 1] + rowCount
    }
  }
  return table
}

/**
 * Moves the histogram one step right at an x where every edge pixel lies inside the image,
 * and returns whether any count changed.
 */
const slideInterior = (
  image: Uint8Array,
  counts: Int32Array,
  occupied: Int32Array,
  leavingOffsets: Int32Array,
  enteringOffsets: Int32Array,
  firstRow: number,
  lastRow: number,
  x: number
): boolean => {
  let changed = false
  for (let row = firstRow; row <= lastRow; row++) {
    const leaving = image[leavingOffsets[row] + x]
    const entering = image[enteringOffsets[row] + x]
    // The same value leaving and entering leaves the histogram as it was.
    if (leaving === entering) continue
    changed = true
    if (--counts[leaving] === 0) occupied[leaving >> 5] &= ~(1 << (leaving & 31))
    if (counts[entering]++ === 0) occupied[entering >> 5] |= 1 << (entering & 31)
  }
  return changed
}

/**
 * Returns the local entropy of every pixel of `image` (width x height, values 0..255) over
 * the disk of `radius` (15 in the roi method), as float64 in the image's layout. With
 * `scratch`, the result lives in its "entropy" array and is overwritten by the next call
 * that passes the same scratch.
 */
export const localEntropy = (
  image: Uint8Array,
  width: number,
  height: number,
  radius: number,
  scratch: ScratchArrays = new ScratchArrays()
): Float64Array => {
  checkGeometry("entropy image", image.length, width, height)
  const halfWidths = diskHalfWidths(radius)
  const out = scratch.float64("entropy", width * height)
  const counts = new Int32Array(256)
  const occupied = new Int32Array(8)
  const terms = scratch.object("entropy terms", () => new EntropyTerms(Infinity, processTerms))
  // Per disk row (index dy + radius): where the left edge pixel leaves and the right edge
  // pixel enters, as offsets to which the step's x is added.
  const leavingOffsets = new Int32Array(2 * radius + 1)
  const enteringOffsets = new Int32Array(2 * radius + 1)
  // Steps x with x - 1 - radius >= 0 and x + radius < width touch no border, so pop stays fixed.
  const firstInteriorX = radius + 1
  const lastInteriorX = width - 1 - radius

  const nonzeroBelow = countNonzero(image, width, height, scratch.int32("nonzero table", (width + 1) * (height + 1)))

  // The histogram of the disk at (0, y) slides down from row to row, and each row's
  // histogram starts as a copy of it. It covers columns 0..radius only.
  const rowStartCounts = new Int32Array(256)
  const rowStartOccupied = new Int32Array(8)
  let rowStartPop = 0
  const addToRowStart = (value: number): void => {
    if (rowStartCounts[value]++ === 0) rowStartOccupied[value >> 5] |= 1 << (value & 31)
    rowStartPop++
  }
  const removeFromRowStart = (value: number): void => {
    if (--rowStartCounts[value] === 0) rowStartOccupied[value >> 5] &= ~(1 << (value & 31))
    rowStartPop--
  }
  const lastColumn = Math.min(radius, width - 1)
  for (let dx = 0; dx <= lastColumn; dx++) {
    const halfHeight = halfWidths[dx + radius]
    for (let y = 0; y <= Math.min(halfHeight, height - 1); y++) addToRowStart(image[y * width + dx])
  }

  for (let y = 0; y < height; y++) {
    if (y > 0) {
      // Column dx of the disk spans rows y - h .. y + h with h = halfWidths[dx + radius].
      for (let dx = 0; dx <= lastColumn; dx++) {
        const halfHeight = halfWidths[dx + radius]
        const leavingRow = y - 1 - halfHeight
        if (leavingRow >= 0) removeFromRowStart(image[leavingRow * width + dx])
        const enteringRow = y + halfHeight
        if (enteringRow < height) addToRowStart(image[enteringRow * width + dx])
      }
    }
    counts.set(rowStartCounts)
    occupied.set(rowStartOccupied)
    let pop = rowStartPop
    // Disk rows outside the image contribute nothing.
    const firstRow = Math.max(-radius, -y) + radius
    const lastRow = Math.min(radius, height - 1 - y) + radius
    for (let row = firstRow; row <= lastRow; row++) {
      const rowStart = (y + row - radius) * width
      const halfWidth = halfWidths[row]
      leavingOffsets[row] = rowStart - 1 - halfWidth
      enteringOffsets[row] = rowStart + halfWidth
    }
    const top = (y + firstRow - radius) * (width + 1)
    const bottom = (y + lastRow - radius + 1) * (width + 1)
    let table = terms.forPop(pop)
    let entropy = sumOccupied(counts, occupied, table)
    out[y * width] = entropy

    for (let x = 1; x < width; x++) {
      let changed = false
      if (x >= firstInteriorX && x <= lastInteriorX) {
        // When every pixel of the columns the edges move through is zero, nothing changes.
        const left = x - 1 - radius
        const right = x + radius + 1
        const nonzero =
          nonzeroBelow[bottom + right] - nonzeroBelow[bottom + left] - nonzeroBelow[top + right] + nonzeroBelow[top + left]
        if (nonzero !== 0) changed = slideInterior(image, counts, occupied, leavingOffsets, enteringOffsets, firstRow, lastRow, x)
      } else {
        // Near the left or right border only the edge pixels inside the image move.
        for (let row = firstRow; row <= lastRow; row++) {
          const halfWidth = halfWidths[row]
          if (x - 1 - halfWidth >= 0) {
            const leaving = image[leavingOffsets[row] + x]
            if (--counts[leaving] === 0) occupied[leaving >> 5] &= ~(1 << (leaving & 31))
            pop--
            changed = true
          }
          if (x + halfWidth < width) {
            const entering = image[enteringOffsets[row] + x]
            if (counts[entering]++ === 0) occupied[entering >> 5] |= 1 << (entering & 31)
            pop++
            changed = true
          }
        }
        if (changed) table = terms.forPop(pop)
      }
      // An unchanged histogram has the same entropy, bit for bit.
      if (changed) entropy = sumOccupied(counts, occupied, table)
      out[y * width + x] = entropy
    }
  }
  return out
}
