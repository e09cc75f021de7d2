/**
 * The writing side of rerun stamps (see rerun-stamp.mjs). It records what a run's plan read
 * and writes the stamp a successful run leaves. It removes the stamp when a process opens
 * the workspace for writing, and imports the no-op reruns that the launcher recorded
 * without opening the database.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync, type BigIntStats } from "node:fs"
import { availableParallelism, hostname } from "node:os"
import { readFile, rm } from "node:fs/promises"
import { dirname, join, resolve } from "node:path"
import { bundle } from "./bundle.ts"
import type { Database } from "./db.ts"
import { fileIdentity, racyMs } from "./file-identity.mjs"
import {
  absent, databaseIdentity, identityOf, packageSearchPaths, repositoryRoot, unreadable, pendingRunsPath, relevantEnvironment, stampFormat, stampPath, type RerunStamp
} from "./rerun-stamp.mjs"
import type { Layout, StoredObject } from "./store.ts"

/** Maximum number of files in a run's source folders for which a stamp is written, since checking more would not be fast. */
const maxFiles = 200_000


/**
 * The files and folders a plan read, with their identities, taken before the plan read
 * them. A later change gives a new identity, so the stamp never trusts a file the run did
 * not see. `markUntrusted` records what cannot be checked this way, and then no stamp is
 * written.
 */
export class PlanReads {
  readonly capturedAt = Date.now()
  private readonly files = new Map<string, string>()
  private untrustedReason: string | null = null

  /** Records the identity of `path`, or that it is absent. */
  addFile(path: string): void {
    const absolute = resolve(path)
    if (!this.files.has(absolute)) this.files.set(absolute, identityOf(absolute))
  }

  /** Records an identity that was taken earlier, such as the code hash cache's. */
  addIdentity(path: string, identity: string): void {
    if (!this.files.has(path)) this.files.set(path, identity)
  }

  /**
   * Records `root` and every folder and file under it, following links once. A folder's
   * identity changes when an entry is added, removed or renamed, and a file's when it is
   * written, so any change that a source's listing could see changes one of them.
   */
  addTree(root: string): void {
    const visited = new Set<string>()
    const walk = (path: string) => {
      if (this.untrustedReason !== null) return
      let stat: BigIntStats | undefined
      try {
        stat = statSync(path, { bigint: true, throwIfNoEntry: false })
      } catch (error) {
        // A link loop, or a file this user may not read. The source reports it if it matters.
        this.markUntrusted(`${path} cannot be read (${(error as NodeJS.ErrnoException).code})`)
        return
      }
      if (stat === undefined) {
        this.files.set(path, absent)
        return
      }
      this.files.set(path, fileIdentity(stat))
      if (this.files.size > maxFiles) this.markUntrusted(`the data folders hold more than ${maxFiles} files`)
      if (!stat.isDirectory()) return
      const key = `${stat.dev}:${stat.ino}`
      if (visited.has(key)) return
      visited.add(key)
      let names: Array<string>
      try {
        names = readdirSync(path)
      } catch {
        this.markUntrusted(`${path} cannot be listed`)
        return
      }
      for (const name of names) walk(join(path, name))
    }
    walk(resolve(root))
  }

  /** Marks the reads untrusted when a file that a source listed lies outside the folders it named. */
  requireRecorded(paths: ReadonlyArray<string>): void {
    const outside = paths.find((path) => !this.files.has(resolve(path)))
    if (outside !== undefined) this.markUntrusted(`${outside} lies outside its source's folders`)
  }

  markUntrusted(reason: string): void {
    this.untrustedReason ??= reason
  }

  /**
   * Returns the recorded files, or the reason they cannot be trusted. That is a reason given
   * to `markUntrusted`, or a file changed less than `racyMs` before its identity was taken,
   * since a second write in the same timestamp tick would keep that identity.
   */
  trusted(): { readonly files: ReadonlyArray<readonly [string, string]> } | { readonly reason: string } {
    if (this.untrustedReason !== null) return { reason: this.untrustedReason }
    for (const [path, identity] of this.files) {
      if (identity === absent) continue
      if (identity.startsWith(unreadable)) return { reason: `${path} cannot be read` }
      const [, , , mtimeNs, ctimeNs] = identity.split(":")
      const changedMs = Number(BigInt(mtimeNs!) > BigInt(ctimeNs!) ? BigInt(mtimeNs!) : BigInt(ctimeNs!)) / 1e6
      if (this.capturedAt - changedMs < racyMs) return { reason: `${path} changed moments before the run` }
    }
    return { files: [...this.files] }
  }
}

/** The native TensorFlow.js packages, whose compiled binding decides the backend. */
const nativePackages = ["tfjs-node", "tfjs-node-gpu"]

/**
 * Records the installed packages that decide the backend and the versions that join
 * fingerprints. Node looks for a package in every folder of `require.resolve.paths`, so the
 * `@tensorflow` folder of each is recorded, and gains or loses an entry when a backend is
 * installed or removed there. npm rewrites node_modules/.package-lock.json on every install.
 * A native package's binding is compiled into `lib/napi-v<N>/`, so those folders are
 * recorded too, as a rebuild that adds the binding changes them without an install.
 */
export function addInstalledPackages(reads: PlanReads): void {
  reads.addFile(join(repositoryRoot, "node_modules", ".package-lock.json"))
  for (const modules of packageSearchPaths()) {
    reads.addFile(join(modules, "@tensorflow"))
    for (const name of nativePackages) {
      // The package folder changes when `lib` is added to it, and `lib` when a binding is.
      const lib = join(modules, "@tensorflow", name, "lib")
      reads.addFile(dirname(lib))
      reads.addFile(lib)
      let entries: Array<string> = []
      try {
        entries = readdirSync(lib).filter((entry) => entry.startsWith("napi-v"))
      } catch {
        // Not installed here, or installed without a compiled binding, which the lines above record as absent.
      }
      for (const entry of entries) reads.addFile(join(lib, entry))
    }
  }
}

/** The fields of a stamp that come from the command line. A run writes a stamp only when the CLI passes them. */
export interface StampRequest {
  readonly cwd: string
  readonly argv: ReadonlyArray<string>
  /** The process's environment when it started, before the CLI set any variable. */
  readonly env: NodeJS.ProcessEnv
  /** The lines that list the run's outputs, read once the run's folders are linked. */
  readonly describeOutputs: () => string
}

/**
 * Returns the stamp of a successful run, but for the database's identity, which
 * `saveStamp` adds once the database is closed. Returns why no stamp can be written
 * instead, when there is a reason.
 */
export function prepareStamp(
  ws: Layout, request: StampRequest, reads: PlanReads, run: {
    readonly id: string
    readonly objects: ReadonlyArray<StoredObject>
    readonly views: ReadonlyMap<string, string>
    readonly stages: ReadonlyArray<readonly [string, number]>
  }
): { readonly stamp: RerunStamp } | { readonly reason: string } {
  const trusted = reads.trusted()
  if ("reason" in trusted) return trusted
  if (bundle === null) return { reason: "the CLI runs from source" }
  const objects = new Map(run.objects.map((o) => [o.path, [o.path, o.kind, o.size] as const]))
  const stamp: RerunStamp = {
    format: stampFormat,
    workspace: ws.root,
    cwd: request.cwd,
    argv: request.argv,
    environment: relevantEnvironment(request.env),
    node: process.version,
    execPath: process.execPath,
    execArgv: process.execArgv,
    packageSearchPaths: packageSearchPaths(),
    host: hostname(),
    build: bundle.dir,
    database: "",
    cores: availableParallelism(),
    run: run.id,
    capturedAt: reads.capturedAt,
    files: trusted.files,
    objects: [...objects.values()],
    views: [...run.views].map(([stage, view]) => [stage, view] as const),
    stages: run.stages,
    outputs: request.describeOutputs()
  }
  return { stamp }
}

/**
 * Writes `stamp` with the identity of the closed database, through a temporary file and a
 * rename, so a reader sees a whole stamp or none. Call with the workspace lock held.
 */
export function saveStamp(ws: Layout, stamp: RerunStamp): void {
  writeWhole(ws, { ...stamp, database: databaseIdentity(ws.root) })
}

/**
 * Updates the database identity of the workspace's stamp after a read command imported
 * pending runs, when the stamp matched the database as it was before the import
 * (`before`). The import adds only run records, which change no result that a rerun would
 * reuse. Call with the workspace lock held and the database closed.
 */
export function refreshStampDatabase(ws: Layout, before: string): void {
  let stamp: RerunStamp
  try {
    stamp = JSON.parse(readFileSync(stampPath(ws.root), "utf8")) as RerunStamp
  } catch {
    return
  }
  if (stamp.database === before) saveStamp(ws, stamp)
}

function writeWhole(ws: Layout, stamp: RerunStamp): void {
  // Staging is swept when the workspace is next opened for writing, so a kill leaves no stray file.
  mkdirSync(ws.staging, { recursive: true })
  const temporary = join(ws.staging, `rerun-stamp.${process.pid}.tmp`)
  writeFileSync(temporary, JSON.stringify(stamp))
  renameSync(temporary, stampPath(ws.root))
}

/** Removes the workspace's stamp. Call it with the workspace lock held, before anything is written. */
export function removeStamp(ws: Layout): void {
  try {
    unlinkSync(stampPath(ws.root))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error
  }
}

/** One no-op rerun that the launcher recorded, as one line of pending-runs.jsonl. */
interface PendingRun {
  readonly run: string
  readonly base: string
  readonly started: string
  readonly finished: string
  readonly host: string
  readonly pid: number
  readonly summary: unknown
}

const isPendingRun = (value: unknown): value is PendingRun => {
  const entry = value as Partial<PendingRun> | null
  return typeof entry?.run === "string" && typeof entry.base === "string" && typeof entry.started === "string" &&
    typeof entry.finished === "string" && typeof entry.host === "string" && typeof entry.pid === "number"
}

/**
 * Imports the no-op reruns of pending-runs.jsonl into `db`, each with the records a normal
 * no-op rerun of its base run writes: the run row, its params, and every task of the base
 * run as reused. Runs already imported are skipped, so a crash between the commit and the
 * file's removal imports nothing twice. A line cut short by a kill is dropped, and so is a
 * run whose base run the database lacks, since it has nothing to repeat. Returns the number
 * of runs imported.
 */
export async function importPendingRuns(db: Database, ws: Layout): Promise<number> {
  const path = pendingRunsPath(ws.root)
  let text: string
  try {
    text = await readFile(path, "utf8")
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0
    throw error
  }
  const entries: Array<PendingRun> = []
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    try {
      const parsed: unknown = JSON.parse(line)
      if (isPendingRun(parsed)) entries.push(parsed)
    } catch {
      // A line cut short by a kill while it was appended; its run left no other record.
    }
  }
  const ids = [...new Set(entries.flatMap((entry) => [entry.run, entry.base]))]
  const known = new Set(
    ids.length === 0 ? [] : (await db.allAsJson<{ id: string }>(`SELECT id FROM runs WHERE id IN (${ids.map((_, i) => `$${i + 1}`).join(",")})`, ids))
      .map((row) => row.id))
  const fresh = [...new Map(entries.map((entry) => [entry.run, entry])).values()]
    .filter((entry) => !known.has(entry.run) && known.has(entry.base))
  await db.transaction(async (tx) => {
    for (const entry of fresh) {
      await tx.run(
        `INSERT INTO runs (id, workflow, started, finished, status, argv, profile, params, data_dir, host, pid, seed, jobs,
           node_version, targets, summary, stages)
         SELECT $1, workflow, $2::TIMESTAMPTZ, $3::TIMESTAMPTZ, 'ok', argv, profile, params, data_dir, $4, $5, seed, jobs,
           node_version, targets, $6, stages FROM runs WHERE id = $7`,
        [entry.run, entry.started, entry.finished, entry.host, entry.pid, JSON.stringify(entry.summary), entry.base])
      await tx.run("INSERT INTO params SELECT $1, stage, key, value, origin FROM params WHERE run_id = $2", [entry.run, entry.base])
      await tx.run(
        `INSERT INTO run_tasks SELECT $1, stage, item, execution_id, 'cached' FROM run_tasks
         WHERE run_id = $2 AND action IN ('ran', 'cached')`,
        [entry.run, entry.base])
    }
  })
  await rm(path, { force: true })
  return fresh.length
}
