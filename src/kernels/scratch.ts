/**
 * Named scratch arrays that grow on demand, so a kernel run once per B-scan allocates its
 * temporaries once per volume instead of once per B-scan. Contents are unspecified on
 * return (callers initialise what they read), and an array stays valid until the next
 * request for the same name.
 */
export class ScratchArrays {
  private readonly int32Arrays = new Map<string, Int32Array>()
  private readonly float64Arrays = new Map<string, Float64Array>()
  private readonly uint8Arrays = new Map<string, Uint8Array>()
  private readonly uint16Arrays = new Map<string, Uint16Array>()
  private readonly objects = new Map<string, unknown>()

  /** Returns the object stored under `name`, creating it on first request. */
  object<T>(name: string, create: () => T): T {
    if (!this.objects.has(name)) this.objects.set(name, create())
    return this.objects.get(name) as T
  }

  int32(name: string, length: number): Int32Array {
    return take(this.int32Arrays, name, length, (size) => new Int32Array(size))
  }

  float64(name: string, length: number): Float64Array {
    return take(this.float64Arrays, name, length, (size) => new Float64Array(size))
  }

  uint16(name: string, length: number): Uint16Array {
    return take(this.uint16Arrays, name, length, (size) => new Uint16Array(size))
  }

  uint8(name: string, length: number): Uint8Array {
    return take(this.uint8Arrays, name, length, (size) => new Uint8Array(size))
  }
}

const take = <A extends Int32Array | Float64Array | Uint16Array | Uint8Array>(
  arrays: Map<string, A>,
  name: string,
  length: number,
  create: (size: number) => A
): A => {
  let array = arrays.get(name)
  if (array === undefined || array.length < length) {
    array = create(length)
    arrays.set(name, array)
  }
  return array.subarray(0, length) as A
}
