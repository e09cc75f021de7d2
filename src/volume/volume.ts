/**
 * The one volume type every reader, writer, kernel and stage shares.
 *
 * Axis order: x (A-scan index, across a B-scan) varies fastest, then y (depth along the
 * A-scan), then z (B-scan index). The voxel at (x, y, z) is
 * `data[x + width * (y + height * z)]`, the same memory order as a MetaImage `.raw` file
 * and a NIfTI file with an identity orientation. Spacing is in millimetres per axis, in
 * the same x, y, z order.
 */

export type DType = "uint8" | "int8" | "uint16" | "int16" | "uint32" | "int32" | "float32" | "float64"

export type VoxelArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array

export interface Volume<A extends VoxelArray = VoxelArray> {
  /** Sizes in voxels: [width (x), height (y, depth), slices (z, B-scans)]. */
  readonly dims: readonly [number, number, number]
  /** Millimetres per voxel along x, y and z. */
  readonly spacingMm: readonly [number, number, number]
  readonly dtype: DType
  readonly data: A
}

const arrayConstructors = {
  uint8: Uint8Array,
  int8: Int8Array,
  uint16: Uint16Array,
  int16: Int16Array,
  uint32: Uint32Array,
  int32: Int32Array,
  float32: Float32Array,
  float64: Float64Array
} as const

export type ArrayOf<D extends DType> = InstanceType<(typeof arrayConstructors)[D]>

export const bytesPerVoxel = (dtype: DType): number => arrayConstructors[dtype].BYTES_PER_ELEMENT

/** Allocates a zero-filled typed array of `dtype` with `length` elements. */
export const allocate = <D extends DType>(dtype: D, length: number): ArrayOf<D> =>
  new arrayConstructors[dtype](length) as ArrayOf<D>

/** Creates a zero-filled volume. */
export const makeVolume = <D extends DType>(
  dtype: D,
  dims: readonly [number, number, number],
  spacingMm: readonly [number, number, number] = [1, 1, 1]
): Volume<ArrayOf<D>> => ({
  dims,
  spacingMm,
  dtype,
  data: allocate(dtype, dims[0] * dims[1] * dims[2])
})

export const voxelCount = (volume: Pick<Volume, "dims">): number =>
  volume.dims[0] * volume.dims[1] * volume.dims[2]

/** Returns a view (no copy) of B-scan `z`: `height` rows of `width` voxels. */
export const sliceView = <A extends VoxelArray>(volume: Volume<A>, z: number): A => {
  const size = volume.dims[0] * volume.dims[1]
  return volume.data.subarray(z * size, (z + 1) * size) as A
}

export const dtypeOf = (data: VoxelArray): DType => {
  for (const [dtype, ctor] of Object.entries(arrayConstructors)) {
    if (data instanceof ctor) return dtype as DType
  }
  throw new TypeError(`unsupported voxel array type ${Object.prototype.toString.call(data)}`)
}
