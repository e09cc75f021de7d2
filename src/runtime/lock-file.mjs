// @ts-check
/**
 * The workspace lock file, `<workspace>/lock`, which stores its holder's pid, host and start
 * time as JSON. It is written to a temporary file first and then hard-linked into place, so
 * the lock never exists empty: a process killed at any point leaves either no lock or a whole
 * one. Plain JavaScript, because the launcher's no-op rerun takes the lock before any
 * TypeScript is loaded (rerun-stamp.mjs); src/runtime/lock.ts waits for it and takes over
 * stale ones.
 */
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs"
import { hostname } from "node:os"

/**
 * @typedef {object} LockHolder
 * @property {number} pid
 * @property {string} host
 * @property {string} started ISO time
 */

/** Errors of a file system that has no hard links, where the lock is created in place instead. */
const noHardLinks = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "EXDEV", "ENOSYS"])

/**
 * @param {string} path
 * @param {string} content
 * @param {"wx" | "w"} flags
 */
function writeDurably(path, content, flags) {
  const fd = openSync(path, flags)
  try {
    writeSync(fd, content)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * Creates the lock at `path` for this process, or returns false when it exists. Throws on
 * other errors, such as a missing or read-only folder.
 * @param {string} path
 * @returns {boolean}
 */
export function tryCreateLockFile(path) {
  /** @type {LockHolder} */
  const holder = { pid: process.pid, host: hostname(), started: new Date().toISOString() }
  const content = JSON.stringify(holder)
  const temporary = `${path}.${process.pid}.tmp`
  writeDurably(temporary, content, "w")
  try {
    linkSync(temporary, path)
    return true
  } catch (error) {
    const code = /** @type {NodeJS.ErrnoException} */ (error).code
    if (code === "EEXIST") return false
    if (code === undefined || !noHardLinks.has(code)) throw error
  } finally {
    try {
      unlinkSync(temporary)
    } catch {
      // Already removed by the lock's holder as a leftover (sweepLeftovers in session.ts).
    }
  }
  // NOTE: a lock created in place is empty until the write below. A kill in between leaves
  // an empty lock, which acquireLock takes over once it is 5 s old.
  try {
    writeDurably(path, content, "wx")
    return true
  } catch (error) {
    if (/** @type {NodeJS.ErrnoException} */ (error).code === "EEXIST") return false
    throw error
  }
}

/**
 * Returns the holder recorded in the lock at `path`, or null when the lock is missing, empty
 * or damaged.
 * @param {string} path
 * @returns {LockHolder | null}
 */
export function readLockHolder(path) {
  try {
    const holder = JSON.parse(readFileSync(path, "utf8"))
    return typeof holder?.pid === "number" && typeof holder.host === "string" ? holder : null
  } catch {
    return null
  }
}

/**
 * Returns true when a process with id `pid` runs on this host (one owned by another user
 * counts too).
 * @param {number} pid
 * @returns {boolean}
 */
export function isAlive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return /** @type {NodeJS.ErrnoException} */ (error).code === "EPERM"
  }
}
