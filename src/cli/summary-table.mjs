// @ts-check
/**
 * The table that closes `full`, `run` and `predict`: one row per stage with its task counts
 * and time, then the run's id, status and time. Plain JavaScript, because the launcher's
 * no-op rerun (src/runtime/rerun-stamp.mjs) prints it before any TypeScript is loaded.
 */

/**
 * @typedef {object} StageCounts
 * @property {string} stage
 * @property {number} ran
 * @property {number} cached
 * @property {number} failed
 * @property {number} blocked
 * @property {number} ms wall time of the stage's tasks
 */

/**
 * @param {number} ms
 * @returns {string}
 */
export function formatMs(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`
  return `${(ms / 60_000).toFixed(1)} min`
}

/**
 * @param {string} runId
 * @param {string} status
 * @param {ReadonlyArray<StageCounts>} stages
 * @param {number} elapsedMs
 * @returns {string}
 */
export function formatSummaryTable(runId, status, stages, elapsedMs) {
  const header = `${"stage".padEnd(16)} ${"ran".padStart(6)} ${"skipped".padStart(8)} ${"failed".padStart(7)} ${"blocked".padStart(8)} ${"time".padStart(9)}`
  const rows = stages.map((s) =>
    `${s.stage.padEnd(16)} ${String(s.ran).padStart(6)} ${String(s.cached).padStart(8)} ${String(s.failed).padStart(7)} ${String(s.blocked).padStart(8)} ${formatMs(s.ms).padStart(9)}`)
  return [header, ...rows, `run ${runId} ${status} in ${formatMs(elapsedMs)}`].join("\n")
}
