/**
 * Planning a run: the plan (DAG, params, hashed source items, code identities and
 * environments), one task per item or whole stage with its upstream tasks, input
 * resolution for a task whose upstream has finished, and the cache lookup.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import { codeIdentity, moduleIdentities, saveCodeHashCache, type CodeIdentity } from "./codehash.ts"
import {
  ArtifactHashInvalid, ArtifactNotGiven, ArtifactNotRecorded, ArtifactObjectMissing, ArtifactWrongProducer, InvalidStage
} from "./errors.ts"
import { describeSourceItem, type FingerprintMaterial } from "./fingerprint.ts"
import { resolveParams, type ParamsRequest, type ResolvedParams } from "./params.ts"
import type { PlanReads } from "./rerun-record.ts"
import type { WorkspaceSession } from "./session.ts"
import { discoverSource, hashSourceFiles, type HashedSource } from "./sources.ts"
import type { ArtifactInput, ArtifactRef, ItemSelection, Json, OutputInput, SourceItem, SourceItemRef, Stage } from "./stage.ts"
import { objectSize, type Layout, type StoredObject } from "./store.ts"
import { buildDag, selectStages, type Dag, type DagNode, type Workflow } from "./workflow.ts"

/** Plan inputs: the workflow, data folder, params sources, target stages and seed. */
export interface PlanRequest extends ParamsRequest {
  readonly workflow: Workflow
  readonly dataDir?: string
  readonly targets?: ReadonlyArray<string>
  readonly seed?: number
  /** Stored artifacts that `Stage.artifact(name)` inputs read: name -> full SHA-256 hash. */
  readonly artifacts?: Readonly<Record<string, string>>
  /** Source item keys left out of the run; `*` matches any run of characters. */
  readonly exclude?: ReadonlyArray<string>
}

/** Matches an item key against `--exclude` patterns, where `*` stands for any characters. */
export const isExcluded = (key: string, patterns: ReadonlyArray<string>): boolean =>
  patterns.some((pattern) => {
    const escaped = pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
    return new RegExp(`^${escaped.join(".*")}$`).test(key)
  })

/** A run-time artifact as the plan resolved it: one stored object and every output it was recorded as. */
export interface PlannedArtifact {
  readonly name: string
  readonly object: StoredObject
  /** Item of the first recorded output with this hash, null for a whole-stage output. */
  readonly item: string | null
  /** "stage.port" of every recorded output with this hash. */
  readonly producers: ReadonlyArray<string>
  /** The execution whose recorded output the plan uses: the first that wrote this hash. */
  readonly executionId: number
}

/** Everything known before any task runs: DAG, params, sources, code and environment. */
export interface Plan {
  readonly dag: Dag
  readonly selected: ReadonlyArray<string>
  readonly params: ResolvedParams
  readonly sources: ReadonlyMap<string, HashedSource>
  readonly code: ReadonlyMap<string, CodeIdentity>
  readonly environment: ReadonlyMap<string, Readonly<Record<string, string>>>
  readonly seed: number
  readonly artifacts: ReadonlyMap<string, PlannedArtifact>
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
  options: PlanRequest,
  session: WorkspaceSession,
  writeCache: boolean,
  reads: PlanReads | null = null
): Promise<Plan> {
  const dag = buildDag(options.workflow)
  const selected = selectStages(dag, options.targets ?? [])
  if (reads !== null && options.paramsFile !== undefined) reads.addFile(options.paramsFile)
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
    if (reads !== null) {
      const roots = source.roots?.(options.dataDir === undefined ? {} : { dataDir: options.dataDir })
      if (roots === undefined) reads.markUntrusted(`source ${name} names no folders`)
      else for (const root of roots) reads.addTree(root)
    }
    const discovered = await discoverSource(source, options.dataDir)
    reads?.requireRecorded(discovered.flatMap((item) => item.files))
    const exclude = options.exclude ?? []
    const items = exclude.length === 0 ? discovered : discovered.filter((item) => !isExcluded(item.key, exclude))
    sources.set(name, await hashSourceFiles(session.db, name, items, { writeCache }))
  }

  const artifacts = await planArtifacts(dag, selected, options.artifacts ?? {}, session)
  if (artifacts.size > 0) reads?.markUntrusted("the run reads stored artifacts")

  const code = new Map<string, CodeIdentity>()
  const environment = new Map<string, Readonly<Record<string, string>>>()
  for (const name of selected) {
    const stage = dag.nodes.get(name)!.stage
    code.set(name, codeIdentity(stage.module))
    environment.set(name, stage.environment === undefined ? {} : await Effect.runPromise(stage.environment()))
  }
  saveCodeHashCache()
  if (reads !== null) for (const [path, identity] of moduleIdentities()) reads.addIdentity(path, identity)
  return { dag, selected, params, sources, code, environment, seed: options.seed ?? options.workflow.seed, artifacts }
}

/**
 * Resolve every `Stage.artifact` input of the selected stages from `hashes` (name -> hash)
 * and check it: a full hash, recorded as a stage output, from an accepted producer, with its
 * object intact in the store. Source files are not accepted, since the store does not hold them.
 */
async function planArtifacts(
  dag: Dag,
  selected: ReadonlyArray<string>,
  hashes: Readonly<Record<string, string>>,
  session: WorkspaceSession
): Promise<Map<string, PlannedArtifact>> {
  const artifacts = new Map<string, PlannedArtifact>()
  for (const stageName of selected) {
    for (const [input, spec] of Object.entries(dag.nodes.get(stageName)!.stage.inputs)) {
      if (spec.kind !== "artifact") continue
      const hash = hashes[spec.name]
      if (hash === undefined) {
        throw new ArtifactNotGiven({ stage: stageName, input, name: spec.name, given: Object.keys(hashes) })
      }
      const planned = artifacts.get(spec.name) ?? (await findArtifact(spec.name, hash, session))
      checkProducer(spec, planned)
      artifacts.set(spec.name, planned)
    }
  }
  return artifacts
}

async function findArtifact(name: string, hash: string, session: WorkspaceSession): Promise<PlannedArtifact> {
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new ArtifactHashInvalid({ name, hash })
  const rows = await session.db.all<{
    kind: "file" | "directory"; ext: string; path: string; size: bigint; stage: string; port: string; item: string | null
    execution_id: number
  }>(
    `SELECT kind, ext, path, size, stage, port, item, execution_id::INTEGER AS execution_id FROM artifacts
     WHERE hash = $1 AND kind <> 'source' ORDER BY execution_id`,
    [hash]
  )
  const first = rows[0]
  if (first === undefined) throw new ArtifactNotRecorded({ name, hash, workspace: session.ws.root })
  const object: StoredObject = { hash, kind: first.kind, ext: first.ext, path: first.path, size: Number(first.size) }
  if (objectSize(session.ws, object.path, object.kind) !== object.size) {
    throw new ArtifactObjectMissing({ name, hash, path: join(session.ws.root, object.path) })
  }
  const producers = [...new Set(rows.map((row) => `${row.stage}.${row.port}`))]
  return { name, object, item: first.item, producers, executionId: first.execution_id }
}

function checkProducer(spec: ArtifactInput, planned: PlannedArtifact): void {
  if (spec.producedBy === undefined) return
  if (planned.producers.some((producer) => spec.producedBy!.includes(producer))) return
  throw new ArtifactWrongProducer({
    name: spec.name,
    hash: planned.object.hash,
    actual: planned.producers,
    expected: spec.producedBy
  })
}

/** Create one task per item of a per-item stage and one per whole stage, with deps from the declared inputs. */
export function planTasks(plan: Plan): Map<string, PlanTask> {
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
  readonly lineage: Array<LineageInput>
}

/** One input artifact of a task, with the execution that produced it, or for a source file the path it was read from. */
export interface LineageInput {
  readonly input: string
  readonly item: string | null
  readonly hash: string
  readonly producer: number | null
  readonly path: string | null
}

/** Resolve a task's inputs from the sources and the outputs of finished upstream tasks. */
export function resolveInputs(
  plan: Plan,
  ws: Layout,
  task: PlanTask,
  resultOf: (stage: string, item: string | null) => CacheEntry
): ResolvedInputs {
  const values: Record<string, unknown> = {}
  const material: Record<string, Json> = {}
  const lineage: Array<LineageInput> = []
  const addSource = (input: string, ref: SourceItemRef) => {
    for (const file of ref.files) lineage.push({ input, item: ref.key, hash: file.hash, producer: null, path: file.path })
  }
  const artifact = (input: string, stage: string, item: string | null, port: string): ArtifactRef => {
    const result = resultOf(stage, item)
    const stored = result.outputs[port]!
    lineage.push({ input, item, hash: stored.hash, producer: result.executionId, path: null })
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
    } else if (spec.kind === "artifact") {
      const planned = plan.artifacts.get(spec.name)!
      const ref: ArtifactRef = { item: planned.item, path: join(ws.root, planned.object.path), hash: planned.object.hash }
      values[name] = ref
      material[name] = ref.hash
      lineage.push({ input: name, item: ref.item, hash: ref.hash, producer: planned.executionId, path: null })
    } else if (spec.kind === "output") {
      const upstream = plan.dag.nodes.get(spec.stage)!
      const ref = artifact(name, spec.stage, upstream.itemSource === null ? null : task.item, spec.port)
      values[name] = ref
      material[name] = ref.hash
    } else {
      const upstream = plan.dag.nodes.get(spec.stage)!
      const map: Record<string, ArtifactRef> = {}
      const hashes: Record<string, Json> = {}
      let items = plan.sources.get(upstream.itemSource!)!.items
      if (spec.itemsFrom !== undefined) {
        // buildDag checked that the listing input is the output of a whole stage.
        const listing = task.node.stage.inputs[spec.itemsFrom.input] as OutputInput
        const listingPath = join(ws.root, resultOf(listing.stage, null).outputs[listing.port]!.path)
        items = selectItems(task, name, spec.itemsFrom, items, listingPath)
      }
      for (const item of items) {
        const ref = artifact(name, spec.stage, item.key, spec.port)
        map[item.key] = ref
        hashes[item.key] = ref.hash
      }
      values[name] = map
      material[name] = hashes
    }
  }
  return { values, material, lineage }
}

/** Returns the items of `items` that the selection's listing file names, in their source order. */
function selectItems(
  task: PlanTask, input: string, selection: ItemSelection, items: ReadonlyArray<SourceItem>, path: string
): ReadonlyArray<SourceItem> {
  let keys: ReadonlyArray<string>
  try {
    keys = selection.select(readFileSync(path, "utf8"))
  } catch (error) {
    throw new InvalidStage({
      stage: task.stage,
      reason: `input "${input}" could not take its items from ${path}: ${(error as Error).message}`
    })
  }
  const known = new Set(items.map((item) => item.key))
  const unknown = keys.filter((key) => !known.has(key))
  if (unknown.length > 0) {
    throw new InvalidStage({
      stage: task.stage,
      reason: `input "${input}" selected items that its upstream stage does not have (${unknown.join(", ")}), from ${path}`
    })
  }
  const chosen = new Set(keys)
  return items.filter((item) => chosen.has(item.key))
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
  const rows = await session.db.readCommittedAsJson<{
    id: number; stage: string; fingerprint: string; port: string; hash: string; kind: "file" | "directory"; ext: string; path: string; size: number
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
      entry = { executionId: row.id, outputs: {} }
      cache.set(key, entry)
    }
    entry.outputs[row.port] = { hash: row.hash, kind: row.kind, ext: row.ext, path: row.path, size: row.size }
  }
  return cache
}

/** Check that a cache entry has every declared port and that each object exists with its recorded size. */
export function isEntryIntact(ws: Layout, stage: Stage, entry: CacheEntry): boolean {
  for (const port of Object.keys(stage.outputs)) {
    const stored = entry.outputs[port]
    if (stored === undefined) return false
    if (objectSize(ws, stored.path, stored.kind) !== stored.size) return false
  }
  return true
}

