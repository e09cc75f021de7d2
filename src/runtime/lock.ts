/**
 * Workspace lock: a `lock` file that stores the holder's pid and host (lock-file.mjs). A
 * second process waits (polling) or fails at once with `noWait`. A lock whose pid is not
 * alive on this host is stale and is taken over.
 * NOTE: a lock held by another host cannot be checked for liveness; it is treated as live.
 */
import { lstat, unlink } from "node:fs/promises"
import { hostname } from "node:os"
import { LockPathInvalid, WorkspaceLocked } from "./errors.ts"
import { isAlive, readLockHolder, tryCreateLockFile, type LockHolder } from "./lock-file.mjs"

export type { LockHolder }

/** Age after which a lock without a readable holder counts as left by a killed process. */
const unreadableStaleMs = 5000

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

/** Acquire the lock at `path` for the workspace `workspace`. */
export async function acquireLock(path: string, workspace: string, options: LockOptions = {}): Promise<WorkspaceLock> {
  let waiting = false
  for (;;) {
    if (tryCreateLockFile(path)) {
      return { release: () => unlink(path).catch(() => undefined) }
    }
    const holder = readLockHolder(path)
    if (holder === null) {
      // A lock is written whole (lock-file.mjs), so one without a holder was created in
      // place on a file system without hard links, or damaged. It is taken over once old.
      const info = await lstat(path).catch(() => null)
      if (info === null) continue
      if (!info.isFile()) throw new LockPathInvalid({ path, kind: info.isDirectory() ? "folder" : "link or special file" })
      if (Date.now() - info.mtimeMs > unreadableStaleMs) {
        await unlink(path)
        continue
      }
      if (options.noWait === true) throw new WorkspaceLocked({ workspace, pid: 0, host: hostname() })
      if (!waiting) {
        waiting = true
        options.onWait?.({ pid: 0, host: hostname(), started: "" })
      }
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
