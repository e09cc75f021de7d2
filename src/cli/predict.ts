/**
 * `workflow predict <volume>`: segments one new scan with a model trained in the workspace.
 *
 * The model reference is resolved against the workspace database. By default it is the
 * `best` model of the train stage of the newest successful run. A run id picks that run's
 * `best`, and an artifact hash, hash prefix or path must name a train model output.
 *
 * Through the train execution's lineage the command also finds the model's history file, a
 * preprocess info of its training cases (which carries the Spectralis reference histogram)
 * and the roi params of the training masks. The model, history and info go to the predict
 * workflow as run-time artifacts, so the outputs' lineage reaches the model and the
 * training data. The roi params go in as params of the prepare stage.
 */
import { existsSync } from "node:fs"
import { chmod, copyFile, mkdir, readdir, readFile, realpath, rm, stat } from "node:fs/promises"
import { basename, join, relative, resolve, sep } from "node:path"
import * as Data from "effect/Data"
import { InvalidFlag, RunFailed } from "../runtime/errors.ts"
import { runWorkflow, type RunEvent, type RunSummary } from "../runtime/executor.ts"
import { taskKey } from "../runtime/plan.ts"
import { hashFiles } from "../runtime/hash.ts"
import { openForRead, type WorkspaceSession } from "../runtime/session.ts"
import type { StoredObject } from "../runtime/store.ts"
import { workflow as predictWorkflow } from "../../workflows/predict.ts"
import { describeScan, resolveScanVendor, type ScanMeta } from "../../stages/predict-scan.ts"

const modelRefHint =
  "pass a run id (from `npm run workflow -- runs`), a train model hash or prefix (from `npm run workflow -- artifacts --stage train`), " +
  "or a path such as <workspace>/latest/train/best"

/** No run id, stored path or artifact hash in the workspace matches the --model reference. */
export class ModelNotFoundError extends Data.TaggedError("ModelNotFoundError")<{
  readonly ref: string
  readonly workspace: string
}> {
  override get message(): string {
    return `--model ${JSON.stringify(this.ref)} matches no run id, path or artifact hash in workspace ${this.workspace}; ${modelRefHint}`
  }
}

/** The --model path exists but is not an object of the workspace store, so its training cannot be traced. */
export class ModelPathNotStoredError extends Data.TaggedError("ModelPathNotStoredError")<{
  readonly ref: string
  readonly path: string
  readonly workspace: string
}> {
  override get message(): string {
    return (
      `--model ${JSON.stringify(this.ref)}: ${this.path} is not an object of workspace ${this.workspace}, so the run ` +
      `that trained it is unknown; pass --workspace of that run, or ${modelRefHint}`
    )
  }
}

/** The --model hash prefix matches more than one artifact. */
export class ModelRefAmbiguousError extends Data.TaggedError("ModelRefAmbiguousError")<{
  readonly ref: string
  readonly matches: ReadonlyArray<string>
}> {
  override get message(): string {
    const shown = this.matches.map((hash) => hash.slice(0, 12)).join(", ")
    return `--model ${JSON.stringify(this.ref)} matches several artifacts (${shown}, ...); give more hex digits of the hash`
  }
}

/** The --model run id names a run without a finished train stage. */
export class RunWithoutModelError extends Data.TaggedError("RunWithoutModelError")<{
  readonly runId: string
  readonly workflow: string
}> {
  override get message(): string {
    return `--model ${JSON.stringify(this.runId)} is a ${this.workflow} run without a finished train stage; ${modelRefHint}`
  }
}

/** The --model reference names a recorded artifact that is not a train model. */
export class ModelRefNotModelError extends Data.TaggedError("ModelRefNotModelError")<{
  readonly ref: string
  readonly hash: string
  readonly actual: string
}> {
  override get message(): string {
    return (
      `--model ${JSON.stringify(this.ref)} is ${this.actual} (${this.hash.slice(0, 12)}), not a model of the train ` +
      "stage; pass train.best or train.model, for example <workspace>/latest/train/best or its run id"
    )
  }
}

/** The workspace has no successful run with a train stage to take the default model from. */
export class NoTrainedModelError extends Data.TaggedError("NoTrainedModelError")<{ readonly workspace: string }> {
  override get message(): string {
    return (
      `workspace ${this.workspace} has no successful run with a train stage; train a model with ` +
      "`npm run workflow -- full --workspace <dir>` first, or pass --model and --workspace of a trained run"
    )
  }
}

/** The train execution of the model lacks a record that prediction needs. */
export class TrainingRecordError extends Data.TaggedError("TrainingRecordError")<{
  readonly model: string
  readonly executionId: number
  readonly missing: string
}> {
  override get message(): string {
    return (
      `model ${this.model.slice(0, 12)} (train execution ${this.executionId}) has no recorded ${this.missing}; ` +
      "retrain it with `npm run workflow -- full` in this workspace"
    )
  }
}

/** The model and the training records that prediction reads, as run-time artifacts. */
export interface ResolvedModel {
  readonly model: string
  readonly port: string
  readonly executionId: number
  /** The run the model was taken from, when the reference named a run or was the default. */
  readonly runId: string | null
  readonly history: string
  readonly preprocessInfo: string
  /** Params of the roi stage that made the training cases' masks; null when none is recorded. */
  readonly roiParams: Readonly<Record<string, unknown>> | null
}

interface ArtifactRow {
  readonly hash: string
  readonly kind: string
  readonly stage: string | null
  readonly port: string | null
  readonly item: string | null
  readonly path: string
  readonly execution_id: bigint | null
}

/** Returns the train model named by `ref` (default: the newest successful run's `best`). */
export async function resolveModel(workspace: string, ref: string | undefined): Promise<ResolvedModel> {
  const session = await openForRead(workspace)
  try {
    const { hash, runId } = await modelHashOf(session, ref)
    return await trainingRecordsOf(session, ref ?? hash, hash, runId)
  } finally {
    await session.close()
  }
}

async function modelHashOf(session: WorkspaceSession, ref: string | undefined): Promise<{ hash: string; runId: string | null }> {
  const trainBest = `SELECT a.hash, r.id AS run_id FROM runs r
     JOIN run_tasks t ON t.run_id = r.id AND t.stage = 'train'
     JOIN artifacts a ON a.execution_id = t.execution_id AND a.stage = 'train' AND a.port = 'best'`
  if (ref === undefined) {
    const rows = await session.db.all<{ hash: string; run_id: string }>(
      `${trainBest} WHERE r.status = 'ok' ORDER BY r.started DESC, r.id DESC LIMIT 1`
    )
    if (rows[0] === undefined) throw new NoTrainedModelError({ workspace: session.ws.root })
    return { hash: rows[0].hash, runId: rows[0].run_id }
  }

  const runs = await session.db.all<{ id: string; workflow: string }>("SELECT id, workflow FROM runs WHERE id = $1", [ref])
  if (runs[0] !== undefined) {
    const rows = await session.db.all<{ hash: string; run_id: string }>(`${trainBest} WHERE r.id = $1 LIMIT 1`, [ref])
    if (rows[0] === undefined) throw new RunWithoutModelError({ runId: ref, workflow: runs[0].workflow })
    return { hash: rows[0].hash, runId: ref }
  }
  return { hash: await artifactHashOf(session, ref), runId: null }
}

/** Resolves a path (followed through the run links) or a hash prefix to one recorded hash. */
async function artifactHashOf(session: WorkspaceSession, ref: string): Promise<string> {
  const notFound = new ModelNotFoundError({ ref, workspace: session.ws.root })
  if (existsSync(ref)) {
    const target = await realpath(resolve(ref))
    const inStore = relative(session.ws.root, target).split(sep).join("/")
    const rows = await session.db.all<{ hash: string }>("SELECT hash FROM artifacts WHERE path = $1 LIMIT 1", [inStore])
    if (rows[0] !== undefined) return rows[0].hash
    throw new ModelPathNotStoredError({ ref, path: target, workspace: session.ws.root })
  }
  if (!/^[0-9a-f]{4,64}$/.test(ref)) throw notFound
  const rows = await session.db.all<{ hash: string }>(
    "SELECT DISTINCT hash FROM artifacts WHERE hash LIKE $1 || '%' ORDER BY hash LIMIT 3",
    [ref]
  )
  if (rows.length === 0) throw notFound
  if (rows.length > 1) throw new ModelRefAmbiguousError({ ref, matches: rows.map((row) => row.hash) })
  return rows[0]!.hash
}

const describeArtifact = (row: ArtifactRow): string => {
  if (row.kind === "source") return `the source file ${row.path} of item ${row.item ?? "(none)"}`
  return `output ${row.stage}.${row.port}${row.item === null ? "" : ` of item ${row.item}`}`
}

async function trainingRecordsOf(session: WorkspaceSession, ref: string, hash: string, runId: string | null): Promise<ResolvedModel> {
  const rows = await session.db.all<ArtifactRow>(
    "SELECT hash, kind, stage, port, item, path, execution_id FROM artifacts WHERE hash = $1 ORDER BY execution_id DESC",
    [hash]
  )
  // The best and the last model have the same hash when the last epoch was the best.
  const trainRows = rows.filter((row) => row.stage === "train" && row.kind !== "source")
  const model = trainRows.find((row) => row.port === "best") ?? trainRows.find((row) => row.port === "model")
  if (model === undefined || model.execution_id === null) {
    throw new ModelRefNotModelError({ ref, hash, actual: rows[0] === undefined ? "not recorded" : describeArtifact(rows[0]) })
  }
  const executionId = Number(model.execution_id)

  const history = await session.db.all<{ hash: string }>(
    "SELECT hash FROM artifacts WHERE execution_id = $1 AND port = 'history'",
    [executionId]
  )
  if (history[0] === undefined) throw new TrainingRecordError({ model: hash, executionId, missing: "history output" })

  // train reads only the training cases. The split that train read was made from every
  // case's info, so a Cirrus or Topcon test case still supplies the reference histogram.
  const infos = await session.db.all<{ hash: string; path: string; item: string | null }>(
    `SELECT DISTINCT l.hash, a.path, l.item FROM lineage l
     JOIN artifacts a ON a.hash = l.hash AND a.stage = 'preprocess' AND a.port = 'info'
     WHERE l.input = 'info' AND (l.execution_id = $1 OR l.execution_id IN (
       SELECT s.execution_id FROM lineage t JOIN artifacts s ON s.hash = t.hash AND s.stage = 'split' AND s.port = 'split'
       WHERE t.execution_id = $1 AND t.input = 'split'))
     ORDER BY l.item, l.hash`,
    [executionId]
  )
  if (infos.length === 0) throw new TrainingRecordError({ model: hash, executionId, missing: "preprocess info input" })

  const roiRuns = await session.db.all<{ params: string }>(
    `SELECT e.params::VARCHAR AS params FROM lineage l
     JOIN artifacts a ON a.hash = l.hash AND a.stage = 'roi' AND a.port = 'mask'
     JOIN executions e ON e.id = a.execution_id
     WHERE l.execution_id = $1 AND l.input = 'rois' ORDER BY e.id DESC LIMIT 1`,
    [executionId]
  )
  return {
    model: hash,
    port: model.port!,
    executionId,
    runId,
    history: history[0].hash,
    preprocessInfo: await pickMatchingInfo(session, infos),
    roiParams: roiRuns[0] === undefined ? null : (JSON.parse(roiRuns[0].params) as Record<string, unknown>)
  }
}

/**
 * Picks the first preprocess info (by case key) that records a reference histogram: every
 * matched case of one run carries the same one. When none does (no Cirrus or Topcon case,
 * or info written before the field existed), any info serves a Spectralis scan, and the
 * prepare stage explains what is missing for the other vendors.
 */
async function pickMatchingInfo(
  session: WorkspaceSession,
  infos: ReadonlyArray<{ hash: string; path: string }>
): Promise<string> {
  for (const info of infos) {
    const path = join(session.ws.root, info.path)
    if (!existsSync(path)) continue
    const parsed = JSON.parse(await readFile(path, "utf8")) as { referenceHistogram?: unknown }
    if (Array.isArray(parsed.referenceHistogram)) return info.hash
  }
  return infos[0]!.hash
}

export interface PredictRequest {
  readonly volume: string
  readonly workspace: string
  readonly model?: string
  readonly vendor?: string
  readonly out?: string
  readonly profile?: string
  readonly skipGeometryCheck?: boolean
  readonly noWait?: boolean
  readonly argv?: ReadonlyArray<string>
  readonly reporter?: (event: RunEvent) => void
}

/** Files of one prediction: paths under `runs/<run id>/`, plus copies under `--out`. */
export interface PredictOutputs {
  readonly key: string
  readonly vendor: string
  readonly model: ResolvedModel
  readonly summary: RunSummary
  readonly labels: string
  readonly labelsNifti: string
  readonly overlays: ReadonlyArray<string>
  readonly metrics: string
  readonly hasReference: boolean
  /** Training or validation cases of the model whose source files are exactly the scan's. */
  readonly trainedOn: ReadonlyArray<string>
  readonly copies: ReadonlyArray<string>
}

/**
 * Lists the cases the model was fitted or validated on whose recorded source files include
 * every file of the scan, so a user learns that metrics on this scan are not a held-out result.
 */
async function trainingCasesMatching(
  workspace: string,
  scanFiles: ReadonlyArray<string>,
  historyHash: string
): Promise<Array<string>> {
  const scanHashes = [...new Set(await hashFiles(scanFiles))]
  if (scanHashes.length === 0) return []
  const session = await openForRead(workspace)
  try {
    const historyRows = await session.db.all<{ path: string }>("SELECT path FROM artifacts WHERE hash = $1 LIMIT 1", [historyHash])
    if (historyRows[0] === undefined) return []
    const history = JSON.parse(await readFile(join(session.ws.root, historyRows[0].path), "utf8")) as {
      readonly fit?: ReadonlyArray<string>
      readonly validation?: ReadonlyArray<string>
    }
    const trainingCases = new Set([...(history.fit ?? []), ...(history.validation ?? [])])
    const placeholders = scanHashes.map((_, index) => `$${index + 2}`).join(", ")
    const rows = await session.db.all<{ item: string }>(
      `SELECT item FROM artifacts
       WHERE kind = 'source' AND stage = 'dataset' AND hash IN (${placeholders})
       GROUP BY item HAVING count(DISTINCT hash) = $1`,
      [scanHashes.length, ...scanHashes]
    )
    return rows.map((row) => row.item).filter((item) => trainingCases.has(item)).sort()
  } finally {
    await session.close()
  }
}

/**
 * Runs the predict workflow on one scan. Rejects with a tagged error for a bad scan, vendor
 * or model reference before anything runs, and with the run's `RunFailed` when a stage fails.
 */
export async function predictScan(request: PredictRequest): Promise<PredictOutputs> {
  if (request.out !== undefined) await checkOutFolder(request.out)
  const item = await describeScan(request.volume)
  const meta = item.meta as unknown as ScanMeta
  const { vendor } = resolveScanVendor(resolve(request.volume), meta, request.vendor ?? "auto")
  const model = await resolveModel(request.workspace, request.model)

  const overrides: Array<string> = []
  if (request.vendor !== undefined) overrides.push(`prepare.vendor=${JSON.stringify(request.vendor)}`)
  if (request.skipGeometryCheck === true) overrides.push("prepare.strictGeometry=false")
  // The scan's ROI is computed with the training run's roi params, so the mask is the one
  // the network's training patches were drawn from.
  if (model.roiParams !== null) overrides.push(`prepare.roi=${JSON.stringify(model.roiParams)}`)
  const summary = await runWorkflow({
    workflow: predictWorkflow,
    workspace: request.workspace,
    dataDir: resolve(request.volume),
    profile: request.profile,
    overrides,
    artifacts: { model: model.model, history: model.history, preprocessInfo: model.preprocessInfo },
    jobs: 1,
    noWait: request.noWait,
    argv: request.argv,
    reporter: request.reporter,
    updateLatest: false
  })
  if (summary.error !== undefined) {
    // predict has one scan and no --exclude, so its failure message suggests none.
    throw new RunFailed({ failed: summary.error.failed, blocked: summary.error.blocked, suggestExclude: false })
  }

  const outputs = outputsOf(summary, item.key)
  const root = resolve(request.workspace)
  // The run's view (runs/<run id>/predict/<port>/<scan><ext>) names files by port and scan,
  // and it links to the read-only object in the store.
  const viewPath = (port: string) => {
    const view = join(root, "runs", summary.runId, "predict", port, `${item.key.replace(/[/\\]/g, "_")}${outputs[port]!.ext}`)
    return existsSync(view) ? view : join(root, outputs[port]!.path)
  }
  const overlayDir = viewPath("overlays")
  const overlays = (await readdir(overlayDir)).sort().map((name) => join(overlayDir, name))
  const metrics = viewPath("metrics")
  const hasReference = (JSON.parse(await readFile(metrics, "utf8")) as { evaluation: unknown }).evaluation !== null
  const result = {
    key: item.key,
    vendor,
    model,
    summary,
    labels: viewPath("labels"),
    labelsNifti: viewPath("labelsNifti"),
    overlays,
    metrics,
    hasReference,
    trainedOn: await trainingCasesMatching(request.workspace, item.files, model.history)
  }
  const copies = request.out === undefined ? [] : await copyOutputs(result, request.out)
  return { ...result, copies }
}

function outputsOf(summary: RunSummary, key: string): Readonly<Record<string, StoredObject>> {
  const outcome = summary.outcomes.get(taskKey("predict", key))
  if (outcome === undefined || (outcome.action !== "ran" && outcome.action !== "cached")) {
    throw new Error(`internal: the predict task of ${key} did not finish although the run succeeded`)
  }
  return outcome.outputs
}

/** Rejects an `--out` path that exists and is not a folder, before the prediction runs. */
export async function checkOutFolder(dir: string): Promise<void> {
  const info = await stat(dir).catch(() => null)
  if (info !== null && !info.isDirectory()) {
    throw new InvalidFlag({ flag: "--out", value: dir, expected: "a folder or a path that does not exist yet, not a file" })
  }
}

/** Copies the label volumes, metrics and overlays to `dir` as writable files named after the scan. */
async function copyOutputs(
  result: Pick<PredictOutputs, "key" | "labels" | "labelsNifti" | "overlays" | "metrics">,
  dir: string
): Promise<Array<string>> {
  await mkdir(dir, { recursive: true })
  const name = result.key.replace(/[^A-Za-z0-9._-]+/g, "_")
  const pairs: Array<[string, string]> = [
    [result.labels, join(dir, `${name}.mha`)],
    [result.labelsNifti, join(dir, `${name}.nii.gz`)],
    [result.metrics, join(dir, `${name}_metrics.json`)],
    ...result.overlays.map((path): [string, string] => [path, join(dir, basename(path))])
  ]
  for (const [from, to] of pairs) {
    // Store objects are read-only and copies keep the mode, so an earlier copy must go first.
    await rm(to, { force: true })
    await copyFile(from, to)
    await chmod(to, 0o644)
  }
  return pairs.map(([, to]) => to)
}
