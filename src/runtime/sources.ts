/**
 * Source discovery and file hashing through the stat cache. A file whose device, inode,
 * size and modification time (ns) match its `stat_cache` row reuses the stored SHA-256
 * and is not read. Every other file is hashed and its row replaced.
 */
import { statSync } from "node:fs"
import { resolve } from "node:path"
import * as Effect from "effect/Effect"
import { InputUnreadable, SourceFailed } from "./errors.ts"
import type { StatKey } from "./hash.ts"
import type { Database } from "./db.ts"
import { compareCodeUnits } from "./params.ts"
import type { Source, SourceItem, SourceItemRef } from "./stage.ts"

interface CachedStat extends StatKey {
  readonly sha256: string
}

export interface HashedSource {
  readonly name: string
  readonly items: ReadonlyArray<SourceItem>
  readonly refs: ReadonlyMap<string, SourceItemRef>
  /** Size in bytes of each file, by absolute path. */
  readonly sizes: ReadonlyMap<string, number>
}

/** Discover the items of `source`, sorted by key, and reject duplicate keys. */
export async function discoverSource(source: Source, dataDir: string | undefined): Promise<ReadonlyArray<SourceItem>> {
  let items: ReadonlyArray<SourceItem>
  try {
    items = await Effect.runPromise(source.discover(dataDir === undefined ? {} : { dataDir }))
  } catch (cause) {
    throw new SourceFailed({ source: source.name, dataDir, cause })
  }
  const sorted = [...items].sort((a, b) => compareCodeUnits(a.key, b.key))
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.key === sorted[i - 1]!.key) {
      throw new SourceFailed({ source: source.name, dataDir, cause: `two items have the key "${sorted[i]!.key}"` })
    }
  }
  return sorted
}

/** Hash every file of the given items, reusing the stat cache, and store new cache rows. */
export async function hashSourceFiles(
  db: Database,
  name: string,
  items: ReadonlyArray<SourceItem>,
  options: { readonly writeCache: boolean }
): Promise<HashedSource> {
  const paths = [...new Set(items.flatMap((item) => item.files.map((f) => resolve(f))))]
  // The query runs on DuckDB's threads while this thread stats the files.
  const cacheRows = loadStatCache(db)
  // Synchronous stats, because a rerun stats every source file, and for metadata in the page
  // cache one blocking call is cheaper than a round trip through the libuv thread pool.
  const stats = paths.map((path): StatKey => {
    try {
      const info = statSync(path, { bigint: true })
      return { dev: Number(info.dev), ino: Number(info.ino), size: Number(info.size), mtimeNs: info.mtimeNs }
    } catch (cause) {
      throw new InputUnreadable({ path, cause })
    }
  })

  const cached = await cacheRows
  const hashes = new Map<string, string>()
  const misses: Array<number> = []
  paths.forEach((path, index) => {
    const hit = cached.get(path)
    const now = stats[index]!
    if (hit !== undefined && hit.dev === now.dev && hit.ino === now.ino && hit.size === now.size && hit.mtimeNs === now.mtimeNs) {
      hashes.set(path, hit.sha256)
    } else {
      misses.push(index)
    }
  })

  if (misses.length > 0) {
    let digests: Array<string>
    try {
      // Loaded on demand: a rerun with every file in the stat cache never needs the hasher.
      const { hashFiles } = await import("./hash.ts")
      digests = await hashFiles(misses.map((i) => paths[i]!))
    } catch (cause) {
      throw new InputUnreadable({ path: (cause as { path?: string }).path ?? "(unknown)", cause })
    }
    misses.forEach((index, k) => hashes.set(paths[index]!, digests[k]!))
    if (options.writeCache) {
      await db.transaction((tx) => tx.insert(
        "stat_cache",
        ["path", "dev", "ino", "size", "mtime_ns", "sha256"],
        misses.map((i) => {
          const s = stats[i]!
          return [paths[i]!, s.dev, s.ino, s.size, s.mtimeNs, hashes.get(paths[i]!)!]
        }),
        "INSERT OR REPLACE"
      ))
    }
  }

  const refs = new Map<string, SourceItemRef>()
  for (const item of items) {
    const files = item.files.map((f) => ({ path: resolve(f), hash: hashes.get(resolve(f))! }))
    refs.set(item.key, { key: item.key, files, meta: item.meta })
  }
  const sizes = new Map(paths.map((path, index) => [path, stats[index]!.size]))
  return { name, items, refs, sizes }
}

let statCacheMemo: { db: Database; rows: Promise<Map<string, CachedStat>> } | null = null

/**
 * Load the stat cache of `db` once per open database. A run starts the load right after
 * opening the workspace, so the query runs while the plan is built.
 */
export function loadStatCache(db: Database): Promise<Map<string, CachedStat>> {
  if (statCacheMemo !== null && statCacheMemo.db === db) return statCacheMemo.rows
  const rows = readStatCache(db)
  // Callers await it later, so a failure must not count as unhandled in between.
  rows.catch(() => undefined)
  statCacheMemo = { db, rows }
  return rows
}

async function readStatCache(db: Database): Promise<Map<string, CachedStat>> {
  const rows = await db.allAsJson<{ path: string; dev: number; ino: number; size: number; mtime_ns: string; sha256: string }>(
    "SELECT path, dev, ino, size, mtime_ns::VARCHAR AS mtime_ns, sha256 FROM stat_cache"
  )
  const map = new Map<string, CachedStat>()
  for (const row of rows) {
    map.set(row.path, { dev: row.dev, ino: row.ino, size: row.size, mtimeNs: BigInt(row.mtime_ns), sha256: row.sha256 })
  }
  return map
}
