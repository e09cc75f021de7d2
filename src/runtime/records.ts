/**
 * Database records of a run: the run row and its params, and source files as artifacts.
 * Each committed task adds one execution with its artifacts, lineage and emitted rows in
 * one transaction. Failed executions and the run_tasks rows of cached tasks follow.
 */
import { hostname } from "node:os"
import type { SqlValue, Transaction } from "./db.ts"
import { InvalidStage } from "./errors.ts"
import type { FingerprintMaterial } from "./fingerprint.ts"
import { canonicalJson } from "./params.ts"
import type { Plan, PlanTask } from "./plan.ts"
import type { WorkspaceSession } from "./session.ts"
import type { Json } from "./stage.ts"

/** Run-row fields that describe how the run was started. */
export interface RunStartInfo {
  readonly workflow: { readonly name: string }
  readonly argv?: ReadonlyArray<string>
  readonly profile?: string
  readonly dataDir?: string
  readonly targets?: ReadonlyArray<string>
}

/** Task outcome as the run_tasks table stores it. */
export interface TaskRecord {
  readonly action: "ran" | "cached" | "failed" | "blocked"
  readonly executionId?: number
}

const nextExecutionIds = new WeakMap<object, Promise<{ value: number }>>()

/**
 * Allocate the next execution id. The first call per open database reads max(id) once, and
 * concurrent callers share that read, so two tasks never get the same id. Only the process
 * holding the workspace lock writes, so no other process allocates ids meanwhile.
 */
export async function allocateExecutionId(session: WorkspaceSession): Promise<number> {
  let counter = nextExecutionIds.get(session.db)
  if (counter === undefined) {
    counter = session.db.all<{ max: bigint | null }>("SELECT max(id) AS max FROM executions")
      .then((rows) => ({ value: Number(rows[0]?.max ?? 0n) + 1 }))
    nextExecutionIds.set(session.db, counter)
  }
  const next = await counter
  return next.value++
}

/** Column kinds of emitted rows: `?` marks a column that may be null or left out. */
type ColumnKind = "string" | "number" | "boolean" | "string?" | "number?"

/** Columns of each table a stage may emit to, besides execution_id, stage and item. */
const emitColumns: Readonly<Record<string, Readonly<Record<string, ColumnKind>>>> = {
  metrics: { name: "string", value: "number", class: "string?", epoch: "number?", split: "string?" },
  slices: {
    image: "string", vendor: "string", root: "string", slice: "number",
    irf: "number?", srf: "number?", ped: "number?", fluid: "number?", labelled: "boolean"
  },
  splits: { vendor: "string", side: "string", fold: "number?" }
}

export type EmittedRows = Map<string, Array<Record<string, unknown>>>

function isKind(value: unknown, kind: ColumnKind): boolean {
  if (kind.endsWith("?") && (value === null || value === undefined)) return true
  const base = kind.replace("?", "")
  if (base === "number") return typeof value === "number" && Number.isFinite(value)
  return typeof value === base
}

/** Check emitted rows against the table columns, so a bad row fails its task before commit. */
export function checkEmitted(task: PlanTask, emitted: ReadonlyArray<{ table: string; rows: ReadonlyArray<unknown> }>): EmittedRows {
  const result: EmittedRows = new Map()
  for (const batch of emitted) {
    const columns = emitColumns[batch.table]
    if (columns === undefined) {
      const known = Object.keys(emitColumns).map((t) => `"${t}"`).join(", ")
      throw new InvalidStage({ stage: task.stage, reason: `emit() named table "${batch.table}"; use one of ${known}` })
    }
    for (const row of batch.rows) {
      const record = row as Record<string, unknown>
      for (const [column, kind] of Object.entries(columns)) {
        if (!isKind(record[column], kind)) {
          throw new InvalidStage({
            stage: task.stage,
            reason: `emit("${batch.table}") row column "${column}" must be ${kind.replace("?", " or null")}, ` +
              `got ${JSON.stringify(record[column])}`
          })
        }
      }
      const rows = result.get(batch.table) ?? []
      rows.push(record)
      result.set(batch.table, rows)
    }
  }
  return result
}

/** Insert checked rows; a row without `item` gets the task's item. */
export async function insertEmitted(tx: Transaction, executionId: number, task: PlanTask, rows: EmittedRows) {
  const value = (v: unknown): SqlValue => (v === undefined ? null : (v as SqlValue))
  for (const [table, records] of rows) {
    const columns = Object.keys(emitColumns[table]!)
    await tx.insert(table, ["execution_id", "stage", "item", ...columns],
      records.map((r) => [executionId, task.stage, value(r.item ?? task.item), ...columns.map((c) => value(r[c]))]))
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

/** Records the run's row, with its selected stages and their task counts, and its params. */
export async function recordRunStart(
  session: WorkspaceSession, options: RunStartInfo, plan: Plan, runId: string, jobs: number,
  stages: ReadonlyArray<{ readonly stage: string; readonly tasks: number }>
) {
  const params = Object.fromEntries(plan.selected.map((s) => [s, plan.params.encoded.get(s)!]))
  await session.db.transaction(async (tx) => {
    await tx.insert("runs",
      ["id", "workflow", "started", "status", "argv", "profile", "params", "data_dir", "host", "pid", "seed", "jobs", "node_version",
        "targets", "stages"],
      [[runId, options.workflow.name, new Date().toISOString(), "running", JSON.stringify(options.argv ?? []), options.profile ?? "cpu",
        canonicalJson(params), options.dataDir ?? null, hostname(), process.pid, plan.seed, jobs, process.version,
        JSON.stringify(options.targets ?? []), JSON.stringify(stages)]])
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
  const rows = await session.db.allAsJson<{ hash: string; path: string }>("SELECT hash, path FROM artifacts WHERE kind = 'source'")
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

/** Records the run's tasks whose outcome in `outcomes` is a reused cached result. */
export async function recordCachedTasks(
  session: WorkspaceSession, runId: string, tasks: ReadonlyMap<string, PlanTask>, outcomes: ReadonlyMap<string, TaskRecord>
) {
  const rows = cachedRows(runId, tasks, outcomes)
  if (rows.length > 0) await session.db.transaction((tx) => tx.append("run_tasks", rows))
}

function cachedRows(
  runId: string, tasks: ReadonlyMap<string, PlanTask>, outcomes: ReadonlyMap<string, TaskRecord>,
  skipped: ReadonlySet<string> = new Set()
): Array<Array<SqlValue>> {
  const rows: Array<Array<SqlValue>> = []
  for (const task of tasks.values()) {
    if (skipped.has(task.key)) continue
    const outcome = outcomes.get(task.key)
    if (outcome?.action === "cached") rows.push([runId, task.stage, task.item, outcome.executionId ?? null, "cached"])
  }
  return rows
}

/** Records the cached tasks not in `recorded`, and the run's end, status and summary. */
export async function recordRunEnd(
  session: WorkspaceSession, runId: string, tasks: ReadonlyMap<string, PlanTask>,
  outcomes: ReadonlyMap<string, TaskRecord>, summary: { readonly status: string; readonly stages: unknown },
  recorded: ReadonlySet<string> = new Set()
) {
  const rows = cachedRows(runId, tasks, outcomes, recorded)
  await session.db.transaction(async (tx) => {
    if (rows.length > 0) await tx.append("run_tasks", rows)
    await tx.run("UPDATE runs SET finished = $1::TIMESTAMPTZ, status = $2, summary = $3 WHERE id = $4",
      [new Date().toISOString(), summary.status, JSON.stringify(summary.stages), runId])
  })
}

