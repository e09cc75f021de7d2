/**
 * Baseline grayscale JPEG decoder for test fixtures, reproducing libjpeg-turbo's default
 * output (as Pillow 9.4.0 decodes these files): Huffman-coded 8-bit baseline, one component,
 * the ISLOW integer IDCT of jidctint.c (CONST_BITS = 13, PASS1_BITS = 2) and its range
 * limiting. Restart intervals are supported; progressive, arithmetic-coded, 12-bit and
 * multi-component files are rejected.
 *
 * Output: row-major uint8 pixels (x fastest).
 */

export class JpegDecodeError extends Error {
  readonly _tag = "JpegDecodeError"
  constructor(
    readonly path: string,
    readonly reason: string
  ) {
    super(`${path}: cannot decode JPEG: ${reason}. Re-save the image as baseline grayscale JPEG or as PNG`)
  }
}

export interface GrayImage {
  readonly width: number
  readonly height: number
  readonly pixels: Uint8Array
}

const ZIGZAG = [
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
  28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
  47, 55, 62, 63
]

interface HuffmanTable {
  /** Code value by (length, code): `lookup.get(length << 16 | code)`. */
  readonly lookup: Map<number, number>
}

const buildHuffman = (counts: Uint8Array, symbols: Uint8Array): HuffmanTable => {
  const lookup = new Map<number, number>()
  let code = 0
  let k = 0
  for (let length = 1; length <= 16; length++) {
    for (let i = 0; i < counts[length - 1]; i++) lookup.set((length << 16) | code++, symbols[k++])
    code <<= 1
  }
  return { lookup }
}

class BitReader {
  private position: number
  private buffer = 0
  private bits = 0

  constructor(
    private readonly bytes: Uint8Array,
    start: number,
    private readonly path: string
  ) {
    this.position = start
  }

  get offset(): number {
    return this.position
  }

  readBit(): number {
    if (this.bits === 0) {
      if (this.position >= this.bytes.length) throw new JpegDecodeError(this.path, "entropy-coded data ends early")
      let byte = this.bytes[this.position++]
      if (byte === 0xff) {
        const next = this.bytes[this.position]
        // 0xFF 0x00 is a stuffed 0xFF. Any other marker ends the data, and libjpeg pads with zero bits.
        if (next === 0x00) this.position++
        else {
          this.position--
          byte = 0
        }
      }
      this.buffer = byte
      this.bits = 8
    }
    this.bits--
    return (this.buffer >> this.bits) & 1
  }

  receive(length: number): number {
    let value = 0
    for (let i = 0; i < length; i++) value = (value << 1) | this.readBit()
    return value
  }

  decode(table: HuffmanTable): number {
    let code = 0
    for (let length = 1; length <= 16; length++) {
      code = (code << 1) | this.readBit()
      const symbol = table.lookup.get((length << 16) | code)
      if (symbol !== undefined) return symbol
    }
    throw new JpegDecodeError(this.path, `invalid Huffman code at byte ${this.position}`)
  }

  /** Skips to the restart marker that must follow, and empties the bit buffer. */
  restart(): void {
    this.bits = 0
    while (this.position + 1 < this.bytes.length) {
      if (this.bytes[this.position] === 0xff && this.bytes[this.position + 1] >= 0xd0 && this.bytes[this.position + 1] <= 0xd7) {
        this.position += 2
        return
      }
      this.position++
    }
    throw new JpegDecodeError(this.path, "missing restart marker")
  }
}

// Value of a `length`-bit magnitude category, as JPEG's EXTEND computes it.
const extend = (value: number, length: number): number => (value < 1 << (length - 1) ? value - (1 << length) + 1 : value)

const FIX_0_298631336 = 2446
const FIX_0_390180644 = 3196
const FIX_0_541196100 = 4433
const FIX_0_765366865 = 6270
const FIX_0_899976223 = 7373
const FIX_1_175875602 = 9633
const FIX_1_501321110 = 12299
const FIX_1_847759065 = 15137
const FIX_1_961570560 = 16069
const FIX_2_053119869 = 16819
const FIX_2_562915447 = 20995
const FIX_3_072711026 = 25172
const CONST_BITS = 13
const PASS1_BITS = 2

// Products exceed 2^31, so the arithmetic stays in exact float64 integers and shifts are divisions.
const descale = (value: number, shift: number): number => Math.floor((value + 2 ** (shift - 1)) / 2 ** shift)

/** libjpeg's post-IDCT range limit: the descaled value masked to 10 bits, then centred and clamped. */
const rangeLimit = (value: number): number => {
  const masked = value & 1023
  if (masked < 128) return masked + 128
  if (masked < 512) return 255
  if (masked < 896) return 0
  return masked - 896
}

/** Computes one 1D ISLOW butterfly over eight values at `stride` into the eight undescaled outputs. */
const islow1d = (s: ArrayLike<number>, base: number, stride: number, out: number[]): void => {
  let z2 = s[base + 2 * stride]
  let z3 = s[base + 6 * stride]
  let z1 = (z2 + z3) * FIX_0_541196100
  let tmp2 = z1 + z3 * -FIX_1_847759065
  let tmp3 = z1 + z2 * FIX_0_765366865
  z2 = s[base]
  z3 = s[base + 4 * stride]
  let tmp0 = (z2 + z3) * 2 ** CONST_BITS
  let tmp1 = (z2 - z3) * 2 ** CONST_BITS
  const tmp10 = tmp0 + tmp3
  const tmp13 = tmp0 - tmp3
  const tmp11 = tmp1 + tmp2
  const tmp12 = tmp1 - tmp2

  tmp0 = s[base + 7 * stride]
  tmp1 = s[base + 5 * stride]
  tmp2 = s[base + 3 * stride]
  tmp3 = s[base + stride]
  z1 = tmp0 + tmp3
  z2 = tmp1 + tmp2
  z3 = tmp0 + tmp2
  let z4 = tmp1 + tmp3
  const z5 = (z3 + z4) * FIX_1_175875602
  tmp0 *= FIX_0_298631336
  tmp1 *= FIX_2_053119869
  tmp2 *= FIX_3_072711026
  tmp3 *= FIX_1_501321110
  z1 *= -FIX_0_899976223
  z2 *= -FIX_2_562915447
  z3 *= -FIX_1_961570560
  z4 *= -FIX_0_390180644
  z3 += z5
  z4 += z5
  tmp0 += z1 + z3
  tmp1 += z2 + z4
  tmp2 += z2 + z3
  tmp3 += z1 + z4

  out[0] = tmp10 + tmp3
  out[7] = tmp10 - tmp3
  out[1] = tmp11 + tmp2
  out[6] = tmp11 - tmp2
  out[2] = tmp12 + tmp1
  out[5] = tmp12 - tmp1
  out[3] = tmp13 + tmp0
  out[4] = tmp13 - tmp0
}

/** Inverse DCT of one block of dequantized coefficients (natural order) into 64 samples. */
const idctIslow = (coefficients: Float64Array, samples: Uint8Array): void => {
  const workspace = new Float64Array(64)
  const out: number[] = new Array(8)
  for (let column = 0; column < 8; column++) {
    islow1d(coefficients, column, 8, out)
    for (let row = 0; row < 8; row++) workspace[row * 8 + column] = descale(out[row], CONST_BITS - PASS1_BITS)
  }
  for (let row = 0; row < 8; row++) {
    islow1d(workspace, row * 8, 1, out)
    for (let column = 0; column < 8; column++) {
      samples[row * 8 + column] = rangeLimit(descale(out[column], CONST_BITS + PASS1_BITS + 3))
    }
  }
}

/** Decodes a baseline grayscale JPEG. `path` only names the file in errors. */
export const decodeGrayJpeg = (bytes: Uint8Array, path: string): GrayImage => {
  const fail = (reason: string): never => {
    throw new JpegDecodeError(path, reason)
  }
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) fail("no SOI marker at the start")
  const quantTables: Uint16Array[] = []
  const dcTables: HuffmanTable[] = []
  const acTables: HuffmanTable[] = []
  let width = 0
  let height = 0
  let quantIndex = 0
  let restartInterval = 0
  let position = 2

  while (position < bytes.length) {
    if (bytes[position] !== 0xff) fail(`expected a marker at byte ${position}`)
    const marker = bytes[position + 1]
    position += 2
    if (marker === 0xff) {
      position--
      continue
    }
    if (marker === 0xd9) break
    const length = (bytes[position] << 8) | bytes[position + 1]
    const segment = bytes.subarray(position + 2, position + length)
    if (marker === 0xdb) {
      let i = 0
      while (i < segment.length) {
        const precision = segment[i] >> 4
        const id = segment[i] & 15
        i++
        const table = new Uint16Array(64)
        for (let k = 0; k < 64; k++) {
          table[ZIGZAG[k]] = precision === 0 ? segment[i + k] : (segment[i + 2 * k] << 8) | segment[i + 2 * k + 1]
        }
        i += precision === 0 ? 64 : 128
        quantTables[id] = table
      }
    } else if (marker === 0xc4) {
      let i = 0
      while (i < segment.length) {
        const tableClass = segment[i] >> 4
        const id = segment[i] & 15
        const counts = segment.subarray(i + 1, i + 17)
        const total = counts.reduce((sum, count) => sum + count, 0)
        const table = buildHuffman(counts, segment.subarray(i + 17, i + 17 + total))
        if (tableClass === 0) dcTables[id] = table
        else acTables[id] = table
        i += 17 + total
      }
    } else if (marker === 0xc0 || marker === 0xc1) {
      if (segment[0] !== 8) fail(`sample precision ${segment[0]} (expected 8)`)
      height = (segment[1] << 8) | segment[2]
      width = (segment[3] << 8) | segment[4]
      if (segment[5] !== 1) fail(`${segment[5]} components (expected 1, grayscale)`)
      quantIndex = segment[8]
    } else if (marker === 0xdd) {
      restartInterval = (segment[0] << 8) | segment[1]
    } else if (marker === 0xda) {
      if (width === 0) fail("scan before the frame header")
      const dc = dcTables[segment[2] >> 4] ?? fail("missing DC Huffman table")
      const ac = acTables[segment[2] & 15] ?? fail("missing AC Huffman table")
      const quant = quantTables[quantIndex] ?? fail("missing quantization table")
      const reader = new BitReader(bytes, position + length, path)
      const pixels = decodeScan(reader, width, height, dc, ac, quant, restartInterval, path)
      return { width, height, pixels }
    } else if (marker >= 0xc2 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      fail(`frame type 0x${marker.toString(16)} (only baseline is supported)`)
    }
    position += length
  }
  return fail("no scan found")
}

const decodeScan = (
  reader: BitReader,
  width: number,
  height: number,
  dc: HuffmanTable,
  ac: HuffmanTable,
  quant: Uint16Array,
  restartInterval: number,
  path: string
): Uint8Array => {
  const blocksAcross = Math.ceil(width / 8)
  const blocksDown = Math.ceil(height / 8)
  const pixels = new Uint8Array(width * height)
  const coefficients = new Float64Array(64)
  const samples = new Uint8Array(64)
  let predictor = 0
  for (let block = 0; block < blocksAcross * blocksDown; block++) {
    if (restartInterval > 0 && block > 0 && block % restartInterval === 0) {
      reader.restart()
      predictor = 0
    }
    coefficients.fill(0)
    const dcLength = reader.decode(dc)
    predictor += dcLength === 0 ? 0 : extend(reader.receive(dcLength), dcLength)
    coefficients[0] = predictor * quant[0]
    for (let k = 1; k < 64; ) {
      const symbol = reader.decode(ac)
      const run = symbol >> 4
      const size = symbol & 15
      if (size === 0) {
        if (run !== 15) break
        k += 16
        continue
      }
      k += run
      if (k > 63) throw new JpegDecodeError(path, "AC coefficient index past 63")
      coefficients[ZIGZAG[k]] = extend(reader.receive(size), size) * quant[ZIGZAG[k]]
      k++
    }
    idctIslow(coefficients, samples)
    const blockX = (block % blocksAcross) * 8
    const blockY = Math.floor(block / blocksAcross) * 8
    for (let row = 0; row < 8 && blockY + row < height; row++) {
      for (let column = 0; column < 8 && blockX + column < width; column++) {
        pixels[(blockY + row) * width + blockX + column] = samples[row * 8 + column]
      }
    }
  }
  return pixels
}
