/**
 * Runs a workflow. It plans one task per whole stage or per item of a forEach stage, and
 * fingerprints each task once its inputs are known. A task whose fingerprint is recorded
 * and whose objects are intact reuses that result. Every other task runs in a worker
 * thread and its outputs are committed. Tasks start as soon as their own inputs are ready, so
 * items flow through stages and independent branches run in parallel, up to `jobs`.
 *
 * Failure policy: a failed task blocks the tasks that read its outputs. Other items of the
 * same stage still run, so the stage's error lists every failed item. Without `keepGoing`,
 * no task of another stage starts after the first failure; with it, independent branches
 * continue. The run ends with one `RunFailed` listing every failed stage.
 */
import { mkdir, rm, rmdir, stat } from "node:fs/promises"
import { availableParallelism } from "node:os"
import { join } from "node:path"
import { OutputMissing, RunFailed, RunLinksFailed, StageFailed, UnknownName } from "./errors.ts"
import { deriveSeed, fingerprintOf, type FingerprintMaterial } from "./fingerprint.ts"
import { linkRun } from "./links.ts"
import {
  buildPlan, isEntryIntact, loadCache, materialOf, planTasks, resolveInputs, taskKey,
  type CacheEntry, type Plan, type PlanRequest, type PlanTask, type ResolvedInputs
} from "./plan.ts"
import { WorkerPool } from "./pool.ts"
import { addInstalledPackages, PlanReads, prepareStamp, saveStamp, type StampRequest } from "./rerun-record.ts"
import { newRunId, type RerunStamp } from "./rerun-stamp.mjs"
import {
  allocateExecutionId, checkEmitted, insertEmitted, insertExecution, recordCachedTasks, recordRunEnd, recordRunStart,
  recordSourceFiles
} from "./records.ts"
import type { Json, LogLevel } from "./stage.ts"
import { openForWrite, type WorkspaceSession } from "./session.ts"
import { loadStatCache } from "./sources.ts"
import { commitOutput, createStaging, type StoredObject } from "./store.ts"
import { buildDag, selectStages } from "./workflow.ts"
import type { TaskMessage } from "./worker.ts"

export { latestRunDir } from "./links.ts"
export { buildPlan, planTasks, taskKey, type Plan, type PlanTask } from "./plan.ts"

export interface RunOptions extends PlanRequest {
  readonly workspace: string
  /** `true` reruns every selected stage; a list reruns only those stages. */
  readonly force?: boolean | ReadonlyArray<string>
  readonly jobs?: number
  readonly keepGoing?: boolean
  readonly seed?: number
  readonly noWait?: boolean
  readonly argv?: ReadonlyArray<string>
  readonly reporter?: (event: RunEvent) => void
  /** Whether `<workspace>/latest` moves to this run (default true). Predict runs pass false, so it stays on the study. */
  readonly updateLatest?: boolean
  /** Leave a rerun stamp when the run succeeds, so the launcher can replay a no-op rerun of the same command (rerun-stamp.mjs). */
  readonly stamp?: StampRequest
}

export type TaskAction = "ran" | "cached" | "failed" | "blocked"

export type RunEvent =
  | { readonly type: "lock-wait"; readonly pid: number; readonly host: string }
  | { readonly type: "lock-takeover"; readonly pid: number }
  | { readonly type: "database-wait"; readonly waitMs: number }
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
  /** With `stamp` requested: null when the stamp is written once the database closes, else why not. */
  readonly stampSkipped?: string | null
}

export type TaskOutcome =
  | { readonly action: "ran" | "cached"; readonly executionId: number; readonly fingerprint: string; readonly outputs: Readonly<Record<string, StoredObject>> }
  | { readonly action: "failed"; readonly fingerprint: string; readonly message: string }
  | { readonly action: "blocked"; readonly by: string }

/** Stages whose cached results are ignored: all selected ones for `true`, else those named. */
export function forcedStages(force: RunOptions["force"], selected: ReadonlyArray<string>): Set<string> {
  if (force === true) return new Set(selected)
  if (force === undefined || force === false) return new Set()
  return new Set(force)
}

/** Run the workflow; resolves with a summary (also when tasks failed) and rejects on load-time errors. */
export async function runWorkflow(options: RunOptions): Promise<RunSummary> {
  const report = options.reporter ?? (() => undefined)
  const session = await openForWrite(options.workspace, {
    noWait: options.noWait,
    onLockWait: (holder) => report({ type: "lock-wait", pid: holder.pid, host: holder.host }),
    onLockTakeover: (holder) => report({ type: "lock-takeover", pid: holder.pid }),
    onDatabaseWait: (waitMs) => report({ type: "database-wait", waitMs })
  })
  let result: { readonly summary: RunSummary; readonly stamp: RerunStamp | null }
  try {
    result = await execute(options, session, report)
  } catch (error) {
    await session.close()
    throw error
  }
  // The stamp records the database as the close leaves it, so any later write invalidates it.
  const { stamp } = result
  await session.close(stamp === null ? undefined : () => saveStamp(session.ws, stamp))
  return result.summary
}

/**
 * Return `promise` with a rejection handler attached, so it can be started now and awaited
 * later without Node reporting an unhandled rejection in between.
 */
function inFlight<A>(promise: Promise<A>): Promise<A> {
  promise.catch(() => undefined)
  return promise
}

async function execute(
  options: RunOptions, session: WorkspaceSession, report: (event: RunEvent) => void
): Promise<{ readonly summary: RunSummary; readonly stamp: RerunStamp | null }> {
  // DuckDB runs statements on its own threads, so the stat cache and cache queries run
  // while this thread builds the plan. The cache query runs on a second connection. The
  // stat cache query, which the plan needs first, is queued ahead of the run's records.
  void loadStatCache(session.db)
  const cacheLoad = inFlight(loadCache(session, selectStages(buildDag(options.workflow), options.targets ?? [])))
  const reads = options.stamp === undefined ? null : new PlanReads()
  if (reads !== null) addInstalledPackages(reads)
  const plan = await buildPlan(options, session, true, reads)
  const forced = forcedStages(options.force, plan.selected)
  for (const name of forced) {
    if (!plan.dag.nodes.has(name)) throw new UnknownName({ kind: "stage", name, known: plan.dag.order })
  }
  const runId = newRunId()
  const jobs = options.jobs ?? availableParallelism()
  // The run's records are written while cached tasks are settled below, and no task runs
  // before they are.
  const tasks = planTasks(plan)
  const stageTasks = plan.selected.map((stage) => ({ stage, tasks: [...tasks.values()].filter((t) => t.stage === stage).length }))
  const runStarted = inFlight(recordRunStart(session, options, plan, runId, jobs, stageTasks))
  const sourcesRecorded = inFlight(recordSourceFiles(session, plan))
  const runner = new TaskRunner(plan, session, options, report, runId, jobs, forced, await cacheLoad)
  runner.reuseCachedResults(tasks)
  // The plan event is reported only once the run row is written, so a process killed after
  // printing the plan leaves an interrupted run behind.
  await runStarted
  // The reused tasks are recorded before any task runs, so a killed run still lists them,
  // and gc keeps their objects for the rerun.
  const reused = runner.reusedOutcomes()
  await recordCachedTasks(session, runId, tasks, reused)
  report({ type: "plan", runId, stages: stageTasks })
  runner.reportReused()
  await sourcesRecorded

  const outcomes = await runner.runAll(tasks)
  await runner.close()

  const summary = summarize(runId, plan, tasks, outcomes, runner.timing)
  const outputsOf = (task: PlanTask) => {
    const outcome = outcomes.get(task.key)!
    return outcome.action === "ran" || outcome.action === "cached" ? outcome.outputs : null
  }
  // The run's folders are linked before its end is recorded, so a run whose links failed is
  // not recorded as ok. Its tasks are committed, so a rerun reuses them and links again.
  let views: Map<string, string>
  try {
    views = await linkRun(session.ws, runId, plan, tasks, outputsOf, { updateLatest: options.updateLatest ?? true })
  } catch (error) {
    await recordRunEnd(session, runId, tasks, outcomes, { ...summary, status: "failed" }, new Set(reused.keys()))
    throw new RunLinksFailed({ runId, workspace: session.ws.root, cause: error })
  }
  await recordRunEnd(session, runId, tasks, outcomes, summary, new Set(reused.keys()))
  if (options.stamp === undefined || reads === null) return { summary, stamp: null }
  let prepared: { readonly stamp: RerunStamp } | { readonly reason: string }
  if (summary.status !== "ok") prepared = { reason: "the run failed" }
  else if (forced.size > 0) prepared = { reason: "the run was forced" }
  else if (options.updateLatest === false) prepared = { reason: "the run does not move latest" }
  else {
    prepared = prepareStamp(session.ws, options.stamp, reads, {
      id: runId,
      objects: [...tasks.values()].flatMap((task) => Object.values(outputsOf(task) ?? {})),
      views,
      stages: summary.stages.map((s) => [s.stage, s.ran + s.cached] as const)
    })
  }
  if ("reason" in prepared) return { summary: { ...summary, stampSkipped: prepared.reason }, stamp: null }
  return { summary: { ...summary, stampSkipped: null }, stamp: prepared.stamp }
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
  /** Tasks settled by `reuseCachedResults` and not reported yet. */
  private readonly reused: Array<PlanTask> = []

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

  /** Settle every task: those that `reuseCachedResults` did not settle run or block here. */
  async runAll(tasks: ReadonlyMap<string, PlanTask>): Promise<Map<string, TaskOutcome>> {
    await Promise.all([...tasks.values()].map((task) => this.outcomeOf(task)))
    return new Map(this.settled)
  }

  /**
   * Settle, in plan order and without awaiting, every task whose upstream tasks are settled
   * and whose result is cached. A rerun reuses most results, so this pass settles them with
   * no promise per task, while the run's records are written. It reports nothing, because
   * the plan event comes first; `reportReused` reports them.
   */
  reuseCachedResults(tasks: ReadonlyMap<string, PlanTask>): void {
    for (const task of tasks.values()) {
      if (!task.deps.every((dep) => this.settled.has(dep.key))) continue
      let inputs: ResolvedInputs
      try {
        inputs = resolveInputs(this.plan, this.session.ws, task, (stage, item) => this.resultOf(stage, item))
      } catch {
        continue
      }
      const outcome = this.reuse(task, fingerprintOf(materialOf(this.plan, task, inputs)))
      if (outcome !== null) {
        this.settled.set(task.key, outcome)
        this.outcomes.set(task.key, Promise.resolve(outcome))
        this.reused.push(task)
      }
    }
  }

  /** Returns the outcomes of the tasks that `reuseCachedResults` settled, by task key. */
  reusedOutcomes(): ReadonlyMap<string, TaskOutcome> {
    return new Map(this.reused.map((task) => [task.key, this.settled.get(task.key)!]))
  }

  /** Report the tasks that `reuseCachedResults` settled, in the order it settled them. */
  reportReused(): void {
    for (const task of this.reused) this.report({ type: "task-end", stage: task.stage, item: task.item, action: "cached", ms: 0 })
    this.reused.length = 0
  }

  /** Return the cached outcome of `task` when its stage is not forced and its objects are intact, else null. */
  private reuse(task: PlanTask, fingerprint: string): TaskOutcome | null {
    if (this.forced.has(task.stage)) return null
    const entry = this.cache.get(`${task.stage}\u0000${fingerprint}`)
    if (entry === undefined || !isEntryIntact(this.session.ws, task.node.stage, entry)) return null
    return { action: "cached", executionId: entry.executionId, fingerprint, outputs: entry.outputs }
  }

  /** Returns the execution and outputs of a finished upstream task, as `resolveInputs` reads them. */
  private resultOf(stage: string, item: string | null): CacheEntry {
    const outcome = this.settled.get(taskKey(stage, item))
    if (outcome === undefined || (outcome.action !== "ran" && outcome.action !== "cached")) {
      throw new Error(`internal: outputs of ${stage}/${item} requested before it finished`)
    }
    return outcome
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

    let inputs: ResolvedInputs
    try {
      inputs = resolveInputs(this.plan, this.session.ws, task, (stage, item) => this.resultOf(stage, item))
    } catch (error) {
      return this.fail(task, "", (error as Error).message, Date.now())
    }
    const material = materialOf(this.plan, task, inputs)
    const fingerprint = fingerprintOf(material)
    const cached = this.reuse(task, fingerprint)
    if (cached !== null) {
      this.report({ type: "task-end", stage: task.stage, item: task.item, action: "cached", ms: 0 })
      return cached
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
      await removeIfEmpty(scratchDir)
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
          await tx.insert("lineage", ["execution_id", "input", "item", "hash", "producer", "path"],
            inputs.lineage.map((l) => [executionId, l.input, l.item, l.hash, l.producer, l.path]))
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
      await removeIfEmpty(scratchDir)
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

/**
 * Removes a failed task's scratch folder when it is empty. A folder with files stays,
 * because a rerun of the same fingerprint resumes from them (train's checkpoints).
 */
async function removeIfEmpty(dir: string): Promise<void> {
  await rmdir(dir).catch(() => undefined)
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
