// @ts-check
/**
 * Rerun stamps: the fast path of a no-op rerun. A successful `full` or `run` leaves
 * `<workspace>/rerun-stamp.json`, which names its run, its exact command line, and the
 * identity (device, inode, size, modification and change times) of every file its plan
 * read: the whole tree of each source's data folders, the stage modules, the params file
 * and the installed packages that choose the backend. It also lists the stored objects and
 * view folders of the run. The launcher checks a stamp before it loads the CLI bundle. When
 * the command line, the environment, the bundle and every identity are unchanged and every
 * object is intact, a normal run would reuse every task, so the launcher records that run
 * itself. It links `runs/<id>` to the same views, appends the run to
 * `<workspace>/pending-runs.jsonl` and moves `latest`. The next process that opens the
 * database imports the run with the same records a normal no-op run writes
 * (src/runtime/rerun-record.ts).
 *
 * Every process that opens the workspace for writing removes the stamp first, except
 * `gc --dry-run`, which changes nothing a rerun reuses. So a stamp describes the newest
 * successful run and nothing written since. A file whose identity was taken less than
 * `racyMs` after a change is not trusted, and such a run writes no stamp.
 *
 * Plain JavaScript, because the launcher runs before any TypeScript is loaded.
 */
import {
  appendFileSync, closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync,
  unlinkSync
} from "node:fs"
import { availableParallelism, hostname } from "node:os"
import { createRequire } from "node:module"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { formatSummaryTable } from "../cli/summary-table.mjs"
import { fileIdentity } from "./file-identity.mjs"
import { tryCreateLockFile } from "./lock-file.mjs"

/** Version of the stamp's layout. A stamp of another version is ignored. */
export const stampFormat = 1

/** Identity recorded for a path that did not exist. */
export const absent = "absent"

/** Prefix of the identity of a path that could not be read. */
export const unreadable = "unreadable:"

/**
 * @typedef {object} RerunStamp
 * @property {number} format
 * @property {string} workspace absolute path of the workspace
 * @property {string} cwd working folder of the command
 * @property {ReadonlyArray<string>} argv command line after the script name
 * @property {Readonly<Record<string, string>>} environment see `relevantEnvironment`
 * @property {string} node Node.js version
 * @property {string} execPath path of the Node.js binary
 * @property {ReadonlyArray<string>} execArgv options given to Node.js itself, such as V8 flags that change which CPU features code uses
 * @property {ReadonlyArray<string>} packageSearchPaths the folders Node searches for a backend package, which HOME and NODE_PATH change
 * @property {string} host host name, since the CPU decides which SIMD kernels a run uses
 * @property {string} build folder of the CLI bundle the run used
 * @property {string} database identity of the database file and its write-ahead log, taken after the run closed them
 * @property {number} cores logical cores, which the default of --jobs follows
 * @property {string} run id of the run the stamp describes
 * @property {number} capturedAt time (ms since the epoch) before the plan read any file
 * @property {ReadonlyArray<readonly [string, string]>} files absolute path and identity of each file and folder the plan read
 * @property {ReadonlyArray<readonly [string, "file" | "directory", number]>} objects each stored object: path relative to the workspace, kind and size
 * @property {ReadonlyArray<readonly [string, string]>} views each stage and its view folder, relative to the workspace
 * @property {ReadonlyArray<readonly [string, number]>} stages each selected stage and its number of tasks
 * @property {string} outputs the lines after the summary that list the run's outputs
 */

/** Absolute path of the repository this module belongs to. */
export const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..")

/**
 * Returns the folders Node searches for a package required from stages/support/backend.ts,
 * which picks the TensorFlow.js backend: node_modules folders up the tree, NODE_PATH, and
 * folders under HOME.
 * @returns {ReadonlyArray<string>}
 */
export function packageSearchPaths() {
  const require = createRequire(join(repositoryRoot, "stages", "support", "backend.ts"))
  return require.resolve.paths("@tensorflow/tfjs-node") ?? []
}

/** @param {string} workspace */
export const stampPath = (workspace) => join(workspace, "rerun-stamp.json")

/** @param {string} workspace */
export const pendingRunsPath = (workspace) => join(workspace, "pending-runs.jsonl")

/** Returns a new run id: the UTC start time to the second and six random hex digits. */
export function newRunId() {
  const time = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")
  return `${time}-${Math.random().toString(16).slice(2, 8)}`
}

/**
 * Returns the environment variables that can change what a run computes or which backend it
 * picks, sorted by name.
 * @param {NodeJS.ProcessEnv} env
 * @returns {Record<string, string>}
 */
export function relevantEnvironment(env) {
  /** @type {Record<string, string>} */
  const picked = {}
  for (const name of Object.keys(env).sort()) {
    if (/^(OCTFLOW_|TF_)/.test(name) || name === "NODE_OPTIONS" || name === "NODE_PATH") picked[name] = env[name] ?? ""
  }
  return picked
}

/**
 * Returns the identity of the file or folder at `path` (following links), `absent`, or
 * `unreadable:<error code>` when it cannot be read, such as a link loop.
 * @param {string} path
 * @returns {string}
 */
export function identityOf(path) {
  try {
    const stat = statSync(path, { bigint: true, throwIfNoEntry: false })
    return stat === undefined ? absent : fileIdentity(stat)
  } catch (error) {
    return `${unreadable}${/** @type {NodeJS.ErrnoException} */ (error).code ?? "error"}`
  }
}

/**
 * Returns the identity of the workspace's database file and of its write-ahead log, which
 * DuckDB removes at a clean close. Any write to the database changes one of them, and so
 * does copying another file over it.
 * @param {string} workspace
 * @returns {string}
 */
export function databaseIdentity(workspace) {
  const path = join(workspace, "octflow.duckdb")
  return `${identityOf(path)} ${identityOf(`${path}.wal`)}`
}

/**
 * Returns the size in bytes of a stored object: a file's size, or the total size of a
 * folder's files. Returns null when it is missing.
 * @param {string} path absolute path
 * @param {"file" | "directory"} kind
 * @returns {number | null}
 */
export function objectSize(path, kind) {
  try {
    if (kind === "file") return statSync(path).size
    return treeSize(path)
  } catch {
    return null
  }
}

/** @param {string} path */
function treeSize(path) {
  const info = lstatSync(path)
  if (!info.isDirectory()) return info.size
  let total = 0
  for (const name of readdirSync(path)) total += treeSize(join(path, name))
  return total
}

/**
 * Returns the workspace a `full` or `run` command line names, resolved against `cwd`, or
 * null for any other command. Only the stamp inside it is read, and its command line must equal
 * `argv`, so a flag this reads differently from the CLI finds no matching stamp.
 * @param {ReadonlyArray<string>} argv
 * @param {string} cwd
 * @returns {string | null}
 */
function workspaceOf(argv, cwd) {
  if (argv[0] !== "full" && argv[0] !== "run") return null
  let workspace = "./cache"
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === "--workspace" && i + 1 < argv.length) workspace = argv[++i]
    else if (arg.startsWith("--workspace=")) workspace = arg.slice("--workspace=".length)
  }
  return resolve(cwd, workspace)
}

/**
 * Returns why `stamp` does not describe a no-op of this command, or null when it does.
 * @param {RerunStamp} stamp
 * @param {{ argv: ReadonlyArray<string>, cwd: string, workspace: string, build: string, env: NodeJS.ProcessEnv }} command
 * @returns {string | null}
 */
export function mismatch(stamp, command) {
  if (stamp.format !== stampFormat) return "the stamp's format changed"
  if (stamp.workspace !== command.workspace || stamp.cwd !== command.cwd) return "the folders differ"
  if (JSON.stringify(stamp.argv) !== JSON.stringify(command.argv)) return "the command line differs"
  if (JSON.stringify(stamp.environment) !== JSON.stringify(relevantEnvironment(command.env))) return "the environment differs"
  if (stamp.node !== process.version || stamp.execPath !== process.execPath) return "Node.js differs"
  if (JSON.stringify(stamp.execArgv) !== JSON.stringify(process.execArgv)) return "Node.js options differ"
  if (stamp.host !== hostname()) return "the host differs"
  if (JSON.stringify(stamp.packageSearchPaths) !== JSON.stringify(packageSearchPaths())) return "the package search folders differ"
  if (stamp.build !== command.build) return "the code changed"
  if (stamp.cores !== availableParallelism()) return "the number of cores differs"
  if (databaseIdentity(stamp.workspace) !== stamp.database) return "the database changed"
  const latest = lstatSync(join(stamp.workspace, "latest"), { throwIfNoEntry: false })
  if (latest !== undefined && !latest.isSymbolicLink()) return "latest is not a link"
  for (const [path, identity] of stamp.files) {
    if (identityOf(path) !== identity) return `${path} changed`
  }
  for (const [path, kind, size] of stamp.objects) {
    if (objectSize(join(stamp.workspace, path), kind) !== size) return `${path} is missing or damaged`
  }
  for (const [, view] of stamp.views) {
    if (statSync(join(stamp.workspace, view), { throwIfNoEntry: false }) === undefined) return `${view} is missing`
  }
  return null
}

/** @param {string} path */
function readStamp(path) {
  try {
    return readFileSync(path, "utf8")
  } catch {
    return null
  }
}

/**
 * Records a no-op rerun of the run that `stamp` describes as run `runId`. It links the run's
 * folder to the stamp's views and appends the run to the pending runs durably. A failure
 * there removes the folder and throws, so the CLI runs the command instead. Then it moves
 * `latest`. The run is recorded by then, so a failure to move it is returned, not thrown,
 * and the CLI does not record the run a second time.
 * @param {RerunStamp} stamp
 * @param {string} runId
 * @param {number} started ms since the epoch
 */
function recordReplay(stamp, runId, started) {
  const summary = stamp.stages.map(([stage, tasks]) => ({ stage, ran: 0, cached: tasks, failed: 0, blocked: 0, ms: 0 }))
  const entry = {
    run: runId, base: stamp.run, started: new Date(started).toISOString(), finished: new Date().toISOString(),
    host: hostname(), pid: process.pid, summary
  }
  const runDir = join(stamp.workspace, "runs", runId)
  try {
    mkdirSync(runDir, { recursive: true })
    for (const [stage, view] of stamp.views) symlinkSync(relative(runDir, join(stamp.workspace, view)), join(runDir, stage))
    const fd = openSync(pendingRunsPath(stamp.workspace), "a")
    try {
      // The leading newline ends a line that a kill cut short, so only that line is lost.
      appendFileSync(fd, "\n" + JSON.stringify(entry) + "\n")
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  } catch (error) {
    rmSync(runDir, { recursive: true, force: true })
    throw error
  }

  const temporary = join(stamp.workspace, `.latest-${runId}`)
  try {
    symlinkSync(relative(stamp.workspace, runDir), temporary)
    renameSync(temporary, join(stamp.workspace, "latest"))
  } catch (error) {
    rmSync(temporary, { force: true })
    return { summary, latestError: /** @type {Error} */ (error) }
  }
  return { summary, latestError: null }
}

/** Ends output quietly when a reader closes its pipe (`full | head -1`), as the CLI does. */
function ignoreClosedPipes() {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (error) => {
      if (/** @type {NodeJS.ErrnoException} */ (error).code !== "EPIPE") throw error
    })
  }
}

/**
 * Records and prints a no-op rerun of `argv` when the workspace's stamp shows that nothing
 * the run depends on changed, and returns true. Otherwise it changes nothing and returns
 * false, so the CLI runs the command.
 * @param {{ argv: ReadonlyArray<string>, cwd: string, build: string, env: NodeJS.ProcessEnv }} command
 * @returns {boolean}
 */
export function replayNoop(command) {
  const started = Date.now()
  const workspace = workspaceOf(command.argv, command.cwd)
  if (workspace === null) return false
  const path = stampPath(workspace)
  const before = readStamp(path)
  if (before === null) return false

  /** @type {RerunStamp} */
  let stamp
  try {
    stamp = JSON.parse(before)
  } catch {
    return false
  }
  // The command line is compared before the lock is taken, so another command never takes it here.
  if (stamp.format !== stampFormat || JSON.stringify(stamp.argv) !== JSON.stringify(command.argv)) return false

  const lock = join(workspace, "lock")
  let locked = false
  try {
    locked = tryCreateLockFile(lock)
  } catch {
    // A workspace this process cannot write is left to the CLI, which names the error.
  }
  if (!locked) return false
  try {
    // A run may have replaced or removed the stamp before this process took the lock.
    if (readStamp(path) !== before) return false
    if (mismatch(stamp, { ...command, workspace }) !== null) return false

    const runId = newRunId()
    const { summary, latestError } = recordReplay(stamp, runId, started)
    const tasks = summary.reduce((sum, stage) => sum + stage.cached, 0)
    ignoreClosedPipes()
    process.stderr.write(
      `run ${runId}: nothing changed since run ${stamp.run}, so its ${tasks} results are reused ` +
        `(checked ${stamp.files.length} files and ${stamp.objects.length} stored objects)\n`
    )
    process.stdout.write(`${formatSummaryTable(runId, "ok", summary, Date.now() - started)}\n`)
    if (latestError === null) {
      process.stdout.write(`${stamp.outputs}\n`)
      return true
    }
    process.stderr.write(
      `error: run ${runId} is recorded, but moving ${join(workspace, "latest")} to it failed (${latestError.message}). ` +
        `latest still shows an earlier run with the same outputs; the outputs of this run are in ${join(workspace, "runs", runId)}. ` +
        "Fix the workspace folder, then run the command again.\n"
    )
    process.exitCode = 2
    return true
  } finally {
    try {
      unlinkSync(lock)
    } catch {
      // Only a process that wrongly took the lock over as stale removes it.
    }
  }
}
