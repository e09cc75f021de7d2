/**
 * Explain (and dry-run) a workflow without running anything: for every stage and item,
 * whether it would run or be skipped and why, compared with the closest of the recent
 * executions of the same stage and item (the one with the fewest differences, the newest
 * on a tie): which input hash, which param (old -> new), which code module, which
 * environment value or seed changed.
 */
import { existsSync } from "node:fs"
import { resolve } from "node:path"
import { Database } from "./db.ts"
import { UnknownName } from "./errors.ts"
import { forcedStages, type RunOptions } from "./executor.ts"
import {
  buildPlan, isEntryIntact, loadCache, materialOf, planTasks, resolveInputs, taskKey, type CacheEntry, type Plan, type PlanTask
} from "./plan.ts"
import { fingerprintOf, type FingerprintMaterial } from "./fingerprint.ts"
import { canonicalJson } from "./params.ts"
import type { Json } from "./stage.ts"
import { openForRead, type WorkspaceSession } from "./session.ts"
import { layout } from "./store.ts"

export type Decision = "run" | "skip" | "pending"

export type { LastExecution }

export interface ExplainEntry {
  readonly stage: string
  readonly item: string | null
  readonly decision: Decision
  readonly fingerprint: string | null
  readonly reasons: ReadonlyArray<string>
}

interface LastExecution {
  readonly id: bigint
  readonly stage: string
  readonly item: string | null
  readonly status: string
  readonly error: string | null
  readonly code_modules: string | null
  readonly params: string | null
  readonly environment: string | null
  readonly inputs: string | null
  readonly seed: bigint | null
}

async function openSession(workspace: string): Promise<WorkspaceSession> {
  const ws = layout(resolve(workspace))
  if (existsSync(ws.database)) return openForRead(workspace)
  const db = await Database.open(":memory:")
  return { ws, db, close: async () => db.close() }
}

/** Explain what `run`/`full` with the same options would do. */
export async function explainWorkflow(options: RunOptions): Promise<Array<ExplainEntry>> {
  const session = await openSession(options.workspace)
  try {
    return await explainWith(options, session)
  } finally {
    await session.close()
  }
}

async function explainWith(options: RunOptions, session: WorkspaceSession): Promise<Array<ExplainEntry>> {
  const plan = await buildPlan(options, session, false)
  const forced = forcedStages(options.force, plan.selected)
  for (const name of forced) {
    if (!plan.dag.nodes.has(name)) throw new UnknownName({ kind: "stage", name, known: plan.dag.order })
  }
  const tasks = planTasks(plan)
  const cache = await loadCache(session, plan.selected)
  const recent = await loadRecentExecutions(session, plan.selected)

  const known = new Map<string, CacheEntry>()
  const entries: Array<ExplainEntry> = []
  for (const task of tasks.values()) {
    const pendingDeps = [...new Set(task.deps.filter((d) => !known.has(d.key)).map((d) => d.stage))]
    if (pendingDeps.length > 0) {
      const upstream = `upstream ${pendingDeps.join(", ")} will run`
      const own = ownChanges(plan, task, recent.get(task.key) ?? [])
      entries.push({
        stage: task.stage,
        item: task.item,
        decision: own.length > 0 ? "run" : "pending",
        fingerprint: null,
        reasons: own.length > 0 ? [...own, `${upstream} first`] : [`${upstream}; this reruns only if those outputs change`]
      })
      continue
    }
    const inputs = resolveInputs(plan, session.ws, task, (stage, item) => known.get(taskKey(stage, item))!)
    const material = materialOf(plan, task, inputs)
    const fingerprint = fingerprintOf(material)
    const entry = cache.get(`${task.stage}\u0000${fingerprint}`)
    const modules = plan.code.get(task.stage)!.modules
    const decided = await decide(session, task, forced.has(task.stage), entry, recent.get(task.key) ?? [], material, modules)
    if (decided.decision === "skip") known.set(task.key, entry!)
    entries.push({ stage: task.stage, item: task.item, fingerprint, ...decided })
  }
  return entries
}

async function decide(
  session: WorkspaceSession, task: PlanTask, forced: boolean, entry: CacheEntry | undefined,
  recent: ReadonlyArray<LastExecution>, material: FingerprintMaterial, modules: Readonly<Record<string, string>>
): Promise<{ decision: Decision; reasons: Array<string> }> {
  if (forced) return { decision: "run", reasons: ["--force names this stage"] }
  const newest = recent[0]
  if (entry !== undefined) {
    if (isEntryIntact(session.ws, task.node.stage, entry)) {
      let reused = ""
      if (newest !== undefined && Number(newest.id) !== entry.executionId) {
        const difference = diffExecution(newest, material, modules, task.stage)[0] ?? "other inputs"
        reused = ` (an earlier setting; the newest execution ${newest.id} differs: ${difference})`
      }
      return { decision: "skip", reasons: [`fingerprint matches execution ${entry.executionId}${reused}`] }
    }
    return { decision: "run", reasons: [`a stored output of execution ${entry.executionId} is missing or has the wrong size`] }
  }
  if (newest === undefined) return { decision: "run", reasons: ["no earlier execution of this stage and item"] }
  // The closest earlier execution explains best what is new: after a run with other params,
  // a code edit then shows as the code change alone.
  let closest = { execution: newest, reasons: diffExecution(newest, material, modules, task.stage) }
  for (const execution of recent.slice(1)) {
    const reasons = diffExecution(execution, material, modules, task.stage)
    if (reasons.length < closest.reasons.length) closest = { execution, reasons }
  }
  const reasons = [...closest.reasons]
  if (closest.execution !== newest) reasons.unshift(`compared with execution ${closest.execution.id}, the closest earlier one`)
  if (closest.execution.status !== "ok") {
    reasons.unshift(`execution ${closest.execution.id} failed: ${(closest.execution.error ?? "").split("\n")[0]}`)
  }
  if (reasons.length === 0) reasons.push("the fingerprint format or stage identity changed")
  return { decision: "run", reasons }
}

/**
 * Returns what makes a task run whatever its upstream outputs turn out to be: how its
 * params, code, environment and seed differ from the closest earlier execution. It returns
 * none when a successful execution had the same ones, because then only the inputs decide.
 */
function ownChanges(plan: Plan, task: PlanTask, recent: ReadonlyArray<LastExecution>): Array<string> {
  if (recent.length === 0) return ["no earlier execution of this stage and item"]
  // The inputs are not known yet, and the comparison below leaves them out.
  const material = materialOf(plan, task, { values: {}, material: {}, lineage: [] })
  const modules = plan.code.get(task.stage)!.modules
  let closest: Array<string> | null = null
  for (const execution of recent) {
    const reasons = diffExecution({ ...execution, inputs: null }, material, modules, task.stage)
    if (reasons.length === 0 && execution.status === "ok") return []
    if (closest === null || reasons.length < closest.length) closest = reasons
  }
  return closest!.length > 0 ? closest! : ["earlier executions with these settings failed"]
}

/** Executions compared per stage and item: enough to find the setting a change was made from. */
const recentExecutionsCompared = 20

async function loadRecentExecutions(session: WorkspaceSession, stages: ReadonlyArray<string>): Promise<Map<string, Array<LastExecution>>> {
  const rows = await session.db.all<LastExecution>(
    `SELECT id, stage, item, status, error, code_modules, params, environment, inputs, seed FROM executions
     WHERE stage IN (${stages.map((_, i) => `$${i + 1}`).join(",")})
     QUALIFY row_number() OVER (PARTITION BY stage, item ORDER BY id DESC) <= ${recentExecutionsCompared}
     ORDER BY id DESC`,
    [...stages]
  )
  const byTask = new Map<string, Array<LastExecution>>()
  for (const row of rows) {
    const key = taskKey(row.stage, row.item)
    const list = byTask.get(key) ?? []
    list.push(row)
    byTask.set(key, list)
  }
  return byTask
}

const short = (value: Json | undefined) => {
  if (value === undefined) return "(absent)"
  if (typeof value === "string" && /^[0-9a-f]{64}$/.test(value)) return value.slice(0, 12)
  const text = canonicalJson(value)
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

const parse = (text: string | null): Json => (text === null ? null : (JSON.parse(text) as Json))

/** Human-readable differences between the newest execution and the planned one. */
export function diffExecution(
  previous: LastExecution, material: FingerprintMaterial, newModules: Readonly<Record<string, string>>, stage: string
): Array<string> {
  const reasons: Array<string> = []
  const oldParams = (parse(previous.params) ?? {}) as Record<string, Json>
  const newParams = material.params as Record<string, Json>
  for (const key of unionKeys(oldParams, newParams)) {
    if (canonicalJson(oldParams[key] ?? null) !== canonicalJson(newParams[key] ?? null)) {
      reasons.push(`param ${stage}.${key}: ${short(oldParams[key])} -> ${short(newParams[key])}`)
    }
  }

  if (previous.inputs !== null) {
    const oldInputs = parse(previous.inputs) as Record<string, Json>
    for (const name of unionKeys(oldInputs, material.inputs)) reasons.push(...diffInput(name, oldInputs[name], material.inputs[name]))
  }

  const oldModules = (parse(previous.code_modules) ?? {}) as Record<string, string>
  for (const module of unionKeys(oldModules, newModules)) {
    if (oldModules[module] === undefined) reasons.push(`code module ${module} added`)
    else if (newModules[module] === undefined) reasons.push(`code module ${module} no longer imported`)
    else if (oldModules[module] !== newModules[module]) reasons.push(`code module ${module} changed`)
  }

  const oldEnvironment = (parse(previous.environment) ?? {}) as Record<string, string>
  for (const key of unionKeys(oldEnvironment, material.environment)) {
    if (oldEnvironment[key] !== material.environment[key]) {
      reasons.push(`environment ${key}: ${oldEnvironment[key] ?? "(absent)"} -> ${material.environment[key] ?? "(absent)"}`)
    }
  }
  if (previous.seed !== null && Number(previous.seed) !== material.seed) reasons.push(`seed: ${previous.seed} -> ${material.seed}`)
  return reasons
}

function unionKeys(a: object, b: object): Array<string> {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
}

function diffInput(name: string, before: Json | undefined, after: Json | undefined): Array<string> {
  if (canonicalJson(before ?? null) === canonicalJson(after ?? null)) return []
  const isRecord = (v: Json | undefined): v is Record<string, Json> => typeof v === "object" && v !== null && !Array.isArray(v)
  if (Array.isArray(before) && Array.isArray(after)) {
    const keyed = (list: ReadonlyArray<Json>) => Object.fromEntries(list.map((v) => [String((v as Record<string, Json>).key), v]))
    return diffInput(name, keyed(before), keyed(after))
  }
  if (isRecord(before) && isRecord(after) && "files" in after && "key" in after) {
    const reasons: Array<string> = []
    const oldFiles = (before.files ?? []) as Array<string>
    const newFiles = after.files as Array<string>
    newFiles.forEach((hash, i) => {
      if (oldFiles[i] !== hash) reasons.push(`input ${name} item ${String(after.key)} file ${i + 1}: ${short(oldFiles[i])} -> ${short(hash)}`)
    })
    if (canonicalJson(before.meta ?? null) !== canonicalJson(after.meta ?? null)) reasons.push(`input ${name} item ${String(after.key)} metadata changed`)
    return reasons
  }
  if (isRecord(before) && isRecord(after)) {
    const changed = unionKeys(before, after).filter((k) => canonicalJson(before[k] ?? null) !== canonicalJson(after[k] ?? null))
    const shown = changed.slice(0, 5).map((k) => `${k} (${short(before[k])} -> ${short(after[k])})`)
    const more = changed.length > 5 ? ` and ${changed.length - 5} more` : ""
    return [`input ${name} changed for item ${shown.join(", ")}${more}`]
  }
  return [`input ${name}: ${short(before)} -> ${short(after)}`]
}
