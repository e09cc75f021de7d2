// @ts-check
/**
 * File identity for caches that trust a file's metadata instead of reading it: the CLI
 * bundle's freshness check (src/launcher) and the code-hash cache (src/runtime/codehash.ts).
 * Plain JavaScript, because the launcher runs before any TypeScript can be loaded.
 */

/**
 * Age in milliseconds below which a file's timestamps do not prove its content. It covers
 * the coarsest common timestamp granularity, FAT's 2 s. Linux stamps ext4 and XFS files
 * with the kernel's coarse clock, which ticks every few milliseconds.
 */
export const racyMs = 2000

/**
 * Returns the device, inode, size, and modification and change times (ns) of a file as one
 * string. Every write sets the change time to the current time, and renaming another file
 * into place changes the inode. So a changed file gets a new identity, unless the change
 * falls in the timestamp tick in which the identity was taken (see `isRacy`).
 * @param {import("node:fs").BigIntStats} stat
 * @returns {string}
 */
export function fileIdentity(stat) {
  return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`
}

/**
 * Returns true when the file was modified or changed less than `racyMs` before `now`, so a
 * second write in the same timestamp tick could leave its identity unchanged. A cache must
 * not trust the identity of such a file alone.
 * @param {import("node:fs").BigIntStats} stat
 * @param {number} now time in milliseconds since the epoch
 * @returns {boolean}
 */
export function isRacy(stat, now) {
  return now - Number(stat.mtimeMs) < racyMs || now - Number(stat.ctimeMs) < racyMs
}
