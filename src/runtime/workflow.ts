/**
 * Workflow definition and its DAG. A workflow names its sources, stages, params profiles
 * and seed. `buildDag` derives the edges from each stage's declared inputs (not from list
 * order). At load time it rejects cycles, inputs that no stage or source produces, and
 * duplicate producers.
 */
import { DagCycle, DuplicateProducer, InvalidStage, MissingProducer, UnknownName } from "./errors.ts"
import type { InputSpec, Source, Stage } from "./stage.ts"

/** Params values per stage: `{ stageName: { key: value } }`. */
export type ParamsLayer = Readonly<Record<string, Readonly<Record<string, unknown>>>>

export interface WorkflowConfig {
  readonly name: string
  readonly sources: Readonly<Record<string, Source>>
  readonly stages: ReadonlyArray<Stage>
  /** Named params profiles; `cpu` is the default profile. */
  readonly profiles?: Readonly<Record<string, ParamsLayer>>
  /** Workflow seed; each stage and item derives its own seed from it. */
  readonly seed: number
  /** Outputs the CLI lists after a run, as label -> "stage/port" under `<workspace>/latest`. */
  readonly outputs?: Readonly<Record<string, string>>
}

export interface Workflow extends WorkflowConfig {
  readonly _tag: "Workflow"
}

export const make = (config: WorkflowConfig): Workflow => ({ _tag: "Workflow", ...config })

/** A stage in the DAG, with what it maps over and which stages it reads. */
export interface DagNode {
  readonly stage: Stage
  /** Root source whose items this stage maps over; null for a whole stage. */
  readonly itemSource: string | null
  readonly upstream: ReadonlyArray<string>
}

export interface Dag {
  readonly workflow: Workflow
  readonly nodes: ReadonlyMap<string, DagNode>
  /** Stage names in a topological order (upstream first, ties by declaration order). */
  readonly order: ReadonlyArray<string>
}

const inputTarget = (spec: InputSpec): string => {
  if (spec.kind === "source" || spec.kind === "sourcePick") return `source "${spec.source}"`
  if (spec.kind === "artifact") return `artifact "${spec.name}"`
  return `output "${spec.port}" of stage "${spec.stage}"`
}

/** Build and check the DAG of a workflow. Throws a tagged error for every load-time fault. */
export function buildDag(workflow: Workflow): Dag {
  const byName = new Map<string, Stage>()
  for (const stage of workflow.stages) {
    const previous = byName.get(stage.name)
    if (previous !== undefined) {
      throw new DuplicateProducer({ output: `stage "${stage.name}"`, modules: [previous.module, stage.module] })
    }
    if (workflow.sources[stage.name] !== undefined) {
      throw new InvalidStage({ stage: stage.name, reason: "a source has the same name; rename the stage" })
    }
    byName.set(stage.name, stage)
  }

  const upstreamOf = new Map<string, Array<string>>()
  for (const stage of workflow.stages) {
    const upstream: Array<string> = []
    for (const [inputName, spec] of Object.entries(stage.inputs)) {
      checkInput(workflow, byName, stage, inputName, spec)
      if ((spec.kind === "output" || spec.kind === "outputMap") && !upstream.includes(spec.stage)) {
        upstream.push(spec.stage)
      }
    }
    if (stage.forEach !== undefined && workflow.sources[stage.forEach] === undefined) {
      if (!byName.has(stage.forEach)) {
        throw new InvalidStage({
          stage: stage.name,
          reason: `forEach names "${stage.forEach}", which is neither a source nor a stage`
        })
      }
      if (!upstream.includes(stage.forEach)) upstream.push(stage.forEach)
    }
    upstreamOf.set(stage.name, upstream)
  }

  const order = topologicalOrder(workflow.stages.map((s) => s.name), upstreamOf)
  const nodes = new Map<string, DagNode>()
  for (const name of order) {
    const stage = byName.get(name)!
    nodes.set(name, { stage, itemSource: resolveItemSource(workflow, byName, stage, []), upstream: upstreamOf.get(name)! })
  }
  for (const name of order) checkItemMatching(nodes, nodes.get(name)!)
  return { workflow, nodes, order }
}

function checkInput(
  workflow: Workflow,
  byName: ReadonlyMap<string, Stage>,
  stage: Stage,
  inputName: string,
  spec: InputSpec
): void {
  // The run options name the artifact, so the plan checks it, not the DAG.
  if (spec.kind === "artifact") return
  if (spec.kind === "source" || spec.kind === "sourcePick") {
    if (workflow.sources[spec.source] === undefined) {
      throw new MissingProducer({
        stage: stage.name,
        input: inputName,
        wanted: inputTarget(spec),
        known: Object.keys(workflow.sources).map((s) => `source "${s}"`)
      })
    }
    return
  }
  const upstream = byName.get(spec.stage)
  if (upstream === undefined || upstream.outputs[spec.port] === undefined) {
    const known = [...byName.values()].flatMap((s) => Object.keys(s.outputs).map((p) => `${s.name}.${p}`))
    throw new MissingProducer({ stage: stage.name, input: inputName, wanted: inputTarget(spec), known })
  }
}

/** Find the root source of a per-item stage by following forEach through per-item stages. */
function resolveItemSource(
  workflow: Workflow,
  byName: ReadonlyMap<string, Stage>,
  stage: Stage,
  seen: ReadonlyArray<string>
): string | null {
  if (stage.forEach === undefined) return null
  if (workflow.sources[stage.forEach] !== undefined) return stage.forEach
  const upstream = byName.get(stage.forEach)!
  if (seen.includes(upstream.name)) throw new DagCycle({ stages: [...seen, upstream.name] })
  const root = resolveItemSource(workflow, byName, upstream, [...seen, stage.name])
  if (root === null) {
    throw new InvalidStage({
      stage: stage.name,
      reason: `forEach names stage "${upstream.name}", which is a whole stage; name a source or a per-item stage`
    })
  }
  return root
}

/** `output` of a per-item upstream needs the same items here; `outputMap` needs a per-item upstream. */
function checkItemMatching(nodes: ReadonlyMap<string, DagNode>, node: DagNode): void {
  for (const [inputName, spec] of Object.entries(node.stage.inputs)) {
    if (spec.kind !== "output" && spec.kind !== "outputMap") continue
    const upstream = nodes.get(spec.stage)!
    if (spec.kind === "outputMap" && upstream.itemSource === null) {
      throw new InvalidStage({
        stage: node.stage.name,
        reason: `input "${inputName}" uses outputMap on whole stage "${spec.stage}"; use output() instead`
      })
    }
    if (spec.kind === "outputMap" && spec.itemsFrom !== undefined) {
      const listing = node.stage.inputs[spec.itemsFrom.input]
      const listingStage = listing?.kind === "output" ? nodes.get(listing.stage) : undefined
      if (listingStage === undefined || listingStage.itemSource !== null) {
        throw new InvalidStage({
          stage: node.stage.name,
          reason: `input "${inputName}" takes its items from "${spec.itemsFrom.input}", which must be an output() ` +
            "input of a whole stage"
        })
      }
    }
    if (spec.kind === "output" && upstream.itemSource !== null && upstream.itemSource !== node.itemSource) {
      throw new InvalidStage({
        stage: node.stage.name,
        reason: `input "${inputName}" reads per-item stage "${spec.stage}" but this stage does not map over ` +
          `source "${upstream.itemSource}"; use outputMap() to read every item's artifact`
      })
    }
  }
}

/** Kahn's algorithm; ties keep declaration order so the plan is deterministic. */
function topologicalOrder(
  names: ReadonlyArray<string>,
  upstreamOf: ReadonlyMap<string, ReadonlyArray<string>>
): Array<string> {
  const done = new Set<string>()
  const order: Array<string> = []
  while (order.length < names.length) {
    const next = names.find((n) => !done.has(n) && upstreamOf.get(n)!.every((u) => done.has(u)))
    if (next === undefined) {
      throw new DagCycle({ stages: findCycle(names.filter((n) => !done.has(n)), upstreamOf) })
    }
    done.add(next)
    order.push(next)
  }
  return order
}

function findCycle(remaining: ReadonlyArray<string>, upstreamOf: ReadonlyMap<string, ReadonlyArray<string>>): Array<string> {
  const path: Array<string> = []
  let current = remaining[0]!
  while (!path.includes(current)) {
    path.push(current)
    current = upstreamOf.get(current)!.find((u) => remaining.includes(u))!
  }
  return [...path.slice(path.indexOf(current)), current].reverse()
}

/** Stages to run for the requested targets: the targets and everything upstream of them. */
export function selectStages(dag: Dag, targets: ReadonlyArray<string>): ReadonlyArray<string> {
  if (targets.length === 0) return dag.order
  const wanted = new Set<string>()
  const visit = (name: string) => {
    if (wanted.has(name)) return
    const node = dag.nodes.get(name)
    if (node === undefined) throw new UnknownName({ kind: "stage", name, known: dag.order })
    wanted.add(name)
    node.upstream.forEach(visit)
  }
  targets.forEach(visit)
  return dag.order.filter((n) => wanted.has(n))
}

/** Stages downstream of `name`, including it. */
export function downstreamOf(dag: Dag, name: string): ReadonlySet<string> {
  const result = new Set<string>([name])
  for (const stageName of dag.order) {
    if (dag.nodes.get(stageName)!.upstream.some((u) => result.has(u))) result.add(stageName)
  }
  return result
}

/** Render the DAG as Mermaid flowchart text. */
export function toMermaid(dag: Dag): string {
  const lines = ["flowchart TD"]
  for (const source of Object.keys(dag.workflow.sources)) lines.push(`  src_${source}[(${source})]`)
  for (const name of artifactNames(dag)) lines.push(`  art_${name}[/${name}/]`)
  for (const name of dag.order) {
    const node = dag.nodes.get(name)!
    lines.push(node.itemSource === null ? `  ${name}[${name}]` : `  ${name}[[${name} per ${node.itemSource}]]`)
  }
  for (const [from, to] of edges(dag)) lines.push(`  ${from.replace(":", "_")} --> ${to}`)
  return lines.join("\n") + "\n"
}

/** Render the DAG as Graphviz DOT text. */
export function toDot(dag: Dag): string {
  const lines = [`digraph "${dag.workflow.name}" {`, "  rankdir=TB;"]
  for (const source of Object.keys(dag.workflow.sources)) lines.push(`  "src:${source}" [shape=cylinder,label="${source}"];`)
  for (const name of artifactNames(dag)) lines.push(`  "art:${name}" [shape=parallelogram,label="${name}"];`)
  for (const name of dag.order) {
    const node = dag.nodes.get(name)!
    const shape = node.itemSource === null ? "box" : "box3d"
    lines.push(`  "${name}" [shape=${shape}];`)
  }
  for (const [from, to] of edges(dag)) lines.push(`  "${from.replace(/^(src|art)_/, "$1:")}" -> "${to}";`)
  lines.push("}")
  return lines.join("\n") + "\n"
}

/** Names of the run-time artifacts that the stages read, in first-use order. */
function artifactNames(dag: Dag): Array<string> {
  const names = new Set<string>()
  for (const name of dag.order) {
    for (const spec of Object.values(dag.nodes.get(name)!.stage.inputs)) if (spec.kind === "artifact") names.add(spec.name)
  }
  return [...names]
}

function edges(dag: Dag): Array<[string, string]> {
  const result: Array<[string, string]> = []
  for (const name of dag.order) {
    const node = dag.nodes.get(name)!
    const sources = new Set<string>()
    const artifacts = new Set<string>()
    for (const spec of Object.values(node.stage.inputs)) {
      if (spec.kind === "source" || spec.kind === "sourcePick") sources.add(spec.source)
      if (spec.kind === "artifact") artifacts.add(spec.name)
    }
    for (const artifact of artifacts) result.push([`art_${artifact}`, name])
    if (node.stage.forEach !== undefined && dag.workflow.sources[node.stage.forEach] !== undefined) {
      sources.add(node.stage.forEach)
    }
    for (const source of sources) result.push([`src_${source}`, name])
    for (const upstream of node.upstream) result.push([upstream, name])
  }
  return result
}
