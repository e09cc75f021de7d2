/**
 * Database records of a run: the run row and its params, source files as artifacts, one
 * execution with its artifacts, lineage and emitted rows per committed task (inserted in
 * one transaction), failed executions, and the closing run_tasks rows of cached tasks.
 */
import { hostname } from "node:os"
import type { SqlValue, Transaction } from "./db.ts"
import { InvalidStage } from "./errors.ts"
import type { FingerprintMaterial } from "./fingerprint.ts"
import { canonicalJson } from "./params.ts"
import type { Plan, PlanTask } from "./plan.ts"
import type { WorkspaceSession } from "./session.ts"
import type { Json } from "./stage.ts"

/** What the run row records about how the run was started. */
export interface RunStartInfo {
  readonly workflow: { readonly name: string }
  readonly argv?: ReadonlyArray<string>
  readonly profile?: string
  readonly dataDir?: string
  readonly targets?: ReadonlyArray<string>
}

/** How a task ended, as run_tasks records it. */
export interface TaskRecord {
  readonly action: "ran" | "cached" | "failed" | "blocked"
  readonly executionId?: number
}

let nextExecutionId: { db: unknown; value: number } | null = null

export async function allocateExecutionId(session: WorkspaceSession): Promise<number> {
  if (nextExecutionId === null || nextExecutionId.db !== session.db) {
    const rows = await session.db.all<{ max: bigint | null }>("SELECT max(id) AS max FROM executions")
    nextExecutionId = { db: session.db, value: Number(rows[0]?.max ?? 0n) + 1 }
  }
  return nextExecutionId.value++
}

export type EmittedRows = { metrics: Array<Record<string, unknown>>; slices: Array<Record<string, unknown>> }

export function checkEmitted(task: PlanTask, emitted: ReadonlyArray<{ table: string; rows: ReadonlyArray<unknown> }>): EmittedRows {
  const result: EmittedRows = { metrics: [], slices: [] }
  for (const batch of emitted) {
    if (batch.table !== "metrics" && batch.table !== "slices") {
      throw new InvalidStage({ stage: task.stage, reason: `emit() named table "${batch.table}"; use "metrics" or "slices"` })
    }
    for (const row of batch.rows) {
      const record = row as Record<string, unknown>
      const numeric = batch.table === "metrics" ? ["value"] : ["slice", "irf", "srf", "ped"]
      for (const field of numeric) {
        if (typeof record[field] !== "number") {
          throw new InvalidStage({ stage: task.stage, reason: `emit("${batch.table}") row field "${field}" must be a number, got ${JSON.stringify(record[field])}` })
        }
      }
      result[batch.table].push(record)
    }
  }
  return result
}

export async function insertEmitted(tx: Transaction, executionId: number, task: PlanTask, rows: EmittedRows) {
  const opt = (v: unknown): SqlValue => (v === undefined ? null : (v as SqlValue))
  if (rows.metrics.length > 0) {
    await tx.insert("metrics", ["execution_id", "stage", "item", "name", "value", "class", "epoch", "split"],
      rows.metrics.map((r) => [executionId, task.stage, opt(r.item ?? task.item), opt(r.name), opt(r.value), opt(r.class), opt(r.epoch), opt(r.split)]))
  }
  if (rows.slices.length > 0) {
    await tx.insert("slices", ["execution_id", "stage", "item", "image", "vendor", "root", "slice", "irf", "srf", "ped", "labelled"],
      rows.slices.map((r) => [executionId, task.stage, opt(r.item ?? task.item), opt(r.image), opt(r.vendor), opt(r.root), opt(r.slice), opt(r.irf), opt(r.srf), opt(r.ped), opt(r.labelled)]))
  }
}

export async function insertExecution(
  tx: Transaction, runId: string, id: number, task: PlanTask, fingerprint: string, status: string,
  started: number, ms: number, error: string | null, plan: Plan, material: FingerprintMaterial | null
) {
  const code = plan.code.get(task.stage)!
  await tx.insert("executions",
    ["id", "run_id", "stage", "item", "fingerprint", "status", "started", "duration_ms", "error", "code_hash",
      "code_modules", "params", "environment", "inputs", "seed"],
    [[id, runId, task.stage, task.item, fingerprint, status, new Date(started).toISOString(), ms, error, code.hash,
      canonicalJson(code.modules), canonicalJson(plan.params.encoded.get(task.stage)), canonicalJson(plan.environment.get(task.stage)),
      material === null ? null : canonicalJson(material.inputs), plan.seed]])
}

export async function recordRunStart(session: WorkspaceSession, options: RunStartInfo, plan: Plan, runId: string, jobs: number) {
  const params = Object.fromEntries(plan.selected.map((s) => [s, plan.params.encoded.get(s)!]))
  await session.db.transaction(async (tx) => {
    await tx.insert("runs",
      ["id", "workflow", "started", "status", "argv", "profile", "params", "data_dir", "host", "pid", "seed", "jobs", "node_version", "targets"],
      [[runId, options.workflow.name, new Date().toISOString(), "running", JSON.stringify(options.argv ?? []), options.profile ?? "cpu",
        canonicalJson(params), options.dataDir ?? null, hostname(), process.pid, plan.seed, jobs, process.version,
        JSON.stringify(options.targets ?? [])]])
    const rows: Array<Array<SqlValue>> = []
    for (const stage of plan.selected) {
      const encoded = plan.params.encoded.get(stage) as Record<string, Json>
      for (const [key, value] of Object.entries(encoded ?? {})) {
        rows.push([runId, stage, key, canonicalJson(value), plan.params.origins.get(`${stage}.${key}`) ?? "default"])
      }
    }
    if (rows.length > 0) await tx.insert("params", ["run_id", "stage", "key", "value", "origin"], rows)
  })
}

/** Record source files as artifacts of kind "source" (once per hash and path) so lineage can name them. */
export async function recordSourceFiles(session: WorkspaceSession, plan: Plan) {
  const rows = await session.db.all<{ hash: string; path: string }>("SELECT hash, path FROM artifacts WHERE kind = 'source'")
  const known = new Set(rows.map((r) => `${r.hash}\u0000${r.path}`))
  const fresh: Array<Array<SqlValue>> = []
  for (const source of plan.sources.values()) {
    for (const ref of source.refs.values()) {
      for (const file of ref.files) {
        const key = `${file.hash}\u0000${file.path}`
        if (known.has(key)) continue
        known.add(key)
        const ext = /(\.[A-Za-z0-9]+(\.gz)?)$/.exec(file.path)?.[1] ?? ""
        fresh.push([file.hash, "source", file.path, source.sizes.get(file.path) ?? null, ext, null, source.name, "file", ref.key])
      }
    }
  }
  if (fresh.length === 0) return
  await session.db.transaction((tx) =>
    tx.insert("artifacts", ["hash", "kind", "path", "size", "ext", "execution_id", "stage", "port", "item"], fresh))
}

export async function recordRunEnd(
  session: WorkspaceSession, runId: string, tasks: ReadonlyMap<string, PlanTask>,
  outcomes: ReadonlyMap<string, TaskRecord>, summary: { readonly status: string; readonly stages: unknown }
) {
  const cachedRows: Array<Array<SqlValue>> = []
  for (const task of tasks.values()) {
    const outcome = outcomes.get(task.key)!
    if (outcome.action === "cached") cachedRows.push([runId, task.stage, task.item, outcome.executionId ?? null, "cached"])
  }
  await session.db.transaction(async (tx) => {
    await tx.append("run_tasks", cachedRows)
    await tx.run("UPDATE runs SET finished = $1::TIMESTAMPTZ, status = $2, summary = $3 WHERE id = $4",
      [new Date().toISOString(), summary.status, JSON.stringify(summary.stages), runId])
  })
}

