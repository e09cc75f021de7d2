// @ts-check
/**
 * Builds the CLI bundle: one esbuild pass over the CLI, the worker modules (stage tasks,
 * hashing, training replicas, inference) and every module under workflows/ and stages/
 * into `dist/<build id>/`, with code splitting, so a
 * command loads only the chunks it imports. Packages with native code, data files next to
 * their code or a process-wide registry (DuckDB's binding, TensorFlow.js, esbuild, tsx)
 * stay external and load from node_modules.
 *
 * Each project module's `import.meta.url` is replaced with its source file's URL. So
 * relative paths, stage module URLs and code hashes mean the same as when the module runs
 * from source, and src/runtime/bundle.ts maps such URLs to compiled files.
 *
 * The build is written to a new folder, fsynced, and then `dist/current.json` is replaced
 * by a rename, so a killed build leaves at most an unused folder, never a pointer to a
 * partial one. `dist/<id>/manifest.json` lists the identity of every input (for the
 * launcher's freshness check), the SHA-256 of every project source (for the runtime's
 * check before hashing stage code) and the size of every output.
 */
import { createHash } from "node:crypto"
import {
  closeSync, constants, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync
} from "node:fs"
import { join, relative, sep } from "node:path"
import { pathToFileURL } from "node:url"
import { fileIdentity, isRacy } from "../runtime/file-identity.mjs"
import { manifestFormat } from "./manifest.mjs"

/** Files that shape the build without being bundled, relative to the repository root. */
const configurationFiles = [
  "package.json", "tsconfig.json", "src/launcher/build.mjs", "src/launcher/manifest.mjs", "src/runtime/file-identity.mjs"
]

/**
 * Package specifiers left to Node at run time. DuckDB's and TensorFlow's native bindings
 * cannot be bundled, and src/runtime/duckdb.ts loads DuckDB's with require, which must
 * return the same module to @duckdb/node-api. tfjs backends register with the one
 * tfjs-core instance that tfjs-node would load, and the wasm backend finds its .wasm files
 * next to its own code.
 */
const external = ["*.node", "@duckdb/node-bindings", "@tensorflow/*", "esbuild", "tsx", "tsx/*"]

/**
 * Bundled CommonJS packages call `require`, which an ES module lacks, so every output file
 * defines one resolving from its own location.
 */
const requireBanner =
  'import { createRequire as octflowCreateRequire } from "node:module";\nconst require = octflowCreateRequire(import.meta.url);'

/** @typedef {import("./manifest.mjs").Manifest} Manifest */

/**
 * Lists the entry points, relative to `root` with `/` separators: the CLI, the worker
 * modules, and every TypeScript module under workflows/ and stages/, since any of those may
 * be loaded by URL as a workflow or a stage module.
 * @param {string} root
 * @returns {string[]}
 */
export function entryPoints(root) {
  const found = [
    "src/cli/main.ts",
    "src/runtime/worker.ts",
    "src/runtime/hash-worker.ts",
    "src/ml/replica-worker.ts",
    "src/eval/predictor-worker.ts"
  ]
  /** @param {string} dir */
  const walk = (dir) => {
    for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
      const path = `${dir}/${entry.name}`
      if (entry.isDirectory()) walk(path)
      else if (/\.m?ts$/.test(entry.name) && !entry.name.endsWith(".d.ts")) found.push(path)
    }
  }
  walk("workflows")
  walk("stages")
  return found.sort()
}

/** @param {string} path */
const toPosix = (path) => path.split(sep).join("/")

/**
 * Returns an esbuild plugin that loads every project source itself. It records the file's
 * identity and SHA-256, and replaces `import.meta.url` with the file's own URL.
 * @param {string} root
 * @param {typeof import("esbuild")} esbuild
 * @param {Manifest["sources"]} sources filled in as files load
 * @param {Record<string, string>} identities filled in as files load
 * @returns {import("esbuild").Plugin}
 */
function projectSources(root, esbuild, sources, identities) {
  const tsconfig = JSON.parse(readFileSync(join(root, "tsconfig.json"), "utf8"))
  const escapedRoot = (root + sep).replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&")
  return {
    name: "octflow-project-sources",
    setup(build) {
      build.onLoad({ filter: new RegExp(`^${escapedRoot}.*\\.[cm]?[jt]s$`) }, async (args) => {
        const rel = toPosix(relative(root, args.path))
        if (rel.startsWith("node_modules/")) return undefined
        const before = statSync(args.path, { bigint: true })
        const bytes = readFileSync(args.path)
        const after = statSync(args.path, { bigint: true })
        if (fileIdentity(before) !== fileIdentity(after)) {
          throw new Error(`${rel} changed while the bundle was being built; run the command again`)
        }
        identities[rel] = fileIdentity(before)
        sources[rel] = { sha256: createHash("sha256").update(bytes).digest("hex"), racy: isRacy(before, Date.now()) }
        const loader = /\.[cm]?ts$/.test(rel) ? "ts" : "js"
        const text = bytes.toString("utf8")
        if (!text.includes("import.meta.url")) return { contents: text, loader }
        const transformed = await esbuild.transform(text, {
          loader,
          format: "esm",
          sourcefile: args.path,
          sourcemap: "inline",
          tsconfigRaw: { compilerOptions: tsconfig.compilerOptions },
          define: { "import.meta.url": JSON.stringify(pathToFileURL(args.path).href) }
        })
        return { contents: transformed.code, loader: "js" }
      })
    }
  }
}

/** @param {string} path @param {number} flags */
function fsyncPath(path, flags) {
  const fd = openSync(path, flags)
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * Writes `text` to `path` through a temporary file and a rename, fsyncing both the file
 * and its folder, so `path` contains either its old or its new content after a crash.
 * @param {string} path
 * @param {string} folder the folder that contains `path`
 * @param {string} text
 */
export function writeFileAtomically(path, folder, text) {
  const temporary = `${path}.${process.pid}.tmp`
  writeFileSync(temporary, text)
  fsyncPath(temporary, constants.O_RDONLY)
  renameSync(temporary, path)
  fsyncPath(folder, constants.O_RDONLY | constants.O_DIRECTORY)
}

/**
 * Builds the bundle into a new folder under `dist` and makes it current. Returns the
 * build folder and its manifest. Throws esbuild's error, whose message lists each
 * compile error with its file and line, when the sources do not compile.
 * @param {string} root absolute path of the repository
 * @param {string} dist absolute path of the folder that contains the builds
 * @returns {Promise<{ dir: string, manifest: Manifest }>}
 */
export async function buildBundle(root, dist) {
  const esbuild = await import("esbuild")
  const id = `${new Date().toISOString().replace(/[-:.]/g, "").replace("T", "-")}-${process.pid}`
  const dir = join(dist, id)
  const entries = entryPoints(root)
  mkdirSync(dir, { recursive: true })
  try {
    const manifest = await compile(esbuild, root, dir, id, entries)
    writeFileAtomically(join(dist, "current.json"), dist, JSON.stringify({ id }))
    return { dir, manifest }
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
}

/**
 * Runs esbuild into `dir`, fsyncs the outputs and writes the manifest.
 * @param {typeof import("esbuild")} esbuild
 * @param {string} root
 * @param {string} dir
 * @param {string} id
 * @param {string[]} entries
 * @returns {Promise<Manifest>}
 */
async function compile(esbuild, root, dir, id, entries) {
  /** @type {Manifest["sources"]} */
  const sources = {}
  /** @type {Record<string, string>} */
  const inputs = {}
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: entries,
    outdir: dir,
    outbase: root,
    entryNames: "[dir]/[name]",
    chunkNames: "chunks/[name]-[hash]",
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    external,
    define: { OCTFLOW_BUNDLE: JSON.stringify({ root, dir, entries }) },
    banner: { js: requireBanner },
    minifyWhitespace: true,
    minifySyntax: true,
    sourcemap: "linked",
    sourcesContent: false,
    metafile: true,
    logLevel: "warning",
    plugins: [projectSources(root, esbuild, sources, inputs)]
  })

  // Inputs named like `<define:...>` are esbuild's own, not files.
  const files = Object.keys(result.metafile.inputs).filter((path) => !path.startsWith("<"))
  for (const path of [...files, ...configurationFiles, "node_modules/esbuild/package.json"]) {
    inputs[path] ??= fileIdentity(statSync(join(root, path), { bigint: true }))
  }
  /** @type {Record<string, number>} */
  const outputs = {}
  for (const [path, output] of Object.entries(result.metafile.outputs)) {
    const absolute = join(root, path)
    // Source maps are not fsynced: after a power loss a damaged map misleads only a
    // debugger, while damaged code would run.
    if (path.endsWith(".js")) fsyncPath(absolute, constants.O_RDONLY)
    outputs[toPosix(relative(dir, absolute))] = output.bytes
  }
  for (const folder of new Set(Object.keys(outputs).map((path) => join(dir, path, "..")))) {
    fsyncPath(folder, constants.O_RDONLY | constants.O_DIRECTORY)
  }

  /** @type {Manifest} */
  const manifest = {
    format: manifestFormat,
    id,
    root,
    builtAt: new Date().toISOString(),
    esbuild: esbuild.version,
    inputs,
    sources,
    outputs
  }
  writeFileAtomically(join(dir, "manifest.json"), dir, JSON.stringify(manifest))
  return manifest
}

/**
 * Removes every build folder under `dist` except `keep` and those that a live process on
 * this host marked as in use (see `markInUse` in launch.mjs). Call it with the build lock
 * held, so no other build is being written.
 * @param {string} dist
 * @param {string} keep id of the build to keep
 * @param {(pid: number) => boolean} isAlive
 */
export function removeOldBuilds(dist, keep, isAlive) {
  for (const entry of readdirSync(dist, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === keep) continue
    const users = join(dist, entry.name, "in-use")
    let pids = /** @type {string[]} */ ([])
    try {
      pids = readdirSync(users)
    } catch {
      // No process ever used this build, or it was never completed.
    }
    if (pids.some((pid) => isAlive(Number(pid)))) continue
    rmSync(join(dist, entry.name), { recursive: true, force: true })
  }
}
