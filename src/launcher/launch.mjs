// @ts-check
/**
 * Starts the CLI from its bundle (see build.mjs), rebuilding it first when it is missing or
 * stale. The freshness check compares the identity of every input in the build's manifest
 * (about 550 files with node_modules) with the file on disk, one stat each. It reads a
 * source only when its identity was taken too soon after a write to be trusted. So a run
 * never uses code older than the sources, and an edit costs one rebuild on the next run.
 *
 * Rebuilds take a lock file, `dist/build.lock`, so parallel runs after an edit build once.
 * A process marks the build it runs as in use until it exits, so a rebuild does not delete
 * code that a long run may still import.
 */
import { closeSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync } from "node:fs"
import { hostname } from "node:os"
import { dirname, join, relative } from "node:path"
import { createRequire } from "node:module"
import { fileURLToPath, pathToFileURL } from "node:url"
import { fileIdentity } from "../runtime/file-identity.mjs"
import { isAlive, readLockHolder, tryCreateLockFile } from "../runtime/lock-file.mjs"
import { replayNoop } from "../runtime/rerun-stamp.mjs"
import { manifestFormat } from "./manifest.mjs"

/** @typedef {import("./manifest.mjs").Manifest} Manifest */
/** @typedef {{ dir: string, manifest: Manifest }} Build */

/** Absolute path of the repository this launcher belongs to. */
export const repositoryRoot = dirname(dirname(dirname(fileURLToPath(import.meta.url))))

const require = createRequire(import.meta.url)

/** @param {string} message */
const log = (message) => process.stderr.write(`octflow: ${message}\n`)

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Reads the current build named by `dist/current.json`, or returns null when there is none
 * or its files cannot be read.
 * @param {string} dist
 * @returns {Build | null}
 */
export function readCurrentBuild(dist) {
  try {
    const { id } = JSON.parse(readFileSync(join(dist, "current.json"), "utf8"))
    const dir = join(dist, String(id))
    /** @type {Manifest} */
    const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"))
    // A damaged manifest counts as no build, so the launcher builds a new one.
    for (const part of [manifest.inputs, manifest.sources, manifest.outputs]) {
      if (typeof part !== "object" || part === null) return null
    }
    return { dir, manifest }
  } catch {
    return null
  }
}

/**
 * Returns why `build` cannot be used for the sources under `root`, or null when it can.
 * @param {string} root
 * @param {Build} build
 * @returns {string | null}
 */
export function staleReason(root, build) {
  const { manifest } = build
  if (manifest.format !== manifestFormat) return "the bundle's format changed"
  if (manifest.root !== root) return `the repository moved from ${manifest.root}`
  for (const [path, identity] of Object.entries(manifest.inputs)) {
    const stat = statSync(join(root, path), { bigint: true, throwIfNoEntry: false })
    if (stat === undefined) return `${path} was removed`
    if (fileIdentity(stat) !== identity) return `${path} changed`
    const source = manifest.sources[path]
    if (source !== undefined && source.racy && sha256Of(join(root, path)) !== source.sha256) return `${path} changed`
  }
  for (const [path, bytes] of Object.entries(manifest.outputs)) {
    // Source maps are not loaded, so a missing one does not stop the build from running.
    if (path.endsWith(".map")) continue
    const stat = statSync(join(build.dir, path), { throwIfNoEntry: false })
    if (stat === undefined || stat.size !== bytes) return `${relative(root, join(build.dir, path))} is missing or damaged`
  }
  return null
}

/**
 * Returns the SHA-256 of the file at `path`. node:crypto is loaded only here, because most
 * runs find no source that needs reading.
 * @param {string} path
 * @returns {string}
 */
function sha256Of(path) {
  return require("node:crypto").createHash("sha256").update(readFileSync(path)).digest("hex")
}

/**
 * Runs `body` holding `dist/build.lock`, a lock file written whole as the workspace lock is
 * (lock-file.mjs). A lock whose process is dead on this host is taken over, and so is a lock
 * without a readable holder for more than 5 s, which a build lock of an older version could
 * leave empty.
 * @template A
 * @param {string} dist
 * @param {() => Promise<A>} body
 * @returns {Promise<A>}
 */
async function withBuildLock(dist, body) {
  const path = join(dist, "build.lock")
  mkdirSync(dist, { recursive: true })
  let announced = false
  for (;;) {
    if (tryCreateLockFile(path)) break
    const holder = readLockHolder(path)
    if (holder === null) {
      const stat = statSync(path, { throwIfNoEntry: false })
      if (stat !== undefined && Date.now() - stat.mtimeMs > 5000) unlinkSync(path)
      await sleep(20)
      continue
    }
    if (holder.host === hostname() && !isAlive(holder.pid)) {
      unlinkSync(path)
      continue
    }
    if (!announced) {
      log(`waiting for process ${holder.pid} to finish building the CLI bundle`)
      announced = true
    }
    await sleep(100)
  }
  try {
    return await body()
  } finally {
    try {
      unlinkSync(path)
    } catch {
      // Another process took the lock over as stale, which only makes it build again.
    }
  }
}

/**
 * Returns a fresh build of the sources under `root`, building one when the current build is
 * missing or stale. Writes one line to stderr before a rebuild and one after it.
 * @param {string} root
 * @returns {Promise<Build>}
 */
export async function ensureBundle(root) {
  const dist = join(root, "dist")
  const current = readCurrentBuild(dist)
  const reason = current === null ? "there is no CLI bundle yet" : staleReason(root, current)
  if (current !== null && reason === null) return current
  return withBuildLock(dist, async () => {
    // Another process may have built while this one waited for the lock.
    const latest = readCurrentBuild(dist)
    if (latest !== null && staleReason(root, latest) === null) return latest
    log(`building the CLI bundle, because ${reason}`)
    const started = performance.now()
    const { buildBundle, removeOldBuilds } = await import("./build.mjs")
    const built = await buildBundle(root, dist)
    removeOldBuilds(dist, built.manifest.id, isAlive)
    log(`built ${relative(root, built.dir)} in ${((performance.now() - started) / 1000).toFixed(1)} s`)
    return built
  })
}

/**
 * Marks `dir` as used by this process until it exits, so that `removeOldBuilds` keeps it.
 * A killed process leaves its mark, which counts only while its pid is alive.
 * @param {string} dir
 */
function markInUse(dir) {
  const users = join(dir, "in-use")
  const mark = join(users, String(process.pid))
  try {
    mkdirSync(users, { recursive: true })
    closeSync(openSync(mark, "w"))
  } catch {
    // A build folder that cannot be written cannot be rebuilt or removed either.
    return
  }
  process.on("exit", () => {
    try {
      unlinkSync(mark)
    } catch {
      // Already gone: a rebuild in another process removed the whole folder.
    }
  })
}

/**
 * Replays a `full` or `run` whose rerun stamp shows that nothing changed, without loading
 * the CLI (src/runtime/rerun-stamp.mjs). Any error leaves the command to the CLI.
 * @param {Build} build
 * @returns {boolean}
 */
function replaysNoop(build) {
  try {
    return replayNoop({ argv: process.argv.slice(2), cwd: process.cwd(), build: build.dir, env: process.env })
  } catch (error) {
    log(`checking for a no-op rerun failed (${/** @type {Error} */ (error).message}), so the CLI runs the command`)
    return false
  }
}

/** Errors of a folder that cannot be written, where running from source still works. */
const unwritableCodes = new Set(["EACCES", "EPERM", "EROFS", "ENOSPC"])

/**
 * Runs the CLI with `process.argv`: from the bundle when it can be built or is fresh,
 * from source through tsx when `dist/` cannot be written.
 * @param {string} [root]
 */
export async function launch(root = repositoryRoot) {
  let build
  try {
    build = await ensureBundle(root)
  } catch (error) {
    const code = /** @type {NodeJS.ErrnoException} */ (error).code
    if (code !== undefined && unwritableCodes.has(code)) {
      log(`cannot write the CLI bundle under ${join(root, "dist")} (${code}), so the CLI runs from source and starts slower`)
      const { register } = await import("tsx/esm/api")
      register()
      await import(pathToFileURL(join(root, "src/cli/main.ts")).href)
      return
    }
    process.stderr.write(`error: building the CLI bundle in ${join(root, "dist")} failed. ${/** @type {Error} */ (error).message}\n` +
      "Fix the error above and run the command again; `npx tsx src/cli/main.ts` runs the CLI from source, without the bundle.\n")
    process.exitCode = 2
    return
  }
  if (replaysNoop(build)) return
  markInUse(build.dir)
  await import(pathToFileURL(join(build.dir, "src/cli/main.js")).href)
}
