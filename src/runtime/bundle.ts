/**
 * Where the running code comes from: the source tree (run through tsx) or the CLI bundle
 * that src/launcher/build.mjs compiles into `dist/<build id>/`. In the bundle every
 * module's `import.meta.url` still names its source file, so paths relative to a module
 * and stage module URLs mean the same in both. This module maps the source URL of a module
 * that is loaded by URL (workflows, stage modules, worker threads) to its compiled file.
 * It also checks that a source file whose code is hashed is the one the bundle was built
 * from.
 */
import { readFileSync } from "node:fs"
import { join, relative, sep } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { BundleOutdated } from "./errors.ts"

/** The build a bundled module belongs to, as src/launcher/build.mjs defines it. */
export interface BundleInfo {
  /** Absolute path of the repository the bundle was built from. */
  readonly root: string
  /** Absolute path of the build folder. */
  readonly dir: string
  /** Entry points, as paths relative to `root` with `/` separators; each compiles to `<dir>/<path>.js`. */
  readonly entries: ReadonlyArray<string>
}

// The bundler replaces this identifier with the build's BundleInfo. Run from source, no
// such global exists, so `typeof` returns "undefined".
declare const OCTFLOW_BUNDLE: BundleInfo | undefined

/** The build this code was compiled into, or null when it runs from source. */
export const bundle: BundleInfo | null = typeof OCTFLOW_BUNDLE === "undefined" ? null : OCTFLOW_BUNDLE

const relativeToRoot = (info: BundleInfo, path: string): string | null => {
  const rel = relative(info.root, path)
  if (rel.startsWith("..") || rel === "") return null
  return rel.split(sep).join("/")
}

/**
 * Return the URL to import for the module whose source is at `sourceUrl`. That is its
 * compiled file when this code is bundled and the module is an entry point of the build.
 * Otherwise it is `sourceUrl` itself, which needs a TypeScript loader for a `.ts` file.
 */
export function runnableUrl(sourceUrl: string): string {
  if (bundle === null || !sourceUrl.startsWith("file:")) return sourceUrl
  const rel = relativeToRoot(bundle, fileURLToPath(sourceUrl))
  if (rel === null || !bundle.entries.includes(rel)) return sourceUrl
  return pathToFileURL(join(bundle.dir, rel.replace(/\.[cm]?[jt]s$/, ".js"))).href
}

/** The part of the build manifest that this module reads: SHA-256 of each project source it compiled. */
interface ManifestSources {
  readonly sources: Readonly<Record<string, { readonly sha256: string }>>
}

let manifestSources: ManifestSources["sources"] | null = null

function bundledSources(info: BundleInfo): ManifestSources["sources"] {
  if (manifestSources === null) {
    const path = join(info.dir, "manifest.json")
    manifestSources = (JSON.parse(readFileSync(path, "utf8")) as ManifestSources).sources
  }
  return manifestSources
}

/**
 * Throw `BundleOutdated` when this code is bundled and the source file at `path` (absolute),
 * whose content hash is `sha256`, differs from the file the bundle compiled. A stage's code
 * hash is read from the source files, so without this check a file edited after the
 * launcher's freshness check would be fingerprinted with code that is not the code running.
 * Files outside the bundle are not checked, because they are loaded from disk when used.
 */
export function checkBundledSource(path: string, sha256: string): void {
  if (bundle === null) return
  const rel = relativeToRoot(bundle, path)
  if (rel === null) return
  const built = bundledSources(bundle)[rel]
  if (built !== undefined && built.sha256 !== sha256) {
    throw new BundleOutdated({ path, build: bundle.dir })
  }
}
