/**
 * Workspace lock: a `lock` file created with O_EXCL that stores the holder's pid and host.
 * A second process waits (polling) or fails at once with `noWait`. A lock whose pid is not
 * alive on this host is stale and is taken over.
 * NOTE: a lock held by another host cannot be checked for liveness; it is treated as live.
 */
import { open, readFile, unlink } from "node:fs/promises"
import { hostname } from "node:os"
import { WorkspaceLocked } from "./errors.ts"

export interface LockHolder {
  readonly pid: number
  readonly host: string
  readonly started: string
}

export interface LockOptions {
  readonly noWait?: boolean
  /** Called once when the lock is busy and the caller starts waiting. */
  readonly onWait?: (holder: LockHolder) => void
  /** Called when a stale lock of a dead process is taken over. */
  readonly onTakeover?: (holder: LockHolder) => void
  readonly pollMs?: number
}

export interface WorkspaceLock {
  readonly release: () => Promise<void>
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

async function readHolder(path: string): Promise<LockHolder | null> {
  try {
    const holder = JSON.parse(await readFile(path, "utf8")) as LockHolder
    return typeof holder.pid === "number" ? holder : null
  } catch {
    return null
  }
}

async function tryCreate(path: string): Promise<boolean> {
  try {
    const handle = await open(path, "wx")
    const holder: LockHolder = { pid: process.pid, host: hostname(), started: new Date().toISOString() }
    await handle.writeFile(JSON.stringify(holder))
    await handle.sync()
    await handle.close()
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false
    throw error
  }
}

/** Acquire the lock at `path` for the workspace `workspace`. */
export async function acquireLock(path: string, workspace: string, options: LockOptions = {}): Promise<WorkspaceLock> {
  let waiting = false
  for (;;) {
    if (await tryCreate(path)) {
      return { release: () => unlink(path).catch(() => undefined) }
    }
    const holder = await readHolder(path)
    if (holder === null) {
      // The holder is between creating and writing the file; look again shortly.
      await sleep(20)
      continue
    }
    if (holder.host === hostname() && !isAlive(holder.pid)) {
      // NOTE: two processes that read the same stale lock at once can both unlink it, and
      // the slower one then removes the faster one's fresh lock. The window is one unlink.
      options.onTakeover?.(holder)
      await unlink(path).catch(() => undefined)
      continue
    }
    if (options.noWait === true) throw new WorkspaceLocked({ workspace, pid: holder.pid, host: holder.host })
    if (!waiting) {
      waiting = true
      options.onWait?.(holder)
    }
    await sleep(options.pollMs ?? 200)
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
