/**
 * Content-addressed artifact store under a workspace. A stage writes each output into a
 * staging directory. `commitOutput` then fsyncs it, hashes it, renames it to
 * `objects/<first 2 hex>/<hash><ext>` (a directory becomes `objects/<2 hex>/<hash>/`) and
 * makes it read-only. Rename is atomic, so an object path only ever contains complete,
 * durable bytes, and the database records an object only after `commitOutput` returns.
 */
import { randomUUID } from "node:crypto"
import { constants } from "node:fs"
import { chmod, lstat, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises"
import { dirname, join } from "node:path"
import { objectSize as storedSize } from "./rerun-stamp.mjs"
import type { OutputSpec } from "./stage.ts"

export interface Layout {
  readonly root: string
  readonly objects: string
  readonly staging: string
  readonly scratch: string
  readonly runs: string
  readonly views: string
  readonly database: string
  readonly lock: string
}

export const layout = (root: string): Layout => ({
  root,
  objects: join(root, "objects"),
  staging: join(root, "staging"),
  scratch: join(root, "scratch"),
  runs: join(root, "runs"),
  views: join(root, "views"),
  database: join(root, "octflow.duckdb"),
  lock: join(root, "lock")
})

/** A stored object: content hash, kind, path relative to the workspace, and total size in bytes. */
export interface StoredObject {
  readonly hash: string
  readonly kind: "file" | "directory"
  readonly ext: string
  readonly path: string
  readonly size: number
}

export const objectPath = (hash: string, ext: string): string => `objects/${hash.slice(0, 2)}/${hash}${ext}`

/** Remove leftover staging directories of killed runs. Call with the workspace lock held. */
export async function sweepStaging(ws: Layout): Promise<void> {
  await rm(ws.staging, { recursive: true, force: true })
  await mkdir(ws.staging, { recursive: true })
}

/** Create a fresh staging directory for one task and return the path of each output port. */
export async function createStaging(ws: Layout, outputs: Readonly<Record<string, OutputSpec>>): Promise<{
  dir: string
  ports: Record<string, string>
}> {
  const dir = join(ws.staging, randomUUID())
  await mkdir(dir, { recursive: true })
  const ports: Record<string, string> = {}
  for (const [port, spec] of Object.entries(outputs)) {
    ports[port] = join(dir, port + spec.ext)
    if (spec.kind === "directory") await mkdir(ports[port]!, { recursive: true })
  }
  return { dir, ports }
}

async function fsyncPath(path: string, flags: number): Promise<void> {
  const handle = await open(path, flags)
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** Fsync every file and directory under `path` (depth first, so a directory after its entries). */
async function fsyncTree(path: string): Promise<number> {
  const info = await lstat(path)
  if (info.isDirectory()) {
    let total = 0
    for (const name of await readdir(path)) total += await fsyncTree(join(path, name))
    await fsyncPath(path, constants.O_RDONLY | constants.O_DIRECTORY)
    return total
  }
  await fsyncPath(path, constants.O_RDONLY)
  return info.size
}

async function makeReadOnly(path: string): Promise<void> {
  const info = await lstat(path)
  if (info.isDirectory()) {
    for (const name of await readdir(path)) await makeReadOnly(join(path, name))
    await chmod(path, 0o555)
  } else {
    await chmod(path, 0o444)
  }
}

/** Make an object writable again so it can be removed. */
export async function makeWritable(path: string): Promise<void> {
  const info = await lstat(path)
  if (info.isDirectory()) {
    await chmod(path, 0o755)
    for (const name of await readdir(path)) await makeWritable(join(path, name))
  } else {
    await chmod(path, 0o644)
  }
}

const exists = async (path: string) => stat(path).then(() => true, () => false)

/** Move one staged output into the store. The staged path is gone afterwards. */
export async function commitOutput(ws: Layout, stagedPath: string, spec: OutputSpec): Promise<StoredObject> {
  const size = await fsyncTree(stagedPath)
  await fsyncPath(dirname(stagedPath), constants.O_RDONLY | constants.O_DIRECTORY)
  // Loaded on demand, so a run with every task cached does not load the hasher at all.
  const { hashDirectory, hashFile } = await import("./hash.ts")
  const hash = spec.kind === "directory" ? await hashDirectory(stagedPath) : await hashFile(stagedPath)
  const relative = objectPath(hash, spec.ext)
  const target = join(ws.root, relative)
  await mkdir(dirname(target), { recursive: true })

  if (await exists(target)) {
    // The same content is already stored, so the staged copy is dropped. Renaming over a
    // directory would fail, and renaming over a file would only rewrite identical bytes.
    await rm(stagedPath, { recursive: true, force: true })
  } else {
    await rename(stagedPath, target)
    await fsyncPath(dirname(target), constants.O_RDONLY | constants.O_DIRECTORY)
    await makeReadOnly(target)
  }
  return { hash, kind: spec.kind, ext: spec.ext, path: relative, size }
}

/**
 * Total size in bytes of a stored object, or null when it is missing. It uses synchronous
 * stat calls because a cached rerun checks thousands of objects, and for files in the page
 * cache one blocking stat is cheaper than a round trip through the libuv thread pool.
 */
export function objectSize(ws: Layout, relativePath: string, kind: "file" | "directory"): number | null {
  return storedSize(join(ws.root, relativePath), kind)
}
