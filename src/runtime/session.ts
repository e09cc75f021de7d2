/**
 * Opening a workspace: its directory layout, the lock, the database, the sweep of staging
 * left by killed runs, and the marking of runs that never finished. Read-only commands
 * open the database without the lock.
 */
import { existsSync } from "node:fs"
import { mkdir } from "node:fs/promises"
import { resolve } from "node:path"
import { Database } from "./db.ts"
import { DatabaseFailed } from "./errors.ts"
import { acquireLock, type LockHolder } from "./lock.ts"
import { importPendingRuns, removeStamp } from "./rerun-record.ts"
import { pendingRunsPath } from "./rerun-stamp.mjs"
import { layout, sweepStaging, type Layout } from "./store.ts"

export interface WorkspaceSession {
  readonly ws: Layout
  readonly db: Database
  readonly close: () => Promise<void>
}

export interface OpenOptions {
  readonly noWait?: boolean
  readonly onLockWait?: (holder: LockHolder) => void
  readonly onLockTakeover?: (holder: LockHolder) => void
}

/**
 * Open a workspace for writing: take the lock, remove the rerun stamp before anything
 * changes, open or create the database, import the no-op reruns the launcher recorded, and
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
  try {
    removeStamp(ws)
    db = await Database.open(ws.database)
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
    close: async () => {
      await db.close()
      await lock.release()
    }
  }
}

/**
 * Open a workspace's database read-only, for commands that only read. No-op reruns that
 * the launcher recorded are imported first when no other process holds the workspace;
 * one that does imports them itself.
 */
export async function openForRead(root: string): Promise<WorkspaceSession> {
  const ws = layout(resolve(root))
  if (existsSync(pendingRunsPath(ws.root)) && existsSync(ws.database)) await importIfFree(ws)
  if (!existsSync(ws.database)) {
    throw new DatabaseFailed({
      path: ws.database,
      sql: "(open)",
      cause: "no database in this workspace yet; run `workflow full` first or pass --workspace"
    })
  }
  try {
    const db = await Database.open(ws.database, { readOnly: true })
    return { ws, db, close: async () => db.close() }
  } catch (error) {
    // DuckDB lets one process open a file for writing and then no other process at all.
    if (/lock/i.test(String((error as DatabaseFailed).cause))) {
      throw new DatabaseFailed({
        path: ws.database,
        sql: "(open)",
        cause: "a running workflow process has the database open; retry when it finishes"
      })
    }
    throw error
  }
}

async function importIfFree(ws: Layout): Promise<void> {
  let lock
  try {
    lock = await acquireLock(ws.lock, ws.root, { noWait: true })
  } catch (error) {
    if ((error as { _tag?: string })._tag === "WorkspaceLocked") return
    throw error
  }
  try {
    const db = await Database.open(ws.database)
    try {
      await importPendingRuns(db, ws)
    } finally {
      await db.close()
    }
  } finally {
    await lock.release()
  }
}
