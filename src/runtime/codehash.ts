/**
 * Code identity of a stage: the SHA-256 of its module and every project module it imports
 * (relative imports, transitively), each first passed through esbuild with whitespace
 * minification, which drops comments and formatting, so a comment edit changes nothing.
 * Modules of the runtime itself are left out because they do not change stage results.
 */
import { createHash } from "node:crypto"
import { existsSync, readFileSync, statSync } from "node:fs"
import { dirname, relative, resolve, sep } from "node:path"
import { fileURLToPath } from "node:url"
import { transformSync } from "esbuild"

const runtimeDir = dirname(fileURLToPath(import.meta.url))

/** Code identity: a combined hash and the hash of each module, keyed by path relative to the stage module. */
export interface CodeIdentity {
  readonly hash: string
  readonly modules: Readonly<Record<string, string>>
}

const importPattern = /(?:\bfrom|\bimport)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g

interface ModuleEntry {
  readonly mtimeMs: number
  readonly size: number
  readonly hash: string
  readonly imports: ReadonlyArray<string>
}

const moduleCache = new Map<string, ModuleEntry>()

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

function readModule(path: string): ModuleEntry {
  const stat = statSync(path)
  const cached = moduleCache.get(path)
  if (cached !== undefined && cached.mtimeMs === stat.mtimeMs && cached.size === stat.size) return cached

  const source = readFileSync(path, "utf8")
  const code = path.endsWith(".json")
    ? JSON.stringify(JSON.parse(source))
    : transformSync(source, { loader: loaderFor(path), minifyWhitespace: true, legalComments: "none", format: "esm" }).code
  const imports: Array<string> = []
  for (const match of code.matchAll(importPattern)) {
    const target = resolveImport(path, match[1]!)
    if (target !== null) imports.push(target)
  }
  const entry = { mtimeMs: stat.mtimeMs, size: stat.size, hash: createHash("sha256").update(code).digest("hex"), imports }
  moduleCache.set(path, entry)
  return entry
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
    pending.push(...entry.imports)
  }
  const lines = Object.keys(modules).sort().map((name) => `${name}\0${modules[name]}\n`)
  return { hash: createHash("sha256").update(lines.join("")).digest("hex"), modules }
}
