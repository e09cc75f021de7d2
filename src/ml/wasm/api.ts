/** The WebAssembly JS API as used here, typed locally because the DOM lib is not loaded. */
export interface WasmMemory {
  readonly buffer: ArrayBuffer
  grow(pages: number): number
}

interface WasmApi {
  readonly Module: new (bytes: Uint8Array) => object
  readonly Instance: new (module: object, imports: object) => { readonly exports: object }
  readonly Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory
  validate(bytes: Uint8Array): boolean
}

export const wasmApi = (globalThis as unknown as { readonly WebAssembly: WasmApi }).WebAssembly

/**
 * Lists the section ids of a WebAssembly binary in order: 1 type, 2 import, 3 function,
 * 6 global, 7 export, 10 code, 11 data, 12 data count, 0 custom. Each section header of the
 * binary format is a one-byte id, then the size as unsigned LEB128.
 */
export function wasmSectionIds(binary: Uint8Array): Array<number> {
  const magic = [0x00, 0x61, 0x73, 0x6d]
  if (binary.length < 8 || magic.some((byte, index) => binary[index] !== byte)) {
    throw new Error("Not a WebAssembly binary: the first four bytes are not \\0asm.")
  }
  const ids: Array<number> = []
  let offset = 8
  while (offset < binary.length) {
    const id = binary[offset++]!
    let size = 0
    let shift = 0
    for (;;) {
      if (offset >= binary.length) throw new Error("Truncated WebAssembly binary: a section size runs past the end.")
      const byte = binary[offset++]!
      size += (byte & 0x7f) * 2 ** shift
      shift += 7
      if ((byte & 0x80) === 0) break
    }
    ids.push(id)
    offset += size
  }
  if (offset !== binary.length) throw new Error("Truncated WebAssembly binary: the last section runs past the end.")
  return ids
}
