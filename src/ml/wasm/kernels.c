/*
 * Convolution, data-movement and optimiser kernels for TensorFlow.js's wasm backend,
 * compiled to WebAssembly with 128-bit SIMD (see build.ts beside this file), once as is
 * and once with OCTFLOW_RELAXED_SIMD defined, which lets the convolutions' multiply-adds
 * use relaxed SIMD (see madd). The Adam update never does, so it stays bit for bit equal
 * to tfjs's.
 *
 * The module imports the backend's own linear memory, so every pointer argument is an
 * address in the tfjs heap and tensors are read and written in place. For that reason
 * the module must own no memory: no static data, no string literals and no locals whose
 * address is taken (those would live on a shadow stack at a fixed address that belongs to
 * the tfjs heap). build.ts checks the compiled module for a data section and for any use
 * of the stack pointer.
 *
 * Layouts are TensorFlow's: activations NHWC, filters HWIO ([fh][fw][in][out]), all
 * float32, innermost index last.
 *
 * Matrix products use a register tile of 4 rows by 8 columns (8 accumulators of 4 lanes).
 * The right-hand matrix is packed into panels of 8 columns, [panel][row][8], zero-padded
 * past the last column, so the inner loop loads 8 consecutive floats per row. The
 * left-hand rows are read in place through 4 row pointers and broadcast one float at a
 * time, so a convolution needs no im2col copy.
 */
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))

#ifdef OCTFLOW_RELAXED_SIMD
typedef float f32x4 __attribute__((vector_size(16)));

/*
 * a * b + c as relaxed SIMD's f32x4.relaxed_madd, which the engine may fuse (V8 does on
 * x86-64 CPUs with FMA3): one instruction instead of two in the inner loops.
 */
static inline v128_t madd(v128_t a, v128_t b, v128_t c) {
  return (v128_t)__builtin_wasm_relaxed_madd_f32x4((f32x4)a, (f32x4)b, (f32x4)c);
}
#else
/* a * b + c with separate rounding. */
static inline v128_t madd(v128_t a, v128_t b, v128_t c) {
  return wasm_f32x4_add(wasm_f32x4_mul(a, b), c);
}
#endif

/*
 * Returns madd(a, b, c) in lane 0: with a = b = 1 + 2^-12 and c = -(1 + 2^-11) it is 2^-24
 * when the multiply-add is fused and 0 when it is rounded twice.
 */
EXPORT(madd_probe)
float madd_probe(float a, float b, float c) {
  return wasm_f32x4_extract_lane(madd(wasm_f32x4_splat(a), wasm_f32x4_splat(b), wasm_f32x4_splat(c)), 0);
}

/* Loads `count` (0..4) floats into the low lanes of a vector, the rest zero, without reading past them. */
static inline v128_t load_partial(const float* p, int count) {
  if (count >= 4) return wasm_v128_load(p);
  v128_t v = wasm_f32x4_splat(0.0f);
  if (count > 0) v = wasm_f32x4_replace_lane(v, 0, p[0]);
  if (count > 1) v = wasm_f32x4_replace_lane(v, 1, p[1]);
  if (count > 2) v = wasm_f32x4_replace_lane(v, 2, p[2]);
  return v;
}

/* Stores the low `count` (0..4) lanes of a vector. */
static inline void store_partial(float* p, v128_t v, int count) {
  if (count >= 4) {
    wasm_v128_store(p, v);
    return;
  }
  if (count > 0) p[0] = wasm_f32x4_extract_lane(v, 0);
  if (count > 1) p[1] = wasm_f32x4_extract_lane(v, 1);
  if (count > 2) p[2] = wasm_f32x4_extract_lane(v, 2);
}

/* Loads 8 floats of a row as two vectors when `count` (1..8) of them are valid. */
static inline void load_row8(const float* p, int count, v128_t* low, v128_t* high) {
  if (count >= 8) {
    *low = wasm_v128_load(p);
    *high = wasm_v128_load(p + 4);
    return;
  }
  *low = load_partial(p, count);
  *high = load_partial(p + 4, count - 4);
}

static inline void store_row8(float* p, v128_t low, v128_t high, int count) {
  if (count >= 8) {
    wasm_v128_store(p, low);
    wasm_v128_store(p + 4, high);
    return;
  }
  store_partial(p, low, count);
  store_partial(p + 4, high, count - 4);
}

/*
 * Packs the matrix B[r][c] = src[r * rowStride + c * colStride] (rows x cols) into panels
 * of 8 columns: dst[p][r][q] = B[r][8p + q], zero where 8p + q >= cols. dst needs room for
 * ceil(cols / 8) * rows * 8 floats.
 */
EXPORT(pack_panels)
void pack_panels(const float* src, float* dst, int rows, int cols, int rowStride, int colStride) {
  int panels = (cols + 7) / 8;
  for (int p = 0; p < panels; p++) {
    for (int r = 0; r < rows; r++) {
      const float* row = src + r * rowStride;
      for (int q = 0; q < 8; q++) {
        int c = p * 8 + q;
        *dst++ = c < cols ? row[c * colStride] : 0.0f;
      }
    }
  }
}

/*
 * Packs the filter of the input gradient of a stride-1 convolution. For a filter w of
 * shape [fh][fw][c][k], the gradient is a convolution of dy (k channels) with
 * w'[i][j][kk][cc] = w[fh-1-i][fw-1-j][cc][kk], whose rows (i, j, kk) have c columns.
 * dst is that filter packed as by pack_panels: ceil(c / 8) * fh * fw * k * 8 floats.
 */
EXPORT(pack_flipped_transposed)
void pack_flipped_transposed(const float* w, float* dst, int fh, int fw, int c, int k) {
  int spatial = fh * fw;
  int panels = (c + 7) / 8;
  for (int p = 0; p < panels; p++) {
    for (int s = 0; s < spatial; s++) {
      const float* source = w + (spatial - 1 - s) * c * k;
      for (int kk = 0; kk < k; kk++) {
        for (int q = 0; q < 8; q++) {
          int cc = p * 8 + q;
          *dst++ = cc < c ? source[cc * k + kk] : 0.0f;
        }
      }
    }
  }
}

/*
 * Copies a window of an NHWC tensor with zero fill: dst[b][y][x][:] = src[b][y - top][x - left][:]
 * where that pixel is inside src, else 0, for dst of size n x dstH x dstW x c. Negative
 * top or left crop. This is both the zero padding before a valid convolution and the crop
 * after one.
 */
EXPORT(copy_window)
void copy_window(const float* src, float* dst, int n, int srcH, int srcW, int c, int dstH, int dstW, int top, int left) {
  int xBegin = left > 0 ? left : 0;
  int xEnd = srcW + left < dstW ? srcW + left : dstW;
  if (xEnd < xBegin) xEnd = xBegin;
  int rowFloats = dstW * c;
  for (int b = 0; b < n; b++) {
    for (int y = 0; y < dstH; y++) {
      float* out = dst + ((b * dstH + y) * dstW) * c;
      int sy = y - top;
      if (sy < 0 || sy >= srcH || xEnd == xBegin) {
        for (int i = 0; i < rowFloats; i++) out[i] = 0.0f;
        continue;
      }
      for (int i = 0; i < xBegin * c; i++) out[i] = 0.0f;
      const float* in = src + ((b * srcH + sy) * srcW + (xBegin - left)) * c;
      int run = (xEnd - xBegin) * c;
      float* target = out + xBegin * c;
      int i = 0;
      for (; i + 4 <= run; i += 4) wasm_v128_store(target + i, wasm_v128_load(in + i));
      for (; i < run; i++) target[i] = in[i];
      for (int j = xEnd * c; j < rowFloats; j++) out[j] = 0.0f;
    }
  }
}

/*
 * Scatters per-pixel blocks into an image: tmp is [n][h][w][fh * fw * c] and
 * dst[b][p * fh + i][q * fw + j][:] = tmp[b][p][q][(i * fw + j) * c : ... + c]. dst is
 * [n][dstH][dstW][c]; rows and columns past h * fh or w * fw are zero-filled, and blocks
 * that fall outside dst are dropped.
 */
EXPORT(scatter_blocks)
void scatter_blocks(const float* tmp, float* dst, int n, int h, int w, int fh, int fw, int c, int dstH, int dstW) {
  int rowFloats = dstW * c;
  for (int b = 0; b < n; b++) {
    for (int y = 0; y < dstH; y++) {
      float* out = dst + ((b * dstH + y) * dstW) * c;
      int p = y / fh;
      int i = y - p * fh;
      int covered = 0;
      if (p < h) {
        int columns = w * fw < dstW ? w * fw : dstW;
        for (int x = 0; x < columns; x++) {
          int q = x / fw;
          int j = x - q * fw;
          const float* block = tmp + (((b * h + p) * w + q) * fh * fw + i * fw + j) * c;
          float* target = out + x * c;
          int k = 0;
          for (; k + 4 <= c; k += 4) wasm_v128_store(target + k, wasm_v128_load(block + k));
          for (; k < c; k++) target[k] = block[k];
        }
        covered = columns * c;
      }
      for (int k = covered; k < rowFloats; k++) out[k] = 0.0f;
    }
  }
}

/* An output pixel's position (image b, row oh, column ow), advanced without division. */
typedef struct {
  int b;
  int oh;
  int ow;
} pixel_cursor;

static inline void advance(pixel_cursor* cursor, int outH, int outW) {
  if (++cursor->ow < outW) return;
  cursor->ow = 0;
  if (++cursor->oh < outH) return;
  cursor->oh = 0;
  cursor->b++;
}

/* Address of the first input float under the cursor's output pixel. */
static inline const float* receptive_base(const float* x, pixel_cursor cursor, int inH, int inW, int inC, int strideH, int strideW) {
  return x + ((cursor.b * inH + cursor.oh * strideH) * inW + cursor.ow * strideW) * inC;
}

/*
 * One step of a 4 x 8 register tile (accumulators c0l, c0h ... c3h): row r gains the
 * float at address a_r times the 8 columns (low, high).
 */
#define TILE_STEP(low, high, a0, a1, a2, a3)  \
  {                                           \
    v128_t a = wasm_v128_load32_splat(a0);    \
    c0l = madd(a, low, c0l);                  \
    c0h = madd(a, high, c0h);                 \
    a = wasm_v128_load32_splat(a1);           \
    c1l = madd(a, low, c1l);                  \
    c1h = madd(a, high, c1h);                 \
    a = wasm_v128_load32_splat(a2);           \
    c2l = madd(a, low, c2l);                  \
    c2h = madd(a, high, c2h);                 \
    a = wasm_v128_load32_splat(a3);           \
    c3l = madd(a, low, c3l);                  \
    c3h = madd(a, high, c3h);                 \
  }

/* Accumulates `depth` steps of a 4 x 8 tile: rows a0..a3 (consecutive floats) times `depth` packed rows of b. */
#define TILE_STEPS(depth)                                                               \
  for (int k = 0; k < (depth); k++, b += 8) {                                           \
    TILE_STEP(wasm_v128_load(b), wasm_v128_load(b + 4), a0 + k, a1 + k, a2 + k, a3 + k) \
  }

/*
 * Valid 2-D convolution of x [n][inH][inW][inC] with a filter packed by pack_panels (rows
 * i, j, ci; columns the outC output channels) into y [n][outH][outW][outC]:
 *   y[b][oh][ow][co] = bias[co] + sum over i, j, ci of
 *                      x[b][oh * strideH + i * dilationH][ow * strideW + j * dilationW][ci] * w[i][j][ci][co]
 * then max(0, .) when relu is set. bias may be 0 (null) for none. Padding is the caller's:
 * pad x with copy_window first. Without column dilation, the fw * inC floats under one
 * filter row are contiguous, so they form one run of the inner loop.
 */
EXPORT(conv2d)
void conv2d(const float* x, const float* packed, const float* bias, float* y, int n, int inH, int inW, int inC, int outH,
            int outW, int outC, int fh, int fw, int strideH, int strideW, int dilationH, int dilationW, int relu) {
  int pixels = n * outH * outW;
  int depth = fh * fw * inC;
  int panels = (outC + 7) / 8;
  int rowRun = dilationW == 1 ? fw * inC : inC;
  int runsPerRow = dilationW == 1 ? 1 : fw;
  v128_t zero = wasm_f32x4_splat(0.0f);
  pixel_cursor cursor = {0, 0, 0};
  for (int m = 0; m < pixels; m += 4) {
    int rows = pixels - m < 4 ? pixels - m : 4;
    /* Rows past the end repeat the last pixel; their results are not stored. */
    const float* base0 = receptive_base(x, cursor, inH, inW, inC, strideH, strideW);
    if (rows > 1) advance(&cursor, outH, outW);
    const float* base1 = receptive_base(x, cursor, inH, inW, inC, strideH, strideW);
    if (rows > 2) advance(&cursor, outH, outW);
    const float* base2 = receptive_base(x, cursor, inH, inW, inC, strideH, strideW);
    if (rows > 3) advance(&cursor, outH, outW);
    const float* base3 = receptive_base(x, cursor, inH, inW, inC, strideH, strideW);
    advance(&cursor, outH, outW);
    for (int p = 0; p < panels; p++) {
      int columns = outC - p * 8 < 8 ? outC - p * 8 : 8;
      v128_t initLow = zero;
      v128_t initHigh = zero;
      if (bias) load_row8(bias + p * 8, columns, &initLow, &initHigh);
      v128_t c0l = initLow, c0h = initHigh, c1l = initLow, c1h = initHigh;
      v128_t c2l = initLow, c2h = initHigh, c3l = initLow, c3h = initHigh;
      const float* b = packed + p * depth * 8;
      for (int i = 0; i < fh; i++) {
        for (int j = 0; j < runsPerRow; j++) {
          int offset = (i * dilationH * inW + j * dilationW) * inC;
          const float* a0 = base0 + offset;
          const float* a1 = base1 + offset;
          const float* a2 = base2 + offset;
          const float* a3 = base3 + offset;
          TILE_STEPS(rowRun)
        }
      }
      if (relu) {
        c0l = wasm_f32x4_max(c0l, zero);
        c0h = wasm_f32x4_max(c0h, zero);
        c1l = wasm_f32x4_max(c1l, zero);
        c1h = wasm_f32x4_max(c1h, zero);
        c2l = wasm_f32x4_max(c2l, zero);
        c2h = wasm_f32x4_max(c2h, zero);
        c3l = wasm_f32x4_max(c3l, zero);
        c3h = wasm_f32x4_max(c3h, zero);
      }
      float* out = y + m * outC + p * 8;
      store_row8(out, c0l, c0h, columns);
      if (rows > 1) store_row8(out + outC, c1l, c1h, columns);
      if (rows > 2) store_row8(out + 2 * outC, c2l, c2h, columns);
      if (rows > 3) store_row8(out + 3 * outC, c3l, c3h, columns);
    }
  }
}

/* Offset in x of filter row r = (i, j, ci) relative to a receptive field's first float. */
static inline int filter_row_offset(int r, int fw, int inC, int inW, int dilationH, int dilationW) {
  int i = r / (fw * inC);
  int rest = r - i * fw * inC;
  int j = rest / inC;
  int ci = rest - j * inC;
  return (i * dilationH * inW + j * dilationW) * inC + ci;
}

/*
 * Declares `rows` (1..4, the filter rows left from r) and offset0..offset3, the x offsets of
 * filter rows r..r + 3; rows past the end repeat the last one, whose results are not stored.
 */
#define FILTER_ROW_OFFSETS(r)                                                                         \
  int rows = depth - (r) < 4 ? depth - (r) : 4;                                                        \
  int offset0 = filter_row_offset((r), fw, inC, inW, dilationH, dilationW);                            \
  int offset1 = filter_row_offset((r) + (rows > 1 ? 1 : 0), fw, inC, inW, dilationH, dilationW);        \
  int offset2 = filter_row_offset((r) + (rows > 2 ? 2 : rows - 1), fw, inC, inW, dilationH, dilationW); \
  int offset3 = filter_row_offset((r) + (rows > 3 ? 3 : rows - 1), fw, inC, inW, dilationH, dilationW);

/*
 * Filter gradient of a valid convolution (the same shapes and attributes as conv2d):
 *   dw[i][j][ci][co] = sum over b, oh, ow of
 *                      x[b][oh * strideH + i * dilationH][ow * strideW + j * dilationW][ci] * dy[b][oh][ow][co]
 * into dw [fh][fw][inC][outC], overwritten. outC must be a multiple of 4 (the caller
 * falls back otherwise). Output rows are processed in blocks sized to stay in cache,
 * accumulating into dw between blocks.
 */
EXPORT(conv2d_backprop_filter)
void conv2d_backprop_filter(const float* x, const float* dy, float* dw, int n, int inH, int inW, int inC, int outH, int outW,
                            int outC, int fh, int fw, int strideH, int strideW, int dilationH, int dilationW) {
  int depth = fh * fw * inC;
  int panels = (outC + 7) / 8;
  int imageRows = n * outH;
  /* About 512 KiB of dy and x rows per block, within a 1 MiB L2 cache. */
  int floatsPerRow = outW * outC + strideH * inW * inC;
  int blockRows = 131072 / (floatsPerRow > 0 ? floatsPerRow : 1);
  if (blockRows < 1) blockRows = 1;
  for (int firstRow = 0; firstRow < imageRows; firstRow += blockRows) {
    int lastRow = firstRow + blockRows < imageRows ? firstRow + blockRows : imageRows;
    int accumulate = firstRow > 0;
    for (int r = 0; r < depth; r += 4) {
      FILTER_ROW_OFFSETS(r)
      int consecutive = offset1 == offset0 + 1 && offset2 == offset0 + 2 && offset3 == offset0 + 3;
      for (int p = 0; p < panels; p++) {
        int columns = outC - p * 8 < 8 ? outC - p * 8 : 8;
        v128_t zero = wasm_f32x4_splat(0.0f);
        v128_t c0l = zero, c0h = zero, c1l = zero, c1h = zero, c2l = zero, c2h = zero, c3l = zero, c3h = zero;
        float* out = dw + r * outC + p * 8;
        if (accumulate) {
          load_row8(out, columns, &c0l, &c0h);
          if (rows > 1) load_row8(out + outC, columns, &c1l, &c1h);
          if (rows > 2) load_row8(out + 2 * outC, columns, &c2l, &c2h);
          if (rows > 3) load_row8(out + 3 * outC, columns, &c3l, &c3h);
        }
        int b = firstRow / outH;
        int oh = firstRow - b * outH;
        for (int row = firstRow; row < lastRow; row++) {
          const float* xRow = x + ((b * inH + oh * strideH) * inW) * inC;
          if (++oh == outH) {
            oh = 0;
            b++;
          }
          const float* g = dy + row * outW * outC + p * 8;
          int step = strideW * inC;
          if (columns == 8 && consecutive) {
            /* The 4 filter rows are consecutive input channels: one address, constant offsets. */
            const float* p = xRow + offset0;
            for (int ow = 0; ow < outW; ow++, g += outC, p += step) {
              TILE_STEP(wasm_v128_load(g), wasm_v128_load(g + 4), p, p + 1, p + 2, p + 3)
            }
          } else if (columns == 8) {
            for (int ow = 0; ow < outW; ow++, g += outC, xRow += step) {
              TILE_STEP(wasm_v128_load(g), wasm_v128_load(g + 4), xRow + offset0, xRow + offset1, xRow + offset2, xRow + offset3)
            }
          } else {
            /* A last panel of 4 columns: outC is a multiple of 4. */
            for (int ow = 0; ow < outW; ow++, g += outC, xRow += step) {
              v128_t gl = wasm_v128_load(g);
              c0l = madd(wasm_v128_load32_splat(xRow + offset0), gl, c0l);
              c1l = madd(wasm_v128_load32_splat(xRow + offset1), gl, c1l);
              c2l = madd(wasm_v128_load32_splat(xRow + offset2), gl, c2l);
              c3l = madd(wasm_v128_load32_splat(xRow + offset3), gl, c3l);
            }
          }
        }
        store_row8(out, c0l, c0h, columns);
        if (rows > 1) store_row8(out + outC, c1l, c1h, columns);
        if (rows > 2) store_row8(out + 2 * outC, c2l, c2h, columns);
        if (rows > 3) store_row8(out + 3 * outC, c3l, c3h, columns);
      }
    }
  }
}

/*
 * The filter gradient of conv2d_backprop_filter for outC a multiple of 8, for wide layers,
 * where the direct loop streams dy and x with long strides. Blocks of `blockPixels` output
 * pixels are packed first: dy into panels [outC / 8][blockPixels][8], and for each group of
 * 4 filter rows the 4 input floats under every pixel into [blockPixels][4], so the inner
 * loop reads both contiguously. scratch needs blockPixels * (outC + 4) floats.
 */
EXPORT(conv2d_backprop_filter_packed)
void conv2d_backprop_filter_packed(const float* x, const float* dy, float* dw, float* scratch, int blockPixels, int n, int inH,
                                   int inW, int inC, int outH, int outW, int outC, int fh, int fw, int strideH, int strideW,
                                   int dilationH, int dilationW) {
  int depth = fh * fw * inC;
  int panels = outC / 8;
  int pixels = n * outH * outW;
  float* packedDy = scratch;
  float* packedX = scratch + blockPixels * outC;
  pixel_cursor blockStart = {0, 0, 0};
  for (int first = 0; first < pixels; first += blockPixels) {
    int count = pixels - first < blockPixels ? pixels - first : blockPixels;
    int accumulate = first > 0;
    for (int m = 0; m < count; m++) {
      const float* source = dy + (first + m) * outC;
      for (int p = 0; p < panels; p++) {
        float* target = packedDy + (p * blockPixels + m) * 8;
        wasm_v128_store(target, wasm_v128_load(source + p * 8));
        wasm_v128_store(target + 4, wasm_v128_load(source + p * 8 + 4));
      }
    }
    for (int r = 0; r < depth; r += 4) {
      FILTER_ROW_OFFSETS(r)
      pixel_cursor cursor = blockStart;
      for (int m = 0; m < count; m++) {
        const float* base = receptive_base(x, cursor, inH, inW, inC, strideH, strideW);
        float* target = packedX + m * 4;
        target[0] = base[offset0];
        target[1] = base[offset1];
        target[2] = base[offset2];
        target[3] = base[offset3];
        advance(&cursor, outH, outW);
      }
      for (int p = 0; p < panels; p++) {
        v128_t zero = wasm_f32x4_splat(0.0f);
        v128_t c0l = zero, c0h = zero, c1l = zero, c1h = zero, c2l = zero, c2h = zero, c3l = zero, c3h = zero;
        float* out = dw + r * outC + p * 8;
        if (accumulate) {
          load_row8(out, 8, &c0l, &c0h);
          if (rows > 1) load_row8(out + outC, 8, &c1l, &c1h);
          if (rows > 2) load_row8(out + 2 * outC, 8, &c2l, &c2h);
          if (rows > 3) load_row8(out + 3 * outC, 8, &c3l, &c3h);
        }
        const float* g = packedDy + p * blockPixels * 8;
        const float* values = packedX;
        for (int m = 0; m < count; m++, g += 8, values += 4) {
          TILE_STEP(wasm_v128_load(g), wasm_v128_load(g + 4), values, values + 1, values + 2, values + 3)
        }
        store_row8(out, c0l, c0h, 8);
        if (rows > 1) store_row8(out + outC, c1l, c1h, 8);
        if (rows > 2) store_row8(out + 2 * outC, c2l, c2h, 8);
        if (rows > 3) store_row8(out + 3 * outC, c3l, c3h, 8);
      }
    }
    for (int m = 0; m < count; m++) advance(&blockStart, outH, outW);
  }
}

/*
 * One Adam update of `count` weights in place, with the operations and rounding of
 * tfjs-core 4.22's AdamOptimizer.applyGradients, each step rounded to float32:
 *   m = m * beta1 + g * oneMinusBeta1
 *   v = v * beta2 + (g * g) * oneMinusBeta2
 *   w = ((m / oneMinusAccBeta1) / (sqrt(v / oneMinusAccBeta2) + epsilon)) * negativeLearningRate + w
 * The scalars are the float32 values tfjs uses (1 - beta1 rounded to float32, and so on).
 */
EXPORT(adam_update)
void adam_update(float* w, float* m, float* v, const float* g, int count, float beta1, float oneMinusBeta1, float beta2,
                 float oneMinusBeta2, float oneMinusAccBeta1, float oneMinusAccBeta2, float epsilon,
                 float negativeLearningRate) {
  v128_t b1 = wasm_f32x4_splat(beta1);
  v128_t ob1 = wasm_f32x4_splat(oneMinusBeta1);
  v128_t b2 = wasm_f32x4_splat(beta2);
  v128_t ob2 = wasm_f32x4_splat(oneMinusBeta2);
  v128_t oab1 = wasm_f32x4_splat(oneMinusAccBeta1);
  v128_t oab2 = wasm_f32x4_splat(oneMinusAccBeta2);
  v128_t eps = wasm_f32x4_splat(epsilon);
  v128_t nlr = wasm_f32x4_splat(negativeLearningRate);
  int i = 0;
  for (; i + 4 <= count; i += 4) {
    v128_t gv = wasm_v128_load(g + i);
    v128_t mv = wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(m + i), b1), wasm_f32x4_mul(gv, ob1));
    v128_t vv = wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(v + i), b2), wasm_f32x4_mul(wasm_f32x4_mul(gv, gv), ob2));
    wasm_v128_store(m + i, mv);
    wasm_v128_store(v + i, vv);
    v128_t mhat = wasm_f32x4_div(mv, oab1);
    v128_t vhat = wasm_f32x4_div(vv, oab2);
    v128_t step = wasm_f32x4_mul(wasm_f32x4_div(mhat, wasm_f32x4_add(wasm_f32x4_sqrt(vhat), eps)), nlr);
    wasm_v128_store(w + i, wasm_f32x4_add(step, wasm_v128_load(w + i)));
  }
  for (; i < count; i++) {
    float gi = g[i];
    float mi = m[i] * beta1 + gi * oneMinusBeta1;
    float vi = v[i] * beta2 + (gi * gi) * oneMinusBeta2;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / oneMinusAccBeta1;
    float vhat = vi / oneMinusAccBeta2;
    w[i] = (mhat / (__builtin_sqrtf(vhat) + epsilon)) * negativeLearningRate + w[i];
  }
}

/*
 * Copies `count` runs of `length` 32-bit elements: run r goes from src + r * srcStride to
 * dst + r * dstStride (strides in elements), bit for bit. Runs must not overlap.
 */
EXPORT(copy_runs32)
void copy_runs32(const int* src, int srcStride, int* dst, int dstStride, int length, int count) {
  for (int r = 0; r < count; r++, src += srcStride, dst += dstStride) {
    int i = 0;
    for (; i + 8 <= length; i += 8) {
      wasm_v128_store(dst + i, wasm_v128_load(src + i));
      wasm_v128_store(dst + i + 4, wasm_v128_load(src + i + 4));
    }
    for (; i + 4 <= length; i += 4) wasm_v128_store(dst + i, wasm_v128_load(src + i));
    for (; i < length; i++) dst[i] = src[i];
  }
}

/*
 * Column sums of a rows x cols matrix: out[j] = sum over i of x[i * cols + j]. Rows are
 * added in blocks of 256 whose sums are then added, which keeps the rounding error of long
 * columns near that of pairwise summation.
 */
EXPORT(sum_rows)
void sum_rows(const float* x, float* out, int rows, int cols) {
  for (int j = 0; j < cols; j++) out[j] = 0.0f;
  for (int first = 0; first < rows; first += 256) {
    int last = first + 256 < rows ? first + 256 : rows;
    int j = 0;
    for (; j + 4 <= cols; j += 4) {
      v128_t block = wasm_f32x4_splat(0.0f);
      const float* p = x + first * cols + j;
      for (int i = first; i < last; i++, p += cols) block = wasm_f32x4_add(block, wasm_v128_load(p));
      wasm_v128_store(out + j, wasm_f32x4_add(wasm_v128_load(out + j), block));
    }
    for (; j < cols; j++) {
      float block = 0.0f;
      const float* p = x + first * cols + j;
      for (int i = first; i < last; i++, p += cols) block += *p;
      out[j] += block;
    }
  }
}

/*
 * Gradient of max pooling (NHWC): dx = 0, then each dy value is added at the first maximum
 * of its window in row-major order, comparing with >, so NaN never wins and a window of
 * only NaN passes nothing. Windows start at (p * strideH - padTop, q * strideW - padLeft)
 * and positions outside x are skipped.
 */
EXPORT(max_pool_grad)
void max_pool_grad(const float* x, const float* dy, float* dx, int n, int inH, int inW, int c, int outH, int outW, int fh, int fw,
                   int strideH, int strideW, int padTop, int padLeft) {
  int total = n * inH * inW * c;
  for (int i = 0; i < total; i++) dx[i] = 0.0f;
  for (int b = 0; b < n; b++) {
    const float* image = x + b * inH * inW * c;
    float* gradient = dx + b * inH * inW * c;
    for (int p = 0; p < outH; p++) {
      int y0 = p * strideH - padTop;
      int y1 = y0 + fh < inH ? y0 + fh : inH;
      if (y0 < 0) y0 = 0;
      for (int q = 0; q < outW; q++) {
        int x0 = q * strideW - padLeft;
        int x1 = x0 + fw < inW ? x0 + fw : inW;
        if (x0 < 0) x0 = 0;
        const float* g = dy + ((b * outH + p) * outW + q) * c;
        int ch = 0;
        for (; ch + 4 <= c; ch += 4) {
          v128_t best = wasm_f32x4_splat(-__builtin_inff());
          v128_t where = wasm_i32x4_splat(-1);
          for (int yy = y0; yy < y1; yy++) {
            for (int xx = x0; xx < x1; xx++) {
              int offset = (yy * inW + xx) * c + ch;
              v128_t value = wasm_v128_load(image + offset);
              v128_t greater = wasm_f32x4_gt(value, best);
              best = wasm_v128_bitselect(value, best, greater);
              where = wasm_v128_bitselect(wasm_i32x4_splat(offset), where, greater);
            }
          }
          int w0 = wasm_i32x4_extract_lane(where, 0);
          int w1 = wasm_i32x4_extract_lane(where, 1);
          int w2 = wasm_i32x4_extract_lane(where, 2);
          int w3 = wasm_i32x4_extract_lane(where, 3);
          if (w0 >= 0) gradient[w0] += g[ch];
          if (w1 >= 0) gradient[w1 + 1] += g[ch + 1];
          if (w2 >= 0) gradient[w2 + 2] += g[ch + 2];
          if (w3 >= 0) gradient[w3 + 3] += g[ch + 3];
        }
        for (; ch < c; ch++) {
          float best = -__builtin_inff();
          int where = -1;
          for (int yy = y0; yy < y1; yy++) {
            for (int xx = x0; xx < x1; xx++) {
              int offset = (yy * inW + xx) * c + ch;
              if (image[offset] > best) {
                best = image[offset];
                where = offset;
              }
            }
          }
          if (where >= 0) gradient[where] += g[ch];
        }
      }
    }
  }
}

/*
 * Gradient of nearest-neighbour resizing (NHWC): dx = 0, then dy[b][r][q][:] is added to
 * dx[b][rows[r]][cols[q]][:], where rows and cols (int32) are the input row and column that
 * each output row and column read in the forward pass.
 */
EXPORT(resize_nearest_grad)
void resize_nearest_grad(const float* dy, float* dx, const int* rows, const int* cols, int n, int inH, int inW, int c, int outH,
                         int outW) {
  int total = n * inH * inW * c;
  for (int i = 0; i < total; i++) dx[i] = 0.0f;
  for (int b = 0; b < n; b++) {
    for (int r = 0; r < outH; r++) {
      float* targetRow = dx + ((b * inH + rows[r]) * inW) * c;
      const float* source = dy + ((b * outH + r) * outW) * c;
      for (int q = 0; q < outW; q++, source += c) {
        float* target = targetRow + cols[q] * c;
        int ch = 0;
        for (; ch + 4 <= c; ch += 4) wasm_v128_store(target + ch, wasm_f32x4_add(wasm_v128_load(target + ch), wasm_v128_load(source + ch)));
        for (; ch < c; ch++) target[ch] += source[ch];
      }
    }
  }
}

/*
 * Batch normalisation with given statistics (FusedBatchNorm, as in inference), per column
 * of a rows x cols matrix: y = (x - mean) * gamma / sqrt(variance + epsilon) + beta, where a
 * null gamma is 1 and a null beta is 0. scratch needs 2 * cols floats.
 */
EXPORT(batch_norm_inference)
void batch_norm_inference(const float* x, const float* mean, const float* variance, const float* gamma, const float* beta,
                          float* y, float* scratch, int rows, int cols, float epsilon) {
  float* scale = scratch;
  float* shift = scratch + cols;
  for (int j = 0; j < cols; j++) {
    scale[j] = (gamma ? gamma[j] : 1.0f) / __builtin_sqrtf(variance[j] + epsilon);
    shift[j] = (beta ? beta[j] : 0.0f) - mean[j] * scale[j];
  }
  for (int i = 0; i < rows; i++) {
    const float* in = x + i * cols;
    float* out = y + i * cols;
    int j = 0;
    for (; j + 4 <= cols; j += 4) {
      v128_t value = wasm_f32x4_mul(wasm_v128_load(in + j), wasm_v128_load(scale + j));
      wasm_v128_store(out + j, wasm_f32x4_add(value, wasm_v128_load(shift + j)));
    }
    for (; j < cols; j++) out[j] = in[j] * scale[j] + shift[j];
  }
}

/*
 * Per column of two rows x cols matrices a and x: out[j] = sum over i of
 * (a[i][j] - aMean[j]) * (x[i][j] - xMean[j]), where a null aMean is 0. Rows are added in
 * blocks of 256, as in sum_rows.
 */
static void centred_column_products(const float* a, const float* aMean, const float* x, const float* xMean, float* out, int rows,
                                    int cols) {
  for (int j = 0; j < cols; j++) out[j] = 0.0f;
  for (int first = 0; first < rows; first += 256) {
    int last = first + 256 < rows ? first + 256 : rows;
    int j = 0;
    for (; j + 4 <= cols; j += 4) {
      v128_t aCentre = aMean ? wasm_v128_load(aMean + j) : wasm_f32x4_splat(0.0f);
      v128_t xCentre = wasm_v128_load(xMean + j);
      v128_t block = wasm_f32x4_splat(0.0f);
      const float* p = a + first * cols + j;
      const float* q = x + first * cols + j;
      for (int i = first; i < last; i++, p += cols, q += cols) {
        v128_t d = wasm_f32x4_sub(wasm_v128_load(p), aCentre);
        block = wasm_f32x4_add(block, wasm_f32x4_mul(d, wasm_f32x4_sub(wasm_v128_load(q), xCentre)));
      }
      wasm_v128_store(out + j, wasm_f32x4_add(wasm_v128_load(out + j), block));
    }
    for (; j < cols; j++) {
      float aCentre = aMean ? aMean[j] : 0.0f;
      float block = 0.0f;
      const float* p = a + first * cols + j;
      const float* q = x + first * cols + j;
      for (int i = first; i < last; i++, p += cols, q += cols) block += (*p - aCentre) * (*q - xMean[j]);
      out[j] += block;
    }
  }
}

/*
 * Batch normalisation in training over the rows of a rows x cols matrix (an NHWC tensor
 * with cols channels): mean and variance (population, as tf.moments) per column, then
 * y = (x - mean) * gamma / sqrt(variance + epsilon) + beta. Sums run in blocks of 256
 * rows, as in sum_rows. scratch needs 2 * cols floats.
 */
EXPORT(batch_norm_training)
void batch_norm_training(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* variance,
                         float* scratch, int rows, int cols, float epsilon) {
  sum_rows(x, mean, rows, cols);
  for (int j = 0; j < cols; j++) mean[j] = mean[j] / (float)rows;
  centred_column_products(x, mean, x, mean, variance, rows, cols);
  for (int j = 0; j < cols; j++) variance[j] = variance[j] / (float)rows;
  batch_norm_inference(x, mean, variance, gamma, beta, y, scratch, rows, cols, epsilon);
}

/*
 * Gradient of batch_norm_training with respect to x, gamma and beta, the batch statistics
 * included. With r = 1 / sqrt(variance + epsilon), S1 = sum of dy and S2 = sum of
 * dy * (x - mean) per column over the N rows:
 *   dbeta = S1, dgamma = r * S2,
 *   dx = gamma * r * (dy - S1 / N - (x - mean) * r^2 * S2 / N).
 * scratch needs 3 * cols floats.
 */
EXPORT(batch_norm_training_grad)
void batch_norm_training_grad(const float* dy, const float* x, const float* gamma, const float* mean, const float* variance,
                              float* dx, float* dgamma, float* dbeta, float* scratch, int rows, int cols, float epsilon) {
  sum_rows(dy, dbeta, rows, cols);
  centred_column_products(dy, 0, x, mean, dgamma, rows, cols);
  float* gain = scratch;
  float* offset = scratch + cols;
  float* slope = scratch + 2 * cols;
  float count = (float)rows;
  for (int j = 0; j < cols; j++) {
    float r = 1.0f / __builtin_sqrtf(variance[j] + epsilon);
    gain[j] = gamma[j] * r;
    slope[j] = r * r * dgamma[j] / count;
    offset[j] = dbeta[j] / count - mean[j] * slope[j];
    dgamma[j] = r * dgamma[j];
  }
  /* dx = gain * (dy - offset - x * slope), since (x - mean) * slope = x * slope - mean * slope. */
  for (int i = 0; i < rows; i++) {
    const float* g = dy + i * cols;
    const float* in = x + i * cols;
    float* out = dx + i * cols;
    int j = 0;
    for (; j + 4 <= cols; j += 4) {
      v128_t centred = wasm_f32x4_sub(wasm_v128_load(g + j), wasm_v128_load(offset + j));
      centred = wasm_f32x4_sub(centred, wasm_f32x4_mul(wasm_v128_load(in + j), wasm_v128_load(slope + j)));
      wasm_v128_store(out + j, wasm_f32x4_mul(centred, wasm_v128_load(gain + j)));
    }
    for (; j < cols; j++) out[j] = gain[j] * (g[j] - offset[j] - in[j] * slope[j]);
  }
}

/*
 * Nearest-neighbour resizing (NHWC): y[b][r][q][:] = x[b][rows[r]][cols[q]][:], where rows
 * and cols (int32) give the input row and column that each output row and column reads.
 */
EXPORT(resize_nearest)
void resize_nearest(const int* x, int* y, const int* rows, const int* cols, int n, int inH, int inW, int c, int outH, int outW) {
  for (int b = 0; b < n; b++) {
    for (int r = 0; r < outH; r++) {
      const int* sourceRow = x + ((b * inH + rows[r]) * inW) * c;
      int* target = y + ((b * outH + r) * outW) * c;
      for (int q = 0; q < outW; q++, target += c) {
        const int* source = sourceRow + cols[q] * c;
        int ch = 0;
        for (; ch + 4 <= c; ch += 4) wasm_v128_store(target + ch, wasm_v128_load(source + ch));
        for (; ch < c; ch++) target[ch] = source[ch];
      }
    }
  }
}
