/**
 * Opening a workspace: its directory layout, the lock, the database, the sweep of staging
 * left by killed runs, and the marking of runs that never finished. Read-only commands
 * open the database without the lock.
 */
import { existsSync, readdirSync, rmSync } from "node:fs"
import { mkdir } from "node:fs/promises"
import { join, resolve } from "node:path"
import { Database } from "./db.ts"
import { DatabaseBusy, DatabaseFailed, DatabaseInUse, NoDatabase } from "./errors.ts"
import { isAlive } from "./lock-file.mjs"
import { acquireLock, type LockHolder } from "./lock.ts"
import { importPendingRuns, refreshStampDatabase, removeStamp } from "./rerun-record.ts"
import { databaseIdentity, pendingRunsPath } from "./rerun-stamp.mjs"
import { layout, sweepStaging, type Layout } from "./store.ts"

export interface WorkspaceSession {
  readonly ws: Layout
  readonly db: Database
  /** Closes the database, runs `afterDatabase` (still holding the lock, for writers), and releases the lock. */
  readonly close: (afterDatabase?: () => void) => Promise<void>
}

export interface OpenOptions {
  readonly noWait?: boolean
  readonly onLockWait?: (holder: LockHolder) => void
  readonly onLockTakeover?: (holder: LockHolder) => void
  /** Called once when another process has the database open and the writer starts waiting for it. */
  readonly onDatabaseWait?: (waitMs: number) => void
  /**
   * Whether to keep the rerun stamp, for a command that changes nothing a rerun would reuse
   * (`gc --dry-run`). Its database identity is updated after the close, when it matched before.
   */
  readonly keepStamp?: boolean
}

/**
 * Open a workspace for writing: take the lock, remove the rerun stamp (unless `keepStamp`)
 * before anything changes, open or create the database, import the no-op reruns the launcher recorded, and
 * sweep staging.
 */
export async function openForWrite(root: string, options: OpenOptions = {}): Promise<WorkspaceSession> {
  const ws = layout(resolve(root))
  await mkdir(ws.root, { recursive: true })
  const lock = await acquireLock(ws.lock, ws.root, {
    noWait: options.noWait,
    onWait: options.onLockWait,
    onTakeover: options.onLockTakeover
  })
  let db: Database
  const databaseBefore = options.keepStamp === true ? databaseIdentity(ws.root) : ""
  try {
    if (options.keepStamp !== true) removeStamp(ws)
    sweepLeftovers(ws)
    db = await openForWriting(ws.database, options)
  } catch (error) {
    await lock.release()
    throw error
  }
  try {
    await importPendingRuns(db, ws)
  } catch (error) {
    await db.close()
    await lock.release()
    throw error
  }
  // The folders are prepared while DuckDB marks the runs that never finished.
  await Promise.all([
    sweepStaging(ws).then(() => mkdir(ws.objects, { recursive: true })),
    db.run("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
  ])
  return {
    ws,
    db,
    close: async (afterDatabase) => {
      try {
        await db.close()
        if (options.keepStamp === true) refreshStampDatabase(ws, databaseBefore)
        afterDatabase?.()
      } finally {
        await lock.release()
      }
    }
  }
}

/**
 * Open a workspace's database read-only, for commands that only read. No-op reruns that
 * the launcher recorded are imported first when no other process has the workspace lock.
 * A process that has it imports them itself.
 */
export async function openForRead(root: string): Promise<WorkspaceSession> {
  const ws = layout(resolve(root))
  if (existsSync(pendingRunsPath(ws.root)) && existsSync(ws.database)) await importIfFree(ws)
  if (!existsSync(ws.database)) throw new NoDatabase({ workspace: ws.root })
  // DuckDB lets one process open a file for writing and then no other process at all. A
  // read command that imports recorded runs has it open for less than a second, so readers
  // retry for 3 s. A workflow run keeps it open until the run ends.
  const db = await openWhenFree(ws.database, { readOnly: true, waitMs: readerRetryMs })
  if (db === null) throw new DatabaseBusy({ path: ws.database })
  return {
    ws,
    db,
    close: async (afterDatabase) => {
      await db.close()
      afterDatabase?.()
    }
  }
}

/**
 * Imports pending runs when no other process has the workspace lock. A workspace this
 * process cannot write keeps them until a process that can opens it, so read commands then
 * do not list them.
 */
async function importIfFree(ws: Layout): Promise<void> {
  let lock
  try {
    lock = await acquireLock(ws.lock, ws.root, { noWait: true })
  } catch {
    // The lock is held, or cannot be taken here, as in a read-only folder. The runs stay
    // pending, because a plain read needs no lock.
    return
  }
  try {
    const before = databaseIdentity(ws.root)
    // While another read command has the database open, the runs stay pending for a later command.
    const db = await openWhenFree(ws.database, { readOnly: false, waitMs: 0 })
    if (db === null) return
    try {
      await importPendingRuns(db, ws)
    } finally {
      await db.close()
    }
    refreshStampDatabase(ws, before)
  } finally {
    await lock.release()
  }
}

/** How long a writer waits for read commands that have the database open. */
const writerWaitMs = 30_000

/** How long a read command waits for another read command that imports recorded runs. */
const readerRetryMs = 3_000

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** True when DuckDB could not open the database because another process has it open. */
const isOpenConflict = (error: unknown): boolean =>
  /Could not set lock|Conflicting lock/i.test(String((error as DatabaseFailed).cause))

/**
 * Opens the database, retrying for up to `waitMs` while another process has it open, and
 * returns null when it is still open elsewhere then. `onWait` is called before the first
 * retry.
 */
async function openWhenFree(
  path: string, options: { readonly readOnly: boolean; readonly waitMs: number; readonly onWait?: () => void }
): Promise<Database | null> {
  const deadline = Date.now() + options.waitMs
  let waiting = false
  for (;;) {
    try {
      return await Database.open(path, { readOnly: options.readOnly })
    } catch (error) {
      if (!isOpenConflict(error)) throw error
    }
    if (Date.now() >= deadline) return null
    if (!waiting) {
      waiting = true
      options.onWait?.()
    }
    await sleep(50)
  }
}

/**
 * Opens the database for writing. DuckDB lets no process open a file for writing while
 * another has it open, even read-only, and read commands take the database without the
 * workspace lock. So a writer, which holds the lock, waits up to 30 s for them to close it,
 * unless `noWait` is set.
 */
async function openForWriting(path: string, options: OpenOptions): Promise<Database> {
  const waitMs = options.noWait === true ? 0 : writerWaitMs
  const db = await openWhenFree(path, { readOnly: false, waitMs, onWait: () => options.onDatabaseWait?.(waitMs) })
  if (db !== null) return db
  if (options.noWait === true) throw new DatabaseInUse({ path })
  throw new DatabaseFailed({
    path,
    sql: "(open)",
    cause: `another process has the database open (a read command such as query or status) and kept it open for ` +
      `${waitMs / 1000} s; retry when it finishes`
  })
}

/**
 * Removes what a kill can leave in the workspace folder: a `.latest-<run id>` link that was
 * not yet renamed to `latest`, and the temporary file of a lock that a dead process was
 * creating. Call with the workspace lock held.
 */
function sweepLeftovers(ws: Layout): void {
  for (const name of readdirSync(ws.root)) {
    const lockPid = /^lock\.(\d+)\.tmp$/.exec(name)?.[1]
    const leftover = name.startsWith(".latest-") || (lockPid !== undefined && !isAlive(Number(lockPid)))
    if (leftover) rmSync(join(ws.root, name), { force: true })
  }
}
