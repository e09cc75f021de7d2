/**
 * Streaming SHA-256 of one file, and the worker-thread entry that runs it for `hashFiles`.
 *
 * This module imports only Node built-ins, so a worker starts quickly. It throws Node's own
 * errors (errno codes), `NotARegularFile` and `FileChangedDuringRead`. src/runtime/hash.ts
 * maps them to tagged errors in one place, for hashes run on the main thread and for
 * replies from a worker.
 */
import { createHash } from "node:crypto"
import { open, stat } from "node:fs/promises"
import { isMainThread, parentPort, workerData } from "node:worker_threads"

/**
 * Read-buffer size in bytes. Two buffers of this size are used per file, so one read is in
 * flight while the other buffer is hashed. In bench/hash.bench.ts (2-core AMD EPYC, Node 20,
 * 1 GiB from the page cache), 1 MiB and 4 MiB both reached about 1.6 GB/s, 256 KiB 1.4 GB/s
 * and 64 KiB 1.1 GB/s, so 1 MiB is the smallest buffer at full speed.
 */
export const readChunkBytes = 1024 * 1024

/** Value of `workerData.role` that marks a thread as a hashing worker. */
export const hashWorkerRole = "octflow-hash-worker"

/** File-type tests shared by `fs.Stats` and `fs.BigIntStats`. */
export interface FileKindStats {
  isFile(): boolean
  isDirectory(): boolean
  isSymbolicLink(): boolean
  isFIFO(): boolean
  isSocket(): boolean
  isBlockDevice(): boolean
  isCharacterDevice(): boolean
}

/** Names the kind of file system entry, as used in error messages. */
export function describeFileKind(stats: FileKindStats): string {
  if (stats.isFile()) return "regular file"
  if (stats.isDirectory()) return "directory"
  if (stats.isSymbolicLink()) return "symbolic link"
  if (stats.isFIFO()) return "FIFO"
  if (stats.isSocket()) return "socket"
  if (stats.isBlockDevice()) return "block device"
  if (stats.isCharacterDevice()) return "character device"
  return "file of unknown type"
}

/**
 * Thrown when the path is not a regular file. Checked before opening, because opening a
 * FIFO blocks until a writer appears and a character device such as /dev/zero never ends.
 */
export class NotARegularFile extends Error {
  readonly code = "OCTFLOW_NOT_A_FILE"

  constructor(
    readonly path: string,
    readonly kind: string
  ) {
    super(`${path} is a ${kind}, not a regular file`)
  }
}

/** Thrown when a file's size or modification time changed between opening and the last read. */
export class FileChangedDuringRead extends Error {
  readonly code = "OCTFLOW_FILE_CHANGED"

  constructor(
    readonly path: string,
    readonly sizeBefore: bigint,
    readonly sizeAfter: bigint,
    readonly bytesRead: number
  ) {
    super(`${path} changed while it was hashed`)
  }
}

/** Digest of one file and the number of bytes that went into it. */
export interface FileDigest {
  /** Lowercase hex SHA-256. */
  readonly sha256: string
  readonly bytes: number
}

/**
 * Computes the lowercase hex SHA-256 of a file's bytes while reading it in chunks.
 *
 * Reads alternate between two reused buffers. The next read is issued before the current
 * chunk is hashed, so disk or page-cache reads on the libuv thread pool overlap the hashing
 * on this thread. Memory use is `2 * chunkBytes` per call, whatever the file size.
 */
export async function digestFile(path: string, chunkBytes: number = readChunkBytes): Promise<FileDigest> {
  const kind = describeFileKind(await stat(path))
  if (kind !== "regular file") throw new NotARegularFile(path, kind)

  const handle = await open(path, "r")
  try {
    const before = await handle.stat({ bigint: true })
    // The path may have been replaced between the stat above and the open.
    if (!before.isFile()) throw new NotARegularFile(path, describeFileKind(before))

    const hash = createHash("sha256")
    const buffers = [Buffer.allocUnsafe(chunkBytes), Buffer.allocUnsafe(chunkBytes)]
    let position = 0
    let current = 0
    let pending = handle.read(buffers[current], 0, chunkBytes, position)

    while (true) {
      const { bytesRead } = await pending
      if (bytesRead === 0) break
      position += bytesRead

      // Start the next read into the other buffer before hashing this one.
      const next = 1 - current
      pending = handle.read(buffers[next], 0, chunkBytes, position)
      hash.update(buffers[current].subarray(0, bytesRead))
      current = next
    }

    const after = await handle.stat({ bigint: true })
    const unchanged =
      before.size === after.size && before.mtimeNs === after.mtimeNs && BigInt(position) === after.size
    if (!unchanged) throw new FileChangedDuringRead(path, before.size, after.size, position)

    return { sha256: hash.digest("hex"), bytes: position }
  } finally {
    await handle.close()
  }
}

/** Request from the main thread: hash the file at `path` and reply with the same `id`. */
export interface HashRequest {
  readonly id: number
  readonly path: string
}

/**
 * Error sent back from a worker. Errors cannot cross a thread boundary with their class, so
 * only the errno code, the message and the fields of `FileChangedDuringRead` and
 * `NotARegularFile` are kept.
 */
export interface SerializedHashError {
  readonly code: string | undefined
  readonly message: string
  readonly changed?: { readonly sizeBefore: string; readonly sizeAfter: string; readonly bytesRead: number }
  /** Kind of entry found instead of a regular file, such as "directory" or "FIFO". */
  readonly kind?: string
}

/** Reply to a `HashRequest`: the digest or the error. */
export type HashReply =
  | { readonly id: number; readonly digest: FileDigest }
  | { readonly id: number; readonly error: SerializedHashError }

/** Reduces an error from `digestFile` to the fields that can be posted between threads. */
export function serializeError(error: unknown): SerializedHashError {
  if (error instanceof FileChangedDuringRead) {
    const changed = {
      sizeBefore: error.sizeBefore.toString(),
      sizeAfter: error.sizeAfter.toString(),
      bytesRead: error.bytesRead
    }
    return { code: error.code, message: error.message, changed }
  }
  if (error instanceof NotARegularFile) {
    return { code: error.code, message: error.message, kind: error.kind }
  }
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code
    return { code: typeof code === "string" ? code : undefined, message: error.message }
  }
  return { code: undefined, message: String(error) }
}

if (!isMainThread && parentPort !== null && workerData?.role === hashWorkerRole) {
  const port = parentPort
  port.on("message", (request: HashRequest) => {
    digestFile(request.path).then(
      (digest) => port.postMessage({ id: request.id, digest } satisfies HashReply),
      (error: unknown) => port.postMessage({ id: request.id, error: serializeError(error) } satisfies HashReply)
    )
  })
}
