/**
 * Content hashes for the workflow store: SHA-256 of files, of byte strings and of whole
 * directories, plus a stat key that detects files which may have changed since they
 * were last hashed.
 *
 * Files are always read in chunks, never whole. `hashFiles` spreads several files over a
 * small pool of worker threads, because Node's hashing runs on the calling thread.
 */
import { createHash } from "node:crypto"
import { lstat, readdir, readlink, stat } from "node:fs/promises"
import { availableParallelism } from "node:os"
import { join, relative, sep } from "node:path"
import { Worker } from "node:worker_threads"
import * as Data from "effect/Data"
import { runnableUrl } from "./bundle.ts"
import {
  describeFileKind,
  digestFile,
  type FileDigest,
  type HashReply,
  type HashRequest,
  hashWorkerRole,
  type SerializedHashError,
  serializeError
} from "./hash-worker.ts"

// ---------------------------------------------------------------------------------------
// Errors

/** Error for a file that does not exist (ENOENT). */
export class FileNotFoundError extends Data.TaggedError("FileNotFoundError")<{
  readonly path: string
}> {
  override get message(): string {
    return `File not found: ${this.path}. Check the path, or run the stage that creates it first.`
  }
}

/** Error for a path that exists but is not a regular file, so it has no bytes to hash. */
export class NotAFileError extends Data.TaggedError("NotAFileError")<{
  readonly path: string
  readonly expected: "regular file"
  readonly actual: string
}> {
  override get message(): string {
    return `Cannot hash ${this.path}: expected a ${this.expected}, found a ${this.actual}. Pass a file path.`
  }
}

/** Error for a file that failed to open or read for another reason (permissions, I/O error). */
export class FileReadError extends Data.TaggedError("FileReadError")<{
  readonly path: string
  /** Node errno code such as EACCES or EIO, when there is one. */
  readonly code: string | undefined
  readonly reason: string
}> {
  override get message(): string {
    const code = this.code === undefined ? "" : ` (${this.code})`
    return `Failed to read ${this.path}${code}: ${this.reason}. Check that the file is readable.`
  }
}

/** Error for a file whose size or modification time changed while it was read. */
export class FileChangedWhileHashingError extends Data.TaggedError("FileChangedWhileHashingError")<{
  readonly path: string
  readonly expectedBytes: bigint
  readonly actualBytes: bigint
  readonly bytesRead: number
}> {
  override get message(): string {
    return (
      `${this.path} changed while it was hashed: ${this.expectedBytes} bytes when opened, ` +
      `${this.actualBytes} bytes at the end, ${this.bytesRead} bytes read. ` +
      `Wait until the program writing it has finished, then hash it again.`
    )
  }
}

/** Error for a worker thread that crashed or failed to start. */
export class HashWorkerError extends Data.TaggedError("HashWorkerError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return (
      `The hashing worker thread failed while hashing ${this.path}: ${this.reason}. ` +
      `Retry with concurrency 1 to hash on the main thread.`
    )
  }
}

/** Error for a `concurrency` option that is not a positive integer. */
export class InvalidConcurrencyError extends Data.TaggedError("InvalidConcurrencyError")<{
  readonly expected: "a positive integer"
  readonly actual: unknown
}> {
  override get message(): string {
    return (
      `Invalid hashing concurrency ${String(this.actual)}: expected ${this.expected}, ` +
      `such as 1 or os.availableParallelism().`
    )
  }
}

/** Error for a `hashDirectory` root that is not a directory. */
export class NotADirectoryError extends Data.TaggedError("NotADirectoryError")<{
  readonly path: string
  readonly expected: "directory"
  readonly actual: string
}> {
  override get message(): string {
    return (
      `Cannot hash ${this.path} as a directory: found a ${this.actual}. ` +
      `Pass a directory, or use hashFile for a single file.`
    )
  }
}

/**
 * Error for a symbolic link inside a directory being hashed. Links are rejected because the same
 * link can point to different content on another machine, so the hash would not identify
 * the content.
 */
export class SymlinkInDirectoryError extends Data.TaggedError("SymlinkInDirectoryError")<{
  readonly path: string
  readonly directory: string
  readonly target: string
}> {
  override get message(): string {
    return (
      `Cannot hash directory ${this.directory}: ${this.path} is a symbolic link to ${this.target}. ` +
      `Replace the link with a copy of the file or directory it points to.`
    )
  }
}

/** Error for a FIFO, socket or device inside a directory being hashed, which has no stable content. */
export class UnsupportedEntryError extends Data.TaggedError("UnsupportedEntryError")<{
  readonly path: string
  readonly directory: string
  readonly expected: "regular file or directory"
  readonly actual: string
}> {
  override get message(): string {
    return (
      `Cannot hash directory ${this.directory}: ${this.path} is a ${this.actual}, ` +
      `expected a ${this.expected}. Remove it from the directory.`
    )
  }
}

export type HashError =
  | FileNotFoundError
  | NotAFileError
  | FileReadError
  | FileChangedWhileHashingError
  | HashWorkerError
  | InvalidConcurrencyError
  | NotADirectoryError
  | SymlinkInDirectoryError
  | UnsupportedEntryError

/** Maps an error from `digestFile`, raised here or serialized by a worker, to a tagged error. */
function toHashError(path: string, error: SerializedHashError): HashError {
  if (error.code === "ENOENT") return new FileNotFoundError({ path })
  if (error.kind !== undefined) return new NotAFileError({ path, expected: "regular file", actual: error.kind })
  if (error.code === "EISDIR") return new NotAFileError({ path, expected: "regular file", actual: "directory" })
  if (error.changed !== undefined) {
    return new FileChangedWhileHashingError({
      path,
      expectedBytes: BigInt(error.changed.sizeBefore),
      actualBytes: BigInt(error.changed.sizeAfter),
      bytesRead: error.changed.bytesRead
    })
  }
  return new FileReadError({ path, code: error.code, reason: error.message })
}

/** Runs `digestFile` on this thread and maps its errors. */
async function digestOnThisThread(path: string): Promise<FileDigest> {
  try {
    return await digestFile(path)
  } catch (error) {
    throw toHashError(path, serializeError(error))
  }
}

// ---------------------------------------------------------------------------------------
// Single files and byte strings

/**
 * Computes the lowercase hex SHA-256 of a file's bytes, reading it in chunks on this thread.
 * Rejects with a `HashError` naming the path when the file is missing, is not a regular
 * file, cannot be read, or changes while it is read.
 */
export async function hashFile(path: string): Promise<string> {
  const digest = await digestOnThisThread(path)
  return digest.sha256
}

/** Computes the lowercase hex SHA-256 of bytes, or of a string encoded as UTF-8. */
export function hashBytes(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex")
}

// ---------------------------------------------------------------------------------------
// Worker pool

interface PooledWorker {
  readonly worker: Worker
  job: PendingJob | undefined
}

interface PendingJob {
  readonly request: HashRequest
  readonly resolve: (digest: FileDigest) => void
  readonly reject: (error: HashError) => void
}

/** URL of the worker module: hash-worker.ts from source, its compiled file in the CLI bundle. */
const workerModuleUrl = new URL(runnableUrl(new URL("./hash-worker.ts", import.meta.url).href))

/**
 * Source of the script each worker evaluates. Node 20 cannot load a `.ts` worker by itself,
 * and loader hooks given with `--import` in a worker's execArgv did not apply to its entry
 * module (Node 20.20, tsx 4.23). So the script registers tsx's ESM loader, then imports the
 * worker module.
 */
function workerBootstrapSource(): string {
  const target = JSON.stringify(workerModuleUrl.href)
  if (!workerModuleUrl.pathname.endsWith(".ts")) return `import(${target})`
  const tsxApi = JSON.stringify(import.meta.resolve("tsx/esm/api"))
  return `import(${tsxApi}).then((api) => { api.register(); return import(${target}) })`
}

/**
 * Lazily started pool of hashing workers, shared by every `hashFiles` call in the process.
 * A worker handles one file at a time. Idle workers are unref'd, so the pool does not keep
 * the process alive. A busy worker is ref'd until its reply arrives, so a pending hash does.
 */
class HashWorkerPool {
  private readonly workers: PooledWorker[] = []
  private readonly queue: PendingJob[] = []
  private nextId = 0
  private maxWorkers = 0

  digest(path: string, maxWorkers: number): Promise<FileDigest> {
    this.maxWorkers = Math.max(this.maxWorkers, maxWorkers)
    return new Promise<FileDigest>((resolve, reject) => {
      this.queue.push({ request: { id: this.nextId++, path }, resolve, reject })
      this.dispatch()
    })
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const pooled = this.workers.find((candidate) => candidate.job === undefined) ?? this.startWorker()
      if (pooled === undefined) return
      const job = this.queue.shift()!
      pooled.job = job
      pooled.worker.ref()
      pooled.worker.postMessage(job.request)
    }
  }

  private startWorker(): PooledWorker | undefined {
    if (this.workers.length >= this.maxWorkers) return undefined
    const worker = new Worker(workerBootstrapSource(), { eval: true, workerData: { role: hashWorkerRole } })
    const pooled: PooledWorker = { worker, job: undefined }
    worker.on("message", (reply: HashReply) => this.onReply(pooled, reply))
    worker.on("error", (error: Error) => this.onFailure(pooled, error.message))
    worker.on("exit", (exitCode: number) => this.onFailure(pooled, `worker exited with code ${exitCode}`))
    worker.unref()
    this.workers.push(pooled)
    return pooled
  }

  private onReply(pooled: PooledWorker, reply: HashReply): void {
    const job = pooled.job
    if (job === undefined || job.request.id !== reply.id) return
    pooled.job = undefined
    pooled.worker.unref()
    if ("digest" in reply) job.resolve(reply.digest)
    else job.reject(toHashError(job.request.path, reply.error))
    this.dispatch()
  }

  /** Drops a crashed worker, fails its job, and lets the queue start a replacement. */
  private onFailure(pooled: PooledWorker, reason: string): void {
    const index = this.workers.indexOf(pooled)
    if (index === -1) return
    this.workers.splice(index, 1)
    const job = pooled.job
    pooled.job = undefined
    if (job !== undefined) job.reject(new HashWorkerError({ path: job.request.path, reason }))
    this.dispatch()
  }
}

let pool: HashWorkerPool | undefined

// ---------------------------------------------------------------------------------------
// Several files

export interface HashFilesOptions {
  /** Maximum number of files hashed at once. Defaults to `os.availableParallelism()`. */
  readonly concurrency?: number
  /**
   * Total size in bytes below which the files are hashed one after another on this thread,
   * because starting and messaging workers costs more than it saves. Defaults to 32 MiB.
   */
  readonly parallelThresholdBytes?: number
}

const defaultParallelThresholdBytes = 32 * 1024 * 1024

/**
 * Computes the lowercase hex SHA-256 of each file, in input order. With a concurrency above
 * 1 and at least `parallelThresholdBytes` in total, the files are hashed on worker threads,
 * up to `concurrency` at a time. Rejects with the first `HashError` raised.
 */
export async function hashFiles(paths: readonly string[], options: HashFilesOptions = {}): Promise<string[]> {
  const digests = await digestFiles(paths, options)
  return digests.map((digest) => digest.sha256)
}

async function digestFiles(
  paths: readonly string[],
  options: HashFilesOptions,
  knownTotalBytes?: number
): Promise<FileDigest[]> {
  const concurrency = options.concurrency ?? availableParallelism()
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new InvalidConcurrencyError({ expected: "a positive integer", actual: options.concurrency })
  }

  const threshold = options.parallelThresholdBytes ?? defaultParallelThresholdBytes
  const parallel =
    concurrency > 1 && paths.length > 1 && (knownTotalBytes ?? (await totalBytes(paths))) >= threshold
  if (!parallel) {
    const digests: FileDigest[] = []
    for (const path of paths) digests.push(await digestOnThisThread(path))
    return digests
  }

  pool ??= new HashWorkerPool()
  const activePool = pool
  const lanes = Math.min(concurrency, paths.length)
  const digests = new Array<FileDigest>(paths.length)
  let nextIndex = 0
  let failed = false

  // Each lane takes the next file when its previous one is done, so at most `lanes` files
  // of this call are in flight, whatever other calls share the pool.
  const runLane = async (): Promise<void> => {
    while (!failed && nextIndex < paths.length) {
      const index = nextIndex++
      try {
        digests[index] = await activePool.digest(paths[index], lanes)
      } catch (error) {
        failed = true
        throw error
      }
    }
  }
  await Promise.all(Array.from({ length: lanes }, runLane))
  return digests
}

/** Sums the sizes of the files, so small batches can skip the worker pool. */
async function totalBytes(paths: readonly string[]): Promise<number> {
  let total = 0
  for (const path of paths) {
    const key = await statKey(path)
    total += key.size
  }
  return total
}

// ---------------------------------------------------------------------------------------
// Directories

/** One file of a directory manifest. */
export interface ManifestEntry {
  /** Path relative to the directory root, with `/` separators. */
  readonly path: string
  readonly bytes: number
  /** Lowercase hex SHA-256 of the file's bytes. */
  readonly sha256: string
}

/** Canonical description of a directory's files, and the text that `hashDirectory` hashes. */
export interface DirectoryManifest {
  /** Entries sorted by the UTF-8 bytes of their path. */
  readonly entries: readonly ManifestEntry[]
  readonly text: string
}

/** First line of every manifest text. A new manifest format gets a new version here. */
export const manifestHeader = "octflow-directory-manifest v1"

interface FoundFile {
  readonly relativePath: string
  readonly absolutePath: string
  readonly bytes: number
}

/**
 * Builds the manifest of every regular file under `root`, hashing the files with
 * `hashFiles`. The manifest text is the header line, then one line per file:
 * `<sha256> <bytes> <path as a JSON string>`, each ending in `\n`.
 * NOTE: empty directories leave no entry, so two trees that differ only in empty
 * directories have the same manifest.
 */
export async function buildDirectoryManifest(
  root: string,
  options: HashFilesOptions = {}
): Promise<DirectoryManifest> {
  await assertDirectory(root)
  const found: FoundFile[] = []
  await collectFiles(root, root, found)
  found.sort((a, b) => Buffer.compare(Buffer.from(a.relativePath), Buffer.from(b.relativePath)))

  const total = found.reduce((sum, file) => sum + file.bytes, 0)
  const digests = await digestFiles(
    found.map((file) => file.absolutePath),
    options,
    total
  )
  const entries = found.map((file, index) => ({
    path: file.relativePath,
    bytes: digests[index].bytes,
    sha256: digests[index].sha256
  }))

  const lines = entries.map((entry) => `${entry.sha256} ${entry.bytes} ${JSON.stringify(entry.path)}\n`)
  return { entries, text: `${manifestHeader}\n${lines.join("")}` }
}

/**
 * Computes the content hash of a directory: the SHA-256 of its manifest text (see
 * `buildDirectoryManifest`). It depends only on relative paths and file bytes, not on where
 * the directory is, the order files were created in, or timestamps. The root may be reached
 * through a symbolic link, but a link inside it raises `SymlinkInDirectoryError`.
 */
export async function hashDirectory(root: string, options: HashFilesOptions = {}): Promise<string> {
  const manifest = await buildDirectoryManifest(root, options)
  return hashBytes(manifest.text)
}

async function assertDirectory(root: string): Promise<void> {
  let stats
  try {
    stats = await stat(root)
  } catch (error) {
    throw toHashError(root, serializeError(error))
  }
  if (!stats.isDirectory()) {
    throw new NotADirectoryError({ path: root, expected: "directory", actual: describeFileKind(stats) })
  }
}

async function collectFiles(root: string, directory: string, found: FoundFile[]): Promise<void> {
  let names: string[]
  try {
    names = await readdir(directory)
  } catch (error) {
    throw toHashError(directory, serializeError(error))
  }

  for (const name of names) {
    const absolutePath = join(directory, name)
    const stats = await lstat(absolutePath)
    if (stats.isSymbolicLink()) {
      const target = await readlink(absolutePath)
      throw new SymlinkInDirectoryError({ path: absolutePath, directory: root, target })
    }
    if (stats.isDirectory()) {
      await collectFiles(root, absolutePath, found)
    } else if (stats.isFile()) {
      const relativePath = relative(root, absolutePath).split(sep).join("/")
      found.push({ relativePath, absolutePath, bytes: stats.size })
    } else {
      throw new UnsupportedEntryError({
        path: absolutePath,
        directory: root,
        expected: "regular file or directory",
        actual: describeFileKind(stats)
      })
    }
  }
}

// ---------------------------------------------------------------------------------------
// Stat keys

/**
 * Identity and version of a file as the file system reports them. If two keys of a path are
 * equal, the file was very probably not rewritten in between, so its hash can be reused.
 * NOTE: `dev` and `ino` are converted from bigint to number, which is exact only below
 * 2^53; inode numbers above that (rare, but possible on some file systems) may collide.
 */
export interface StatKey {
  readonly dev: number
  readonly ino: number
  /** Size in bytes. */
  readonly size: number
  /** Modification time in nanoseconds since the Unix epoch. */
  readonly mtimeNs: bigint
}

/** Reads the stat key of a file, following symbolic links. */
export async function statKey(path: string): Promise<StatKey> {
  let stats
  try {
    stats = await stat(path, { bigint: true })
  } catch (error) {
    throw toHashError(path, serializeError(error))
  }
  return { dev: Number(stats.dev), ino: Number(stats.ino), size: Number(stats.size), mtimeNs: stats.mtimeNs }
}

/** Tells whether two stat keys describe the same version of the same file. */
export function isSameStat(a: StatKey, b: StatKey): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs
}
