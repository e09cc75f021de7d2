/**
 * Runs a workflow: plans one task per stage (whole stage) or per item (forEach stage),
 * fingerprints each task once its inputs are known, reuses a recorded result when the
 * fingerprint matches and its objects are intact, and otherwise runs the stage in a worker
 * thread and commits its outputs. Tasks start as soon as their own inputs are ready, so
 * items flow through stages and independent branches run in parallel, up to `jobs`.
 *
 * Failure policy: a failed task blocks the tasks that read its outputs. Other items of the
 * same stage still run, so the stage's error lists every failed item. Without `keepGoing`,
 * no task of another stage starts after the first failure; with it, independent branches
 * continue. The run ends with one `RunFailed` listing every failed stage.
 */
import { createHash } from "node:crypto"
import { mkdir, readlink, rename, rm, stat, symlink } from "node:fs/promises"
import { availableParallelism, hostname } from "node:os"
import { dirname, join, relative } from "node:path"
import { Effect } from "effect"
import { codeIdentity, type CodeIdentity } from "./codehash.ts"
import type { SqlValue, Transaction } from "./db.ts"
import { InvalidStage, OutputMissing, RunFailed, StageFailed, UnknownName } from "./errors.ts"
import { deriveSeed, describeSourceItem, fingerprintOf, type FingerprintMaterial } from "./fingerprint.ts"
import { canonicalJson, resolveParams, type ResolvedParams } from "./params.ts"
import { WorkerPool } from "./pool.ts"
import { discoverSource, hashSourceFiles, type HashedSource } from "./sources.ts"
import type { ArtifactRef, Json, LogLevel, SourceItemRef, Stage } from "./stage.ts"
import { openForWrite, type WorkspaceSession } from "./session.ts"
import { commitOutput, createStaging, objectSize, type Layout, type StoredObject } from "./store.ts"
import { buildDag, selectStages, type Dag, type DagNode, type Workflow } from "./workflow.ts"
import type { TaskMessage } from "./worker.ts"

export interface RunOptions {
  readonly workflow: Workflow
  readonly workspace: string
  readonly dataDir?: string
  readonly profile?: string
  readonly paramsFile?: string
  readonly overrides?: ReadonlyArray<string>
  /** Stages to run with their upstream; empty or absent means every stage. */
  readonly targets?: ReadonlyArray<string>
  /** `true` reruns every selected stage; a list reruns only those stages. */
  readonly force?: boolean | ReadonlyArray<string>
  readonly jobs?: number
  readonly keepGoing?: boolean
  readonly seed?: number
  readonly noWait?: boolean
  readonly argv?: ReadonlyArray<string>
  readonly reporter?: (event: RunEvent) => void
}

export type TaskAction = "ran" | "cached" | "failed" | "blocked"

export type RunEvent =
  | { readonly type: "lock-wait"; readonly pid: number; readonly host: string }
  | { readonly type: "lock-takeover"; readonly pid: number }
  | { readonly type: "plan"; readonly runId: string; readonly stages: ReadonlyArray<{ readonly stage: string; readonly tasks: number }> }
  | { readonly type: "task-start"; readonly stage: string; readonly item: string | null }
  | { readonly type: "task-end"; readonly stage: string; readonly item: string | null; readonly action: TaskAction; readonly ms: number; readonly error?: string }
  | { readonly type: "progress"; readonly stage: string; readonly item: string | null; readonly done: number; readonly total: number; readonly info?: string }
  | { readonly type: "log"; readonly stage: string; readonly item: string | null; readonly level: LogLevel; readonly message: string; readonly annotations?: Record<string, Json> }

export interface StageSummary {
  readonly stage: string
  readonly ran: number
  readonly cached: number
  readonly failed: number
  readonly blocked: number
  /** Wall time from the stage's first task start to its last task end, in milliseconds. */
  readonly ms: number
}

export interface RunSummary {
  readonly runId: string
  readonly status: "ok" | "failed"
  readonly stages: ReadonlyArray<StageSummary>
  readonly error?: RunFailed
  readonly outcomes: ReadonlyMap<string, TaskOutcome>
}

export type TaskOutcome =
  | { readonly action: "ran" | "cached"; readonly executionId: number; readonly fingerprint: string; readonly outputs: Readonly<Record<string, StoredObject>> }
  | { readonly action: "failed"; readonly fingerprint: string; readonly message: string }
  | { readonly action: "blocked"; readonly by: string }

/** Everything known before any task runs: DAG, params, sources, code and environment. */
export interface Plan {
  readonly dag: Dag
  readonly selected: ReadonlyArray<string>
  readonly params: ResolvedParams
  readonly sources: ReadonlyMap<string, HashedSource>
  readonly code: ReadonlyMap<string, CodeIdentity>
  readonly environment: ReadonlyMap<string, Readonly<Record<string, string>>>
  readonly seed: number
}

export interface PlanTask {
  readonly key: string
  readonly stage: string
  readonly item: string | null
  readonly node: DagNode
  readonly deps: ReadonlyArray<PlanTask>
}

export const taskKey = (stage: string, item: string | null) => `${stage}\u0000${item ?? ""}`

/** A cache entry: the newest successful execution of a fingerprint and its outputs. */
export interface CacheEntry {
  readonly executionId: number
  readonly outputs: Record<string, StoredObject>
}

/** Build the plan: DAG, params, source items and hashes, code identities, environments. */
export async function buildPlan(
  options: Pick<RunOptions, "workflow" | "dataDir" | "profile" | "paramsFile" | "overrides" | "targets" | "seed">,
  session: WorkspaceSession,
  writeCache: boolean
): Promise<Plan> {
  const dag = buildDag(options.workflow)
  const selected = selectStages(dag, options.targets ?? [])
  const params = resolveParams(options.workflow, options)

  const sourceNames = new Set<string>()
  for (const name of selected) {
    const node = dag.nodes.get(name)!
    if (node.itemSource !== null) sourceNames.add(node.itemSource)
    for (const spec of Object.values(node.stage.inputs)) {
      if (spec.kind === "source" || spec.kind === "sourcePick") sourceNames.add(spec.source)
    }
  }
  const sources = new Map<string, HashedSource>()
  for (const name of sourceNames) {
    const source = options.workflow.sources[name]!
    const items = await discoverSource(source, options.dataDir)
    sources.set(name, await hashSourceFiles(session.db, name, items, { writeCache }))
  }

  const code = new Map<string, CodeIdentity>()
  const environment = new Map<string, Readonly<Record<string, string>>>()
  for (const name of selected) {
    const stage = dag.nodes.get(name)!.stage
    code.set(name, codeIdentity(stage.module))
    environment.set(name, stage.environment === undefined ? {} : await Effect.runPromise(stage.environment()))
  }
  return { dag, selected, params, sources, code, environment, seed: options.seed ?? options.workflow.seed }
}

/** One task per item for per-item stages, one per whole stage; deps follow the declared inputs. */
export function planTasks(plan: Plan, forcedOf: (stage: string) => boolean = () => false): Map<string, PlanTask> {
  void forcedOf
  const tasks = new Map<string, PlanTask>()
  const itemsOf = (node: DagNode): ReadonlyArray<string | null> =>
    node.itemSource === null ? [null] : plan.sources.get(node.itemSource)!.items.map((i) => i.key)

  for (const name of plan.selected) {
    const node = plan.dag.nodes.get(name)!
    for (const item of itemsOf(node)) {
      const deps: Array<PlanTask> = []
      const addDeps = (stageName: string, all: boolean) => {
        const upstream = plan.dag.nodes.get(stageName)!
        if (upstream.itemSource === null) deps.push(tasks.get(taskKey(stageName, null))!)
        else if (all) for (const k of itemsOf(upstream)) deps.push(tasks.get(taskKey(stageName, k))!)
        else deps.push(tasks.get(taskKey(stageName, item))!)
      }
      for (const spec of Object.values(node.stage.inputs)) {
        if (spec.kind === "output") addDeps(spec.stage, false)
        if (spec.kind === "outputMap") addDeps(spec.stage, true)
      }
      if (node.stage.forEach !== undefined && plan.dag.nodes.has(node.stage.forEach)) addDeps(node.stage.forEach, false)
      tasks.set(taskKey(name, item), { key: taskKey(name, item), stage: name, item, node, deps: [...new Set(deps)] })
    }
  }
  return tasks
}

/** Inputs of a task resolved three ways: for the stage, for the fingerprint and for lineage. */
export interface ResolvedInputs {
  readonly values: Record<string, unknown>
  readonly material: Record<string, Json>
  readonly lineage: Array<{ readonly input: string; readonly item: string | null; readonly hash: string }>
}

/** Resolve a task's inputs from the sources and the outputs of finished upstream tasks. */
export function resolveInputs(
  plan: Plan,
  ws: Layout,
  task: PlanTask,
  outputsOf: (stage: string, item: string | null) => Readonly<Record<string, StoredObject>>
): ResolvedInputs {
  const values: Record<string, unknown> = {}
  const material: Record<string, Json> = {}
  const lineage: Array<{ input: string; item: string | null; hash: string }> = []
  const addSource = (input: string, ref: SourceItemRef) => {
    for (const file of ref.files) lineage.push({ input, item: ref.key, hash: file.hash })
  }
  const artifact = (stage: string, item: string | null, port: string): ArtifactRef => {
    const stored = outputsOf(stage, item)[port]!
    return { item, path: join(ws.root, stored.path), hash: stored.hash }
  }

  for (const [name, spec] of Object.entries(task.node.stage.inputs)) {
    if (spec.kind === "source") {
      const source = plan.sources.get(spec.source)!
      if (task.node.itemSource === spec.source && task.item !== null) {
        const ref = source.refs.get(task.item)!
        values[name] = ref
        material[name] = describeSourceItem(ref)
        addSource(name, ref)
      } else {
        const refs = source.items.map((i) => source.refs.get(i.key)!)
        values[name] = refs
        material[name] = refs.map(describeSourceItem)
        refs.forEach((ref) => addSource(name, ref))
      }
    } else if (spec.kind === "sourcePick") {
      const source = plan.sources.get(spec.source)!
      const key = spec.pick(plan.params.decoded.get(task.stage), source.items)
      const ref = source.refs.get(key)
      if (ref === undefined) {
        throw new InvalidStage({
          stage: task.stage,
          reason: `input "${name}" picked item "${key}", which source "${spec.source}" does not contain ` +
            `(${source.items.length} items); check the params that choose it`
        })
      }
      values[name] = ref
      material[name] = describeSourceItem(ref)
      addSource(name, ref)
    } else if (spec.kind === "output") {
      const upstream = plan.dag.nodes.get(spec.stage)!
      const ref = artifact(spec.stage, upstream.itemSource === null ? null : task.item, spec.port)
      values[name] = ref
      material[name] = ref.hash
      lineage.push({ input: name, item: ref.item, hash: ref.hash })
    } else {
      const upstream = plan.dag.nodes.get(spec.stage)!
      const map: Record<string, ArtifactRef> = {}
      const hashes: Record<string, Json> = {}
      for (const item of plan.sources.get(upstream.itemSource!)!.items) {
        const ref = artifact(spec.stage, item.key, spec.port)
        map[item.key] = ref
        hashes[item.key] = ref.hash
        lineage.push({ input: name, item: item.key, hash: ref.hash })
      }
      values[name] = map
      material[name] = hashes
    }
  }
  return { values, material, lineage }
}

export function materialOf(plan: Plan, task: PlanTask, inputs: ResolvedInputs): FingerprintMaterial {
  return {
    stage: task.stage,
    item: task.item,
    inputs: inputs.material,
    params: plan.params.encoded.get(task.stage)!,
    code: plan.code.get(task.stage)!.hash,
    environment: plan.environment.get(task.stage)!,
    seed: plan.seed
  }
}

/** Load the cache entries of the given stages in one query: `stage\0fingerprint` -> entry. */
export async function loadCache(session: WorkspaceSession, stages: ReadonlyArray<string>): Promise<Map<string, CacheEntry>> {
  const cache = new Map<string, CacheEntry>()
  if (stages.length === 0) return cache
  const rows = await session.db.all<{
    id: bigint; stage: string; fingerprint: string; port: string; hash: string; kind: "file" | "directory"; ext: string; path: string; size: bigint
  }>(
    `SELECT e.id, e.stage, e.fingerprint, a.port, a.hash, a.kind, a.ext, a.path, a.size
     FROM cache_entries e JOIN artifacts a ON a.execution_id = e.id
     WHERE e.stage IN (${stages.map((_, i) => `$${i + 1}`).join(",")})`,
    [...stages]
  )
  for (const row of rows) {
    const key = `${row.stage}\u0000${row.fingerprint}`
    let entry = cache.get(key)
    if (entry === undefined) {
      entry = { executionId: Number(row.id), outputs: {} }
      cache.set(key, entry)
    }
    entry.outputs[row.port] = { hash: row.hash, kind: row.kind, ext: row.ext, path: row.path, size: Number(row.size) }
  }
  return cache
}

/** A cache entry is trusted only when it has every declared port and each object is intact. */
export async function isEntryIntact(ws: Layout, stage: Stage, entry: CacheEntry): Promise<boolean> {
  for (const port of Object.keys(stage.outputs)) {
    const stored = entry.outputs[port]
    if (stored === undefined) return false
    if ((await objectSize(ws, stored.path, stored.kind)) !== stored.size) return false
  }
  return true
}

const newRunId = () => {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")
  return `${stamp}-${Math.random().toString(16).slice(2, 8)}`
}

/** Run the workflow; resolves with a summary (also when tasks failed) and rejects on load-time errors. */
export async function runWorkflow(options: RunOptions): Promise<RunSummary> {
  const report = options.reporter ?? (() => undefined)
  const session = await openForWrite(options.workspace, {
    noWait: options.noWait,
    onLockWait: (holder) => report({ type: "lock-wait", pid: holder.pid, host: holder.host }),
    onLockTakeover: (holder) => report({ type: "lock-takeover", pid: holder.pid })
  })
  try {
    return await execute(options, session, report)
  } finally {
    await session.close()
  }
}

async function execute(options: RunOptions, session: WorkspaceSession, report: (event: RunEvent) => void): Promise<RunSummary> {
  const plan = await buildPlan(options, session, true)
  const forced = new Set<string>(options.force === true ? plan.selected : options.force === false || options.force === undefined ? [] : options.force)
  for (const name of forced) {
    if (!plan.dag.nodes.has(name)) throw new UnknownName({ kind: "stage", name, known: plan.dag.order })
  }
  const tasks = planTasks(plan)
  const cache = await loadCache(session, plan.selected)
  const runId = newRunId()
  const jobs = options.jobs ?? availableParallelism()
  await recordRunStart(session, options, plan, runId, jobs)
  await recordSourceFiles(session, plan)
  report({
    type: "plan",
    runId,
    stages: plan.selected.map((stage) => ({ stage, tasks: [...tasks.values()].filter((t) => t.stage === stage).length }))
  })

  const runner = new TaskRunner(plan, session, options, report, runId, jobs, forced, cache)
  const outcomes = await runner.runAll(tasks)
  await runner.close()

  const summary = summarize(runId, plan, tasks, outcomes, runner.timing)
  await recordRunEnd(session, runId, tasks, outcomes, summary)
  await linkRun(session.ws, runId, plan, tasks, outcomes)
  return summary
}

let nextExecutionId: { db: unknown; value: number } | null = null

async function allocateExecutionId(session: WorkspaceSession): Promise<number> {
  if (nextExecutionId === null || nextExecutionId.db !== session.db) {
    const rows = await session.db.all<{ max: bigint | null }>("SELECT max(id) AS max FROM executions")
    nextExecutionId = { db: session.db, value: Number(rows[0]?.max ?? 0n) + 1 }
  }
  return nextExecutionId.value++
}

class TaskRunner {
  readonly timing = new Map<string, { first: number; last: number }>()
  private readonly outcomes = new Map<string, Promise<TaskOutcome>>()
  private readonly settled = new Map<string, TaskOutcome>()
  private readonly failedStages = new Set<string>()
  private firstFailure: string | null = null
  private pool: WorkerPool | null = null
  private running = 0
  private readonly waiters: Array<() => void> = []
  private requestId = 0

  constructor(
    private readonly plan: Plan,
    private readonly session: WorkspaceSession,
    private readonly options: RunOptions,
    private readonly report: (event: RunEvent) => void,
    private readonly runId: string,
    private readonly jobs: number,
    private readonly forced: ReadonlySet<string>,
    private readonly cache: ReadonlyMap<string, CacheEntry>
  ) {}

  async runAll(tasks: ReadonlyMap<string, PlanTask>): Promise<Map<string, TaskOutcome>> {
    await Promise.all([...tasks.values()].map((task) => this.outcomeOf(task)))
    return new Map(this.settled)
  }

  async close(): Promise<void> {
    await this.pool?.close()
  }

  private outcomeOf(task: PlanTask): Promise<TaskOutcome> {
    let promise = this.outcomes.get(task.key)
    if (promise === undefined) {
      promise = this.runTask(task).then((outcome) => {
        this.settled.set(task.key, outcome)
        return outcome
      })
      this.outcomes.set(task.key, promise)
    }
    return promise
  }

  private async runTask(task: PlanTask): Promise<TaskOutcome> {
    const upstream = await Promise.all(task.deps.map((dep) => this.outcomeOf(dep)))
    const badIndex = upstream.findIndex((o) => o.action === "failed" || o.action === "blocked")
    if (badIndex >= 0) return this.block(task, `upstream ${task.deps[badIndex]!.stage} did not finish`)

    const outputsOf = (stage: string, item: string | null) => {
      const outcome = this.settled.get(taskKey(stage, item))
      if (outcome === undefined || (outcome.action !== "ran" && outcome.action !== "cached")) {
        throw new Error(`internal: outputs of ${stage}/${item} requested before it finished`)
      }
      return outcome.outputs
    }
    let inputs: ResolvedInputs
    try {
      inputs = resolveInputs(this.plan, this.session.ws, task, outputsOf)
    } catch (error) {
      return this.fail(task, "", (error as Error).message, Date.now())
    }
    const material = materialOf(this.plan, task, inputs)
    const fingerprint = fingerprintOf(material)

    if (!this.forced.has(task.stage)) {
      const entry = this.cache.get(`${task.stage}\u0000${fingerprint}`)
      if (entry !== undefined && (await isEntryIntact(this.session.ws, task.node.stage, entry))) {
        this.report({ type: "task-end", stage: task.stage, item: task.item, action: "cached", ms: 0 })
        return { action: "cached", executionId: entry.executionId, fingerprint, outputs: entry.outputs }
      }
    }

    await this.acquireSlot()
    try {
      if (this.firstFailure !== null && this.options.keepGoing !== true && !this.failedStages.has(task.stage)) {
        return this.block(task, `stage ${this.firstFailure} failed (use --keep-going to run independent stages)`)
      }
      return await this.execute(task, inputs, material, fingerprint)
    } finally {
      this.releaseSlot()
    }
  }

  private block(task: PlanTask, by: string): TaskOutcome {
    this.report({ type: "task-end", stage: task.stage, item: task.item, action: "blocked", ms: 0, error: by })
    return { action: "blocked", by }
  }

  private async acquireSlot(): Promise<void> {
    while (this.running >= this.jobs) await new Promise<void>((resolve) => this.waiters.push(resolve))
    this.running++
  }

  private releaseSlot(): void {
    this.running--
    this.waiters.shift()?.()
  }

  private noteTime(stage: string, start: number, end: number) {
    const timing = this.timing.get(stage)
    if (timing === undefined) this.timing.set(stage, { first: start, last: end })
    else this.timing.set(stage, { first: Math.min(timing.first, start), last: Math.max(timing.last, end) })
  }

  private async fail(
    task: PlanTask, fingerprint: string, message: string, started: number, material: FingerprintMaterial | null = null
  ): Promise<TaskOutcome> {
    this.failedStages.add(task.stage)
    this.firstFailure ??= task.stage
    const ms = Date.now() - started
    this.noteTime(task.stage, started, Date.now())
    await this.recordFailure(task, fingerprint, message, started, ms, material)
    this.report({ type: "task-end", stage: task.stage, item: task.item, action: "failed", ms, error: message })
    return { action: "failed", fingerprint, message }
  }

  private async execute(task: PlanTask, inputs: ResolvedInputs, material: FingerprintMaterial, fingerprint: string): Promise<TaskOutcome> {
    const { ws } = this.session
    const stage = task.node.stage
    const started = Date.now()
    this.report({ type: "task-start", stage: task.stage, item: task.item })

    const scratchDir = join(ws.scratch, fingerprint)
    await mkdir(scratchDir, { recursive: true })
    const staging = await createStaging(ws, stage.outputs)
    const emitted: Array<{ table: string; rows: ReadonlyArray<unknown> }> = []
    this.pool ??= new WorkerPool(this.jobs)
    const id = ++this.requestId
    const result = await this.pool.run({
      type: "task",
      id,
      moduleUrl: stage.module,
      context: {
        stage: task.stage,
        params: this.plan.params.encoded.get(task.stage)!,
        inputs: inputs.values,
        item: task.item,
        outputs: staging.ports,
        seed: deriveSeed(this.plan.seed, task.stage, task.item),
        scratchDir,
        environment: { ...this.plan.environment.get(task.stage)! }
      }
    }, (message: TaskMessage) => this.forward(task, message, emitted))

    if (!result.ok) {
      await rm(staging.dir, { recursive: true, force: true })
      return this.fail(task, fingerprint, `${result.tag}: ${result.message}`, started, material)
    }

    try {
      const outputs: Record<string, StoredObject> = {}
      for (const [port, spec] of Object.entries(stage.outputs)) {
        const path = staging.ports[port]!
        const info = await stat(path).catch(() => null)
        const isRightKind = info !== null && (spec.kind === "directory" ? info.isDirectory() : info.isFile())
        if (!isRightKind) {
          throw new OutputMissing({ stage: task.stage, item: task.item, port, path, expected: spec.kind })
        }
        outputs[port] = await commitOutput(ws, path, spec)
      }
      const rows = checkEmitted(task, emitted)
      const ms = Date.now() - started
      const executionId = await allocateExecutionId(this.session)
      await this.session.db.transaction(async (tx) => {
        await insertExecution(tx, this.runId, executionId, task, fingerprint, "ok", started, ms, null, this.plan, material)
        await tx.insert("artifacts", ["hash", "kind", "path", "size", "ext", "execution_id", "stage", "port", "item"],
          Object.entries(outputs).map(([port, o]) => [o.hash, o.kind, o.path, o.size, o.ext, executionId, task.stage, port, task.item]))
        if (inputs.lineage.length > 0) {
          await tx.insert("lineage", ["execution_id", "input", "item", "hash"],
            inputs.lineage.map((l) => [executionId, l.input, l.item, l.hash]))
        }
        await insertEmitted(tx, executionId, task, rows)
        await tx.insert("run_tasks", ["run_id", "stage", "item", "execution_id", "action"],
          [[this.runId, task.stage, task.item, executionId, "ran"]])
      })
      await rm(scratchDir, { recursive: true, force: true })
      await rm(staging.dir, { recursive: true, force: true })
      this.noteTime(task.stage, started, Date.now())
      this.report({ type: "task-end", stage: task.stage, item: task.item, action: "ran", ms })
      return { action: "ran", executionId, fingerprint, outputs }
    } catch (error) {
      await rm(staging.dir, { recursive: true, force: true })
      return this.fail(task, fingerprint, (error as Error).message, started, material)
    }
  }

  private forward(task: PlanTask, message: TaskMessage, emitted: Array<{ table: string; rows: ReadonlyArray<unknown> }>) {
    const where = { stage: task.stage, item: task.item }
    if (message.type === "progress") this.report({ type: "progress", ...where, done: message.done, total: message.total, info: message.info })
    else if (message.type === "log") this.report({ type: "log", ...where, level: message.level, message: message.message, annotations: message.annotations })
    else if (message.type === "emit") emitted.push({ table: message.table, rows: message.rows })
  }

  private async recordFailure(
    task: PlanTask, fingerprint: string, message: string, started: number, ms: number, material: FingerprintMaterial | null
  ) {
    const executionId = await allocateExecutionId(this.session)
    await this.session.db.transaction(async (tx) => {
      await insertExecution(tx, this.runId, executionId, task, fingerprint, "failed", started, ms, message, this.plan, material)
      await tx.insert("run_tasks", ["run_id", "stage", "item", "execution_id", "action"], [[this.runId, task.stage, task.item, executionId, "failed"]])
    })
  }
}

type EmittedRows = { metrics: Array<Record<string, unknown>>; slices: Array<Record<string, unknown>> }

function checkEmitted(task: PlanTask, emitted: ReadonlyArray<{ table: string; rows: ReadonlyArray<unknown> }>): EmittedRows {
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

async function insertEmitted(tx: Transaction, executionId: number, task: PlanTask, rows: EmittedRows) {
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

async function insertExecution(
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

async function recordRunStart(session: WorkspaceSession, options: RunOptions, plan: Plan, runId: string, jobs: number) {
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
async function recordSourceFiles(session: WorkspaceSession, plan: Plan) {
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

async function recordRunEnd(
  session: WorkspaceSession, runId: string, tasks: ReadonlyMap<string, PlanTask>,
  outcomes: ReadonlyMap<string, TaskOutcome>, summary: RunSummary
) {
  const cachedRows: Array<Array<SqlValue>> = []
  for (const task of tasks.values()) {
    const outcome = outcomes.get(task.key)!
    if (outcome.action === "cached") cachedRows.push([runId, task.stage, task.item, outcome.executionId, "cached"])
  }
  await session.db.transaction(async (tx) => {
    await tx.append("run_tasks", cachedRows)
    await tx.run("UPDATE runs SET finished = $1::TIMESTAMPTZ, status = $2, summary = $3 WHERE id = $4",
      [new Date().toISOString(), summary.status, JSON.stringify(summary.stages), runId])
  })
}

function summarize(
  runId: string, plan: Plan, tasks: ReadonlyMap<string, PlanTask>, outcomes: ReadonlyMap<string, TaskOutcome>,
  timing: ReadonlyMap<string, { first: number; last: number }>
): RunSummary {
  const stages: Array<StageSummary> = []
  const failed: Array<StageFailed> = []
  const blocked: Array<string> = []
  for (const stage of plan.selected) {
    const counts = { ran: 0, cached: 0, failed: 0, blocked: 0 }
    const failures: Array<{ item: string | null; message: string }> = []
    for (const task of tasks.values()) {
      if (task.stage !== stage) continue
      const outcome = outcomes.get(task.key)!
      counts[outcome.action]++
      if (outcome.action === "failed") failures.push({ item: task.item, message: outcome.message })
    }
    const time = timing.get(stage)
    stages.push({ stage, ...counts, ms: time === undefined ? 0 : time.last - time.first })
    if (failures.length > 0) failed.push(new StageFailed({ stage, failures }))
    else if (counts.blocked > 0) blocked.push(stage)
  }
  const error = failed.length > 0 ? new RunFailed({ failed, blocked }) : undefined
  return { runId, status: error === undefined ? "ok" : "failed", stages, error, outcomes }
}

const safeName = (item: string) => item.replace(/[/\\]/g, "_")

/**
 * Link `runs/<run-id>/<stage>` to a view folder `views/<hash>/<port>[/<item>]` whose entries
 * link to the objects, and point `latest` at the run. A view is named by the hash of its
 * entries, so a rerun with unchanged outputs reuses it and costs one link per stage.
 */
async function linkRun(
  ws: Layout, runId: string, plan: Plan, tasks: ReadonlyMap<string, PlanTask>, outcomes: ReadonlyMap<string, TaskOutcome>
) {
  const runDir = join(ws.runs, runId)
  await mkdir(runDir, { recursive: true })
  for (const stage of plan.selected) {
    const entries: Array<{ name: string; object: string }> = []
    for (const task of tasks.values()) {
      if (task.stage !== stage) continue
      const outcome = outcomes.get(task.key)!
      if (outcome.action !== "ran" && outcome.action !== "cached") continue
      for (const [port, stored] of Object.entries(outcome.outputs)) {
        const name = task.item === null ? port + stored.ext : `${port}/${safeName(task.item)}${stored.ext}`
        entries.push({ name, object: stored.path })
      }
    }
    if (entries.length === 0) continue
    const view = await ensureView(ws, entries)
    await symlink(relative(runDir, view), join(runDir, stage))
  }

  const latest = join(ws.root, "latest")
  const temporary = join(ws.root, `.latest-${runId}`)
  await symlink(relative(ws.root, runDir), temporary)
  await rename(temporary, latest)
}

async function ensureView(ws: Layout, entries: ReadonlyArray<{ name: string; object: string }>): Promise<string> {
  const lines = entries.map((e) => `${e.name}\u0000${e.object}\n`).sort()
  const hash = createHash("sha256").update(lines.join("")).digest("hex")
  const view = join(ws.views, hash)
  if (await stat(view).then(() => true, () => false)) return view

  // Build under a temporary name and rename, so a view folder is always complete.
  const building = join(ws.views, `.building-${hash}-${process.pid}`)
  await rm(building, { recursive: true, force: true })
  const dirs = new Set(entries.map((e) => dirname(join(building, e.name))))
  await Promise.all([...dirs].map((d) => mkdir(d, { recursive: true })))
  await Promise.all(entries.map((e) => {
    const link = join(building, e.name)
    return symlink(relative(dirname(link), join(ws.root, e.object)), link)
  }))
  try {
    await rename(building, view)
  } catch (error) {
    // Another run built the same view meanwhile; its content is identical.
    await rm(building, { recursive: true, force: true })
    if (!(await stat(view).then(() => true, () => false))) throw error
  }
  return view
}

/** The run directory `latest` points at, or null. */
export async function latestRunDir(ws: Layout): Promise<string | null> {
  try {
    return join(ws.root, await readlink(join(ws.root, "latest")))
  } catch {
    return null
  }
}
