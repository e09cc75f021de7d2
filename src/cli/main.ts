/**
 * Command-line interface: `npm run workflow -- <command>`. Commands: full, run, explain,
 * predict, status, runs, dag, lineage, query, artifacts, gc and pin. Progress and logs go to stderr,
 * results to stdout. Exit status: 0 success, 1 a stage failed, 2 invalid input or
 * workflow, 3 workspace in use (a run or gc with --no-wait, or a read command while a run
 * writes the database).
 */
import { existsSync } from "node:fs"
import { availableParallelism } from "node:os"
import { dirname, isAbsolute, join } from "node:path"
// Deep imports: the package barrels load every module (HTTP, sockets...), which costs
// seconds of start-up through the tsx loader.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Argument from "effect/cli/Argument"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { describeCause, InvalidFlag, UnknownName } from "../runtime/errors.ts"
import type { RunOptions } from "../runtime/executor.ts"
import { buildDag, toDot, toMermaid } from "../runtime/workflow.ts"
import type { PredictOutputs } from "./predict.ts"
import { defaultWorkflow, loadWorkflow, workflowNames } from "./registry.ts"

// Each command imports what it runs when it runs. So `--help` loads neither the executor
// nor DuckDB, and `status` loads no stage, image codec or volume reader.
const loadInspect = () => import("../runtime/inspect.ts")
const loadProgress = () => import("./progress.ts")

// The environment as the process started, before --backend and --threads set variables:
// a rerun stamp records it, and the launcher compares it with its own before the CLI loads.
const startEnvironment: NodeJS.ProcessEnv = { ...process.env }

// A closed pipe (`workflow artifacts | head`) ends the output, not the program with a stack trace.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0)
  throw error
})
// Progress goes to stderr; a run goes on when its reader closes that pipe (`full 2>&1 | head`).
process.stderr.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code !== "EPIPE") throw error
})

const out = (text: string): void => {
  process.stdout.write(text.endsWith("\n") ? text : text + "\n")
}

const exitCodeOf = (error: unknown): number => {
  const tag = (error as { _tag?: string })._tag
  if (tag === "WorkspaceLocked" || tag === "DatabaseInUse" || tag === "DatabaseBusy") return 3
  if (tag === "RunFailed") return 1
  return 2
}

/** Run a command body; print a failure as one `error:` message and set the exit status. */
const action = (body: () => Promise<void>) =>
  Effect.promise(async () => {
    try {
      await body()
    } catch (error) {
      process.stderr.write(`error: ${describeCause(error)}\n`)
      process.exitCode = exitCodeOf(error)
    }
  })

const workspace = Flag.String("workspace").pipe(
  Flag.withDescription("Workspace folder that holds the store and the database"),
  Flag.withDefault("./cache")
)
const workflowFlag = Flag.String("workflow").pipe(
  Flag.withDescription(`Workflow to run (${workflowNames.join(", ")})`),
  Flag.withDefault(defaultWorkflow)
)
const json = Flag.Boolean("json").pipe(Flag.withDescription("Print JSON instead of a table"), Flag.withDefault(false))
const noWait = Flag.Boolean("no-wait").pipe(
  Flag.withDescription("Fail at once if another process uses the workspace, instead of waiting"),
  Flag.withDefault(false)
)

const runFlags = {
  workflow: workflowFlag,
  workspace,
  data: Flag.String("data").pipe(Flag.withDescription("Data folder the sources read"), Flag.optional),
  profile: Flag.String("profile").pipe(Flag.withDescription("Params profile: cpu (default), paper or ci"), Flag.optional),
  param: Flag.String("param").pipe(
    Flag.withAlias("p"),
    Flag.withDescription("Set a param: stage.key=value (value parsed as JSON, else a string); repeatable"),
    Flag.atLeast(0)
  ),
  params: Flag.String("params").pipe(Flag.withDescription("JSON file { stage: { key: value } } of params"), Flag.optional),
  force: Flag.String("force").pipe(
    Flag.withDescription("Rerun cached tasks: --force for every selected stage, --force=a,b for those stages"),
    Flag.withOptionalValue("*"),
    Flag.optional
  ),
  jobs: Flag.Int("jobs").pipe(Flag.withDescription("Tasks run in parallel (worker threads)"), Flag.withDefault(availableParallelism())),
  keepGoing: Flag.Boolean("keep-going").pipe(Flag.withDescription("After a failure, keep running independent stages"), Flag.withDefault(false)),
  dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("Show what would run and why, and run nothing"), Flag.withDefault(false)),
  seed: Flag.Int("seed").pipe(Flag.withDescription("Workflow seed (default: the workflow's own)"), Flag.optional),
  backend: Flag.String("backend").pipe(
    Flag.withDescription("TensorFlow.js backend: tensorflow-gpu, tensorflow, wasm or cpu (default: the first that loads)"),
    Flag.optional
  ),
  threads: Flag.String("threads").pipe(
    Flag.withDescription("Threads that training and inference use on the wasm and cpu backends, 1 to 256 (default: one per core)"),
    Flag.optional
  ),
  exclude: Flag.String("exclude").pipe(
    Flag.withDescription("Leave a case out of the run: its key, e.g. Cirrus/TRAIN001, or a pattern with *; repeatable"),
    Flag.atLeast(0)
  ),
  noWait
}

type RunFlagValues = {
  readonly [K in keyof typeof runFlags]: (typeof runFlags)[K] extends Flag.Flag<infer A> ? A : never
}

/** `--force` alone (parsed as "*") forces every selected stage, `--force=a,b` forces a and b. */
function parseForce(value: string | undefined): boolean | ReadonlyArray<string> {
  if (value === undefined) return false
  if (value === "*") return true
  return value.split(",").map((s) => s.trim()).filter((s) => s !== "")
}

/**
 * Passes --backend and --threads on through OCTFLOW_BACKEND and OCTFLOW_THREADS, which the
 * stages read, in this process and in worker threads. The thread count, from either, is
 * checked here, before any stage runs.
 */
async function setComputeEnvironment(backend: string | undefined, threads: string | undefined): Promise<void> {
  if (backend !== undefined) process.env.OCTFLOW_BACKEND = backend
  if (threads !== undefined) process.env.OCTFLOW_THREADS = threads
  const value = process.env.OCTFLOW_THREADS
  if (value !== undefined && value !== "") {
    const { parseThreads } = await import("../../stages/support/threads.ts")
    parseThreads(value)
  }
}

async function toRunOptions(flags: RunFlagValues, targets: ReadonlyArray<string>): Promise<RunOptions> {
  const force = Option.getOrUndefined(flags.force)
  if (!Number.isInteger(flags.jobs) || flags.jobs < 1) {
    throw new InvalidFlag({ flag: "--jobs", value: String(flags.jobs), expected: "an integer of at least 1" })
  }
  await setComputeEnvironment(Option.getOrUndefined(flags.backend), Option.getOrUndefined(flags.threads))
  return {
    workflow: await loadWorkflow(flags.workflow),
    workspace: flags.workspace,
    dataDir: Option.getOrUndefined(flags.data),
    profile: Option.getOrUndefined(flags.profile),
    paramsFile: Option.getOrUndefined(flags.params),
    overrides: flags.param,
    targets,
    force: parseForce(force),
    jobs: flags.jobs,
    keepGoing: flags.keepGoing,
    seed: Option.getOrUndefined(flags.seed),
    noWait: flags.noWait,
    exclude: flags.exclude,
    argv: process.argv.slice(2)
  }
}

async function explainCommand(options: RunOptions, onlyStages: ReadonlyArray<string>, asJson: boolean) {
  const known = options.workflow.stages.map((s) => s.name)
  const unknown = onlyStages.find((name) => !known.includes(name))
  if (unknown !== undefined) throw new UnknownName({ kind: "stage", name: unknown, known })
  const { explainWorkflow } = await import("../runtime/explain.ts")
  const entries = (await explainWorkflow(options)).filter((e) => onlyStages.length === 0 || onlyStages.includes(e.stage))
  if (asJson) return out(JSON.stringify(entries, null, 2))
  for (const entry of entries) {
    const where = entry.item === null ? entry.stage : `${entry.stage} ${entry.item}`
    out(`${entry.decision.padEnd(7)} ${where}: ${entry.reasons.join("; ")}`)
  }
  const count = (d: string) => entries.filter((e) => e.decision === d).length
  out(`${count("run")} to run, ${count("pending")} pending on upstream, ${count("skip")} to skip`)
}

/**
 * Prints, on Ctrl-C or SIGTERM, what a stopped run keeps: finished tasks are already in the
 * store and the database, training resumes from its last epoch checkpoint, and the next
 * run takes over the lock this process leaves. Effect's NodeRuntime then ends the process;
 * this listener goes first so that the line is written before it does.
 */
function reportInterruption(): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.prependOnceListener(signal, () => {
      process.stderr.write(`\noctflow: stopped by ${signal}. Finished tasks are kept; run the same command again to continue.\n`)
    })
  }
}

async function runCommand(flags: RunFlagValues, targets: ReadonlyArray<string>) {
  const options = await toRunOptions(flags, targets)
  if (flags.dryRun) return explainCommand(options, [], false)
  reportInterruption()
  const [{ runWorkflow }, { formatSummary, ProgressReporter }] = await Promise.all([import("../runtime/executor.ts"), loadProgress()])
  const progress = new ProgressReporter()
  const started = Date.now()
  const stamp = {
    cwd: process.cwd(),
    argv: process.argv.slice(2),
    env: startEnvironment,
    describeOutputs: () => formatOutputs(options.workflow, options.workspace)
  }
  const summary = await runWorkflow({ ...options, reporter: progress.report, stamp })
  progress.finish()
  out(formatSummary(summary, Date.now() - started))
  if (summary.error !== undefined) throw summary.error
  out(formatOutputs(options.workflow, options.workspace))
}

/** Lists where the workflow's named outputs and the database are, for the newest run. */
function formatOutputs(workflow: RunOptions["workflow"], workspaceDir: string): string {
  const lines = Object.entries(workflow.outputs ?? {})
    .map(([label, stagePort]) => ({ label, path: join(workspaceDir, "latest", stagePort) }))
    .filter(({ path }) => existsSync(path))
    .map(({ label, path }) => `  ${label.padEnd(14)} ${path}`)
  lines.push(`  ${"database".padEnd(14)} ${join(workspaceDir, "octflow.duckdb")}`)
  return ["outputs:", ...lines].join("\n")
}

const full = Command.make("full", runFlags, (flags) => action(() => runCommand(flags, []))).pipe(
  Command.withDescription("Run every stage of the workflow, reusing cached results")
)

const run = Command.make(
  "run",
  { ...runFlags, stages: Argument.String("stage").pipe(Argument.withDescription("Stage to run"), Argument.atLeast(1)) },
  ({ stages, ...flags }) => action(() => runCommand(flags, stages))
).pipe(Command.withDescription("Run the named stages and what they need upstream"))

const explain = Command.make(
  "explain",
  { ...runFlags, json, stages: Argument.String("stage").pipe(Argument.withDescription("Stages to show (default: all)"), Argument.atLeast(0)) },
  ({ stages, json: asJson, ...flags }) => action(async () => explainCommand(await toRunOptions(flags, []), stages, asJson))
).pipe(Command.withDescription("For every stage and item: would it run or be skipped, and why"))

/** Lists where the prediction's files are, and how to trace them to the model. */
function formatPrediction(result: PredictOutputs, workspaceDir: string): string {
  const source = result.model.runId === null ? "" : ` of run ${result.model.runId}`
  const lines = [
    `prediction for ${result.key} (${result.vendor}) with train.${result.model.port} ${result.model.model.slice(0, 12)}${source}:`,
    `  ${"label volume".padEnd(14)} ${result.labels}`,
    `  ${"NIfTI labels".padEnd(14)} ${result.labelsNifti}`,
    `  ${"overlays".padEnd(14)} ${result.overlays.length === 0 ? "(none)" : result.overlays.join("\n" + " ".repeat(17))}`,
    result.hasReference
      ? `  ${"metrics".padEnd(14)} ${result.metrics}`
      : `  ${"volumes".padEnd(14)} ${result.metrics} (the scan has no reference, so no Dice)`,
    `  ${"database".padEnd(14)} ${join(workspaceDir, "octflow.duckdb")}`
  ]
  if (result.trainedOn.length > 0) {
    lines.push(
      `warning: this scan is the model's training case ${result.trainedOn.join(", ")}, ` +
        "so its metrics are not a held-out result"
    )
  }
  if (result.copies.length > 0) lines.push(`copied ${result.copies.length} files to ${dirname(result.copies[0]!)}`)
  lines.push(`lineage: npm run workflow -- lineage --upstream --workspace ${workspaceDir} ${result.labels}`)
  return lines.join("\n")
}

const predict = Command.make("predict", {
  workspace,
  noWait,
  volume: Argument.String("volume").pipe(
    Argument.withDescription("Scan to segment: a .mhd, .mha, .nii or .nii.gz file, a case folder, or a B-scan folder with octflow.json")
  ),
  model: Flag.String("model").pipe(
    Flag.withDescription(
      "Model: a run id (its train.best), a train model hash or prefix, or a path such as <workspace>/latest/train/best " +
        "(default: train.best of the newest successful run)"
    ),
    Flag.optional
  ),
  vendor: Flag.String("vendor").pipe(
    Flag.withDescription("Cirrus, Spectralis or Topcon (default: the sidecar's vendor, else the parent folder's name)"),
    Flag.optional
  ),
  out: Flag.String("out").pipe(Flag.withDescription("Folder to copy the label volumes, overlays and metrics to"), Flag.optional),
  backend: runFlags.backend,
  threads: runFlags.threads,
  profile: Flag.String("profile").pipe(Flag.withDescription("Params profile of the predict workflow: cpu (default), paper or ci"), Flag.optional),
  skipGeometryCheck: Flag.Boolean("skip-geometry-check").pipe(
    Flag.withDescription("Preprocess a scan whose element type or B-scan height does not fit its vendor"),
    Flag.withDefault(false)
  )
}, (flags) => action(async () => {
  await setComputeEnvironment(Option.getOrUndefined(flags.backend), Option.getOrUndefined(flags.threads))
  reportInterruption()
  const [{ predictScan }, { formatSummary, ProgressReporter }] = await Promise.all([import("./predict.ts"), loadProgress()])
  const progress = new ProgressReporter()
  const started = Date.now()
  const result = await predictScan({
    volume: flags.volume,
    workspace: flags.workspace,
    model: Option.getOrUndefined(flags.model),
    vendor: Option.getOrUndefined(flags.vendor),
    out: Option.getOrUndefined(flags.out),
    profile: Option.getOrUndefined(flags.profile),
    skipGeometryCheck: flags.skipGeometryCheck,
    noWait: flags.noWait,
    argv: process.argv.slice(2),
    reporter: progress.report
  }).finally(() => progress.finish())
  out(formatSummary(result.summary, Date.now() - started))
  out(formatPrediction(result, flags.workspace))
})).pipe(Command.withDescription("Segment a new scan with a trained model and record its lineage"))

const status = Command.make("status", { workspace, json }, (flags) => action(async () => {
  const { workspaceStatus } = await loadInspect()
  const result = await workspaceStatus(flags.workspace)
  if (flags.json) return out(JSON.stringify(result, null, 2))
  if (result.run === null) return out("no runs yet")
  out(`newest run ${result.run.id} (${result.run.workflow}, profile ${result.run.profile}): ${result.run.status}, started ${result.run.started}`)
  for (const s of result.stages) {
    const notRun = s.tasks === null ? 0 : s.tasks - s.ran - s.cached - s.failed
    const notRunText = notRun > 0 ? `, not run ${notRun}` : ""
    const errorText = s.last_error === null ? "" : ` (${s.last_error.split("\n")[0]})`
    out(`  ${s.stage.padEnd(16)} ran ${s.ran}, skipped ${s.cached}, failed ${s.failed}${notRunText}${errorText}`)
  }
})).pipe(Command.withDescription("Show the newest run and how each stage ended"))

const runs = Command.make("runs", { workspace, json }, (flags) => action(async () => {
  const { listRuns } = await loadInspect()
  const rows = await listRuns(flags.workspace)
  if (flags.json) return out(JSON.stringify(rows, null, 2))
  for (const r of rows) {
    out(`${r.id} ${r.status.padEnd(11)} ${r.workflow} profile=${r.profile} ran=${r.ran} skipped=${r.cached} failed=${r.failed}${r.pinned ? " pinned" : ""}`)
  }
})).pipe(Command.withDescription("List every run, newest first"))

const dag = Command.make("dag", {
  workflow: workflowFlag,
  format: Flag.Literals("format", ["mermaid", "dot"]).pipe(Flag.withDescription("Output format"), Flag.withDefault("mermaid"))
}, (flags) => action(async () => {
  const graph = buildDag(await loadWorkflow(flags.workflow))
  out(flags.format === "dot" ? toDot(graph) : toMermaid(graph))
})).pipe(Command.withDescription("Print the stage graph as Mermaid or Graphviz DOT"))

const lineageCommand = Command.make("lineage", {
  workspace,
  json,
  artifact: Argument.String("artifact").pipe(Argument.withDescription("Artifact hash (or prefix) or path")),
  upstream: Flag.Boolean("upstream").pipe(Flag.withDescription("Show what produced it (default)"), Flag.withDefault(false)),
  downstream: Flag.Boolean("downstream").pipe(Flag.withDescription("Show what depends on it"), Flag.withDefault(false))
}, (flags) => action(async () => {
  const { lineage } = await loadInspect()
  const result = await lineage(flags.workspace, flags.artifact, flags.downstream ? "downstream" : "upstream")
  if (flags.json) return out(JSON.stringify(result, null, 2))
  for (const r of result.rows) {
    const what = r.kind === "source" ? `source ${r.stage} item ${r.item}` : `${r.stage}.${r.port}${r.item === null ? "" : ` item ${r.item}`}`
    const environment = r.environment === null || r.environment === "{}" ? "" : `, environment ${r.environment}`
    const how = r.execution_id === null ? "" : ` (execution ${r.execution_id}, params ${r.params}, code ${r.code_hash?.slice(0, 12)}${environment})`
    // gc removes objects that no kept run uses, but their records stay.
    const removedNote = existsSync(isAbsolute(r.path) ? r.path : join(flags.workspace, r.path)) ? "" : " (file removed)"
    out(`${"  ".repeat(r.depth)}${r.hash.slice(0, 12)} ${what} ${r.path}${removedNote}${how}`)
  }
})).pipe(Command.withDescription("Show the inputs, params and code behind an artifact, or what depends on it"))

const queryCommand = Command.make("query", {
  workspace,
  json,
  sql: Argument.String("sql").pipe(Argument.withDescription("One read-only SQL statement"))
}, (flags) => action(async () => {
  const { query } = await loadInspect()
  const result = await query(flags.workspace, flags.sql)
  const replacer = (_: string, v: unknown) => (typeof v === "bigint" ? Number(v) : v)
  if (flags.json) return out(JSON.stringify(result.rows, replacer, 2))
  out(result.columns.join("\t"))
  for (const row of result.rows) out(result.columns.map((c) => JSON.stringify(row[c], replacer) ?? "").join("\t"))
})).pipe(Command.withDescription("Run read-only SQL on the workspace database"))

const artifacts = Command.make("artifacts", {
  workspace,
  json,
  stage: Flag.String("stage").pipe(Flag.withDescription("Only this stage's outputs"), Flag.optional),
  run: Flag.String("run").pipe(Flag.withDescription("Run id (default: the newest run, or with --stage the newest run of that stage)"), Flag.optional)
}, (flags) => action(async () => {
  const { listArtifacts } = await loadInspect()
  const rows = await listArtifacts(flags.workspace, { stage: Option.getOrUndefined(flags.stage), run: Option.getOrUndefined(flags.run) })
  if (flags.json) return out(JSON.stringify(rows, null, 2))
  for (const r of rows) out(`${r.stage}.${r.port}\t${r.item ?? "-"}\t${r.hash}\t${r.path}`)
})).pipe(Command.withDescription("List the outputs of a run: path, hash and item"))

const gc = Command.make("gc", {
  workspace,
  noWait,
  dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("List what would be removed"), Flag.withDefault(false)),
  keep: Flag.Int("keep").pipe(Flag.withDescription("Number of newest finished runs whose objects are kept; interrupted runs do not count"), Flag.withDefault(5))
}, (flags) => action(async () => {
  const { collectGarbage } = await loadInspect()
  const result = await collectGarbage(flags.workspace, { dryRun: flags.dryRun, keepRuns: flags.keep, noWait: flags.noWait })
  const verb = flags.dryRun ? "would remove" : "removed"
  if (flags.dryRun) {
    for (const path of result.removedObjects) out(`object  ${path}`)
    for (const id of result.removedRunDirs) out(`run     runs/${id}`)
    for (const name of result.removedViews) out(`view    views/${name}`)
  }
  out(`${verb} ${result.removedObjects.length} objects, ${result.removedRunDirs.length} run folders and ` +
    `${result.removedViews.length} views; ` +
    `kept ${result.keptObjects} objects used by runs ${result.keptRuns.join(", ")}`)
})).pipe(Command.withDescription("Remove objects that neither the newest finished runs nor pinned runs use"))

const pin = Command.make("pin", {
  workspace,
  noWait,
  run: Argument.String("run").pipe(Argument.withDescription("Run id to keep through gc"))
}, (flags) => action(async () => {
  const { pinRun } = await loadInspect()
  await pinRun(flags.workspace, flags.run, { noWait: flags.noWait })
  out(`pinned run ${flags.run}`)
})).pipe(Command.withDescription("Keep a run's objects through gc"))

const root = Command.make("workflow").pipe(
  Command.withDescription("Run and inspect octflow workflows"),
  Command.withSubcommands([full, run, explain, predict, status, runs, dag, lineageCommand, queryCommand, artifacts, gc, pin])
)

root.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
