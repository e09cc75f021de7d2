/**
 * Code identity of a stage: the SHA-256 of its module and every project module it imports
 * (relative imports, transitively), each first passed through esbuild with whitespace
 * minification, which drops comments and formatting, so a comment edit changes nothing.
 * A module that another refers to as `new URL("./file.ts", import.meta.url)`, as worker
 * threads are started, counts as imported too. Modules of the runtime itself are left
 * out because they do not change stage results.
 *
 * Starting esbuild's service costs tens of milliseconds, so each module's hash is cached in
 * memory and across runs in `dist/code-hashes.json`, keyed by the file's identity (device,
 * inode, size, modification and change times). Any write changes the change time, so a
 * changed file is hashed again. A file modified within the last `racyMs` is never cached,
 * because a second write in the same timestamp tick would keep its identity.
 */
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, relative, resolve, sep } from "node:path"
import { fileURLToPath } from "node:url"
import { checkBundledSource } from "./bundle.ts"
import { fileIdentity, isRacy } from "./file-identity.mjs"

const runtimeDir = dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)

/** Code identity: a combined hash and the hash of each module, keyed by path relative to the stage module. */
export interface CodeIdentity {
  readonly hash: string
  readonly modules: Readonly<Record<string, string>>
}

const importPattern = /(?:\bfrom|\bimport)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g
/** A module URL relative to the referring module, such as a worker thread's entry; code files only. */
const moduleUrlPattern = /\bnew URL\(\s*["'](\.{1,2}\/[^"']+\.(?:[cm]?[jt]s|json))["']\s*,\s*import\.meta\.url\s*\)/g

interface ModuleEntry {
  /** Device, inode, size, mtime and ctime (ns) of the file when it was read. */
  readonly key: string
  /** SHA-256 of the file's bytes. */
  readonly source: string
  /** SHA-256 of the whitespace-minified code, the hash that enters the code identity. */
  readonly hash: string
  /** Relative import specifiers, resolved to files on each use. */
  readonly specifiers: ReadonlyArray<string>
}

/** Version of the cache file's format and of what its hashes mean. Bump it when either changes. */
const cacheFormat = 2
const cacheFile = join(runtimeDir, "..", "..", "dist", "code-hashes.json")

interface CacheFile {
  readonly format: number
  readonly esbuild: string
  readonly modules: Record<string, ModuleEntry>
}

const moduleCache = new Map<string, ModuleEntry>()
/** Identity of each module file as it was read for a code identity in this process, by path. */
const readIdentities = new Map<string, string>()
let diskCache: { readonly esbuild: string; readonly modules: Map<string, ModuleEntry>; dirty: boolean } | null = null

function esbuildVersion(): string {
  return (require("esbuild/package.json") as { version: string }).version
}

function loadDiskCache(): NonNullable<typeof diskCache> {
  if (diskCache !== null) return diskCache
  const esbuild = esbuildVersion()
  const modules = new Map<string, ModuleEntry>()
  try {
    const parsed = JSON.parse(readFileSync(cacheFile, "utf8")) as CacheFile
    // Hashes from another esbuild version may differ, so they are dropped with the file.
    if (parsed.format === cacheFormat && parsed.esbuild === esbuild) {
      for (const [path, entry] of Object.entries(parsed.modules)) modules.set(path, entry)
    }
  } catch {
    // A missing or unreadable cache file only means that every module is hashed again.
  }
  diskCache = { esbuild, modules, dirty: false }
  return diskCache
}

/**
 * Write the modules hashed since the cache file was read, keeping only entries whose file
 * still exists, through a temporary file and a rename, so readers never see a partial
 * file. A failed write is ignored, because the cache only saves time.
 */
export function saveCodeHashCache(): void {
  if (diskCache === null || !diskCache.dirty) return
  const modules: Record<string, ModuleEntry> = {}
  for (const [path, entry] of diskCache.modules) {
    if (existsSync(path)) modules[path] = entry
  }
  const content: CacheFile = { format: cacheFormat, esbuild: diskCache.esbuild, modules }
  const temporary = `${cacheFile}.${process.pid}.tmp`
  try {
    mkdirSync(dirname(cacheFile), { recursive: true })
    writeFileSync(temporary, JSON.stringify(content))
    renameSync(temporary, cacheFile)
    diskCache.dirty = false
  } catch {
    // A read-only checkout still runs, and hashes the modules again next time.
  }
}

function loaderFor(path: string): "ts" | "tsx" | "js" | "jsx" {
  if (path.endsWith(".tsx")) return "tsx"
  if (path.endsWith(".jsx")) return "jsx"
  if (path.endsWith(".js") || path.endsWith(".mjs")) return "js"
  return "ts"
}

function resolveImport(fromFile: string, specifier: string): string | null {
  const base = resolve(dirname(fromFile), specifier)
  const candidates = [base, base.replace(/\.js$/, ".ts"), `${base}.ts`, `${base}/index.ts`, `${base}.js`]
  return candidates.find((c) => existsSync(c) && statSync(c).isFile()) ?? null
}

function hashModule(path: string, key: string): ModuleEntry {
  const bytes = readFileSync(path)
  const source = createHash("sha256").update(bytes).digest("hex")
  const text = bytes.toString("utf8")
  let code: string
  if (path.endsWith(".json")) {
    code = JSON.stringify(JSON.parse(text))
  } else {
    // Loaded on first use, so a run whose modules are all cached never starts esbuild.
    const { transformSync } = require("esbuild") as typeof import("esbuild")
    code = transformSync(text, { loader: loaderFor(path), minifyWhitespace: true, legalComments: "none", format: "esm" }).code
  }
  const specifiers = [...code.matchAll(importPattern), ...code.matchAll(moduleUrlPattern)].map((match) => match[1]!)
  return { key, source, hash: createHash("sha256").update(code).digest("hex"), specifiers }
}

function readModule(path: string): ModuleEntry {
  const stat = statSync(path, { bigint: true })
  const key = fileIdentity(stat)
  readIdentities.set(path, key)
  const racy = isRacy(stat, Date.now())
  const disk = loadDiskCache()
  let entry = moduleCache.get(path) ?? disk.modules.get(path)
  if (entry === undefined || entry.key !== key || racy) {
    entry = hashModule(path, key)
    // The key is read before the bytes, so a write in between leaves a key that no longer
    // matches, and the next read hashes the file again.
    if (!racy) {
      moduleCache.set(path, entry)
      disk.modules.set(path, entry)
      disk.dirty = true
    }
  } else {
    moduleCache.set(path, entry)
  }
  checkBundledSource(path, entry.source)
  return entry
}

/** Returns the identity of every module file that a code identity in this process read, by absolute path. */
export function moduleIdentities(): ReadonlyMap<string, string> {
  return readIdentities
}

const isRuntimeModule = (path: string) => path.startsWith(runtimeDir + sep)

/** Compute the code identity of the module at `moduleUrl` (a file URL or path). */
export function codeIdentity(moduleUrl: string): CodeIdentity {
  const root = moduleUrl.startsWith("file:") ? fileURLToPath(moduleUrl) : resolve(moduleUrl)
  const baseDir = dirname(root)
  const modules: Record<string, string> = {}
  const pending = [root]
  const seen = new Set<string>()
  while (pending.length > 0) {
    const path = pending.pop()!
    if (seen.has(path)) continue
    seen.add(path)
    if (path !== root && isRuntimeModule(path)) continue
    const entry = readModule(path)
    modules[relative(baseDir, path).split(sep).join("/")] = entry.hash
    for (const specifier of entry.specifiers) {
      const target = resolveImport(path, specifier)
      if (target !== null) pending.push(target)
    }
  }
  const lines = Object.keys(modules).sort()
    .map((name) => `${name}\0${modules[name]}\n`)
  return { hash: createHash("sha256").update(lines.join("")).digest("hex"), modules }
}
