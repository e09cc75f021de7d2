/**
 * Stage API: a stage is a typed value that declares its params (an Effect Schema with
 * defaults), its inputs (source items or upstream outputs), its output ports and its run
 * function. The runtime builds the DAG from these declarations, fingerprints each run and
 * caches its outputs; per-item stages (`forEach`) are fingerprinted and cached per item.
 */
import type * as Effect from "effect/Effect"
import type * as Schema from "effect/Schema"

/** JSON value, as stored in source item metadata and the database. */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/** One item discovered by a Source: its key, the files whose bytes matter, and metadata. */
export interface SourceItem {
  readonly key: string
  readonly files: ReadonlyArray<string>
  readonly meta: Json
}

/**
 * External data. `discover` lists the items; it gets `dataDir` from `--data`. Paths it returns
 * may be absolute or relative to the working directory. `roots` names the folders outside of
 * which `discover` reads nothing. When all of a run's sources name them, a rerun can be
 * checked as a no-op before the CLI loads (see rerun-stamp.mjs).
 */
export interface Source {
  readonly name: string
  readonly discover: (config: { readonly dataDir?: string }) => Effect.Effect<ReadonlyArray<SourceItem>, unknown>
  readonly roots?: (config: { readonly dataDir?: string }) => ReadonlyArray<string>
}

/** A source file as a stage receives it: its path and SHA-256 hex hash. */
export interface FileRef {
  readonly path: string
  readonly hash: string
}

/** A source item as a stage receives it. */
export interface SourceItemRef {
  readonly key: string
  readonly files: ReadonlyArray<FileRef>
  readonly meta: Json
}

/**
 * An upstream output or a run-time artifact as a stage receives it. `item` is null for a
 * whole-stage output.
 */
export interface ArtifactRef {
  readonly item: string | null
  readonly path: string
  readonly hash: string
}

/** Input that reads source items: one item in a stage mapped over that source, else all. */
export interface SourceInput {
  readonly kind: "source"
  readonly source: string
}

/** Input that reads one item of a source, chosen at plan time from the params. */
export interface SourcePickInput {
  readonly kind: "sourcePick"
  readonly source: string
  readonly pick: (params: any, items: ReadonlyArray<SourceItem>) => string
}

/**
 * Input that reads one upstream output: the matching item's artifact when both stages map
 * over the same items, or the artifact of a whole upstream stage.
 */
export interface OutputInput {
  readonly kind: "output"
  readonly stage: string
  readonly port: string
}

/** Input that reads every item's artifact of a per-item upstream stage, keyed by item. */
export interface OutputMapInput {
  readonly kind: "outputMap"
  readonly stage: string
  readonly port: string
  /** Restricts the map to the items that another input's file names; see `outputMap`. */
  readonly itemsFrom?: ItemSelection
}

/**
 * Items of an `outputMap` chosen from the text of a file that another input of the same
 * stage reads, an `output` of a whole stage (train picks its cases from the split). Only the
 * chosen items join the fingerprint and lineage, so a change to another item reruns nothing.
 */
export interface ItemSelection {
  /** Name of the stage's `output` input whose file lists the items. */
  readonly input: string
  /** Returns the item keys to read, from that file's text. */
  readonly select: (text: string) => ReadonlyArray<string>
}

/**
 * Input that reads one stored artifact chosen when the run starts, not produced in this
 * run: the runner looks `name` up in `RunOptions.artifacts` (name -> content hash). When
 * `producedBy` is given, the artifact must be an output of one of those "stage.port"s.
 */
export interface ArtifactInput {
  readonly kind: "artifact"
  readonly name: string
  readonly producedBy?: ReadonlyArray<string>
}

export type InputSpec = SourceInput | SourcePickInput | OutputInput | OutputMapInput | ArtifactInput

/** An output port: one file with an extension such as ".mha", or one directory. */
export interface OutputSpec {
  readonly kind: "file" | "directory"
  /** File extension including the dot; "" for directories. */
  readonly ext: string
}

export const source = (name: string): SourceInput => ({ kind: "source", source: name })

export const sourcePick = <P>(
  name: string,
  pick: (params: P, items: ReadonlyArray<SourceItem>) => string
): SourcePickInput => ({ kind: "sourcePick", source: name, pick })

export const output = (stage: string, port: string): OutputInput => ({ kind: "output", stage, port })

export const outputMap = (stage: string, port: string, options: { readonly itemsFrom?: ItemSelection } = {}): OutputMapInput =>
  options.itemsFrom === undefined ? { kind: "outputMap", stage, port } : { kind: "outputMap", stage, port, itemsFrom: options.itemsFrom }

/** Declare an input that reads a stored artifact chosen at run time, from one of the `producedBy` "stage.port"s. */
export const artifact = (name: string, options: { readonly producedBy?: ReadonlyArray<string> } = {}): ArtifactInput => {
  if (!/^[A-Za-z][A-Za-z0-9_-]*$/.test(name)) {
    throw new TypeError(`Artifact input name ${JSON.stringify(name)} must be a plain identifier`)
  }
  return options.producedBy === undefined ? { kind: "artifact", name } : { kind: "artifact", name, producedBy: options.producedBy }
}

/** A file output port; `ext` must start with a dot, for example ".mha". */
export const file = (ext: string): OutputSpec => {
  if (!/^\.[A-Za-z0-9._-]+$/.test(ext)) {
    throw new TypeError(`Output file extension must start with a dot, like ".mha"; got ${JSON.stringify(ext)}`)
  }
  return { kind: "file", ext }
}

/** A directory output port, such as a tfjs model (model.json and weights.bin). */
export const directory = (): OutputSpec => ({ kind: "directory", ext: "" })

/** Run-context type of an input. `PerItem` is true when the stage has forEach. */
export type ResolvedInput<S extends InputSpec, PerItem extends boolean> = S extends SourceInput
  ? PerItem extends true ? SourceItemRef : ReadonlyArray<SourceItemRef>
  : S extends SourcePickInput ? SourceItemRef
  : S extends OutputInput ? ArtifactRef
  : S extends OutputMapInput ? Readonly<Record<string, ArtifactRef>>
  : S extends ArtifactInput ? ArtifactRef
  : never

/**
 * Rows a stage may emit for the runtime to insert in the commit transaction of its
 * outputs. A row without `item` gets the task's item. In `slices`, a class count is null
 * for a slice without a reference (unlabelled), never 0.
 */
export interface EmitTables {
  readonly slices: {
    readonly item?: string
    readonly image: string
    readonly vendor: string
    readonly root: string
    readonly slice: number
    readonly irf: number | null
    readonly srf: number | null
    readonly ped: number | null
    readonly fluid?: number | null
    readonly labelled: boolean
  }
  readonly metrics: {
    readonly name: string
    readonly value: number
    readonly item?: string
    readonly class?: string | null
    readonly epoch?: number | null
    readonly split?: string | null
  }
  /** Case-level split membership: side is "train", "test" or "unlabelled". */
  readonly splits: {
    readonly item?: string
    readonly vendor: string
    readonly side: string
    readonly fold?: number | null
  }
}

export type LogLevel = "debug" | "info" | "warn" | "error"

/** Structured logger; annotations are forwarded from the worker to the CLI. */
export interface StageLog {
  (level: LogLevel, message: string, annotations?: Record<string, Json>): void
}

export interface RunContext<P, I extends Record<string, InputSpec>, O extends Record<string, OutputSpec>, PerItem extends boolean> {
  readonly stage: string
  readonly params: P
  readonly inputs: { readonly [K in keyof I]: ResolvedInput<I[K], PerItem> }
  /** Item key for a per-item stage, null for a whole stage. */
  readonly item: PerItem extends true ? string : null
  /** Staging path to write each port to (a file path, or an existing empty directory). */
  readonly outputs: { readonly [K in keyof O]: string }
  /** Unsigned 32-bit seed derived from the workflow seed, the stage name and the item key. */
  readonly seed: number
  /** Directory kept across a killed run with the same fingerprint; removed after commit. */
  readonly scratchDir: string
  readonly environment: Readonly<Record<string, string>>
  readonly progress: (done: number, total: number, info?: string) => void
  readonly log: StageLog
  readonly emit: <T extends keyof EmitTables>(table: T, rows: ReadonlyArray<EmitTables[T]>) => void
}

export interface StageConfig<
  P,
  PE,
  I extends Record<string, InputSpec>,
  O extends Record<string, OutputSpec>,
  F extends string | undefined
> {
  readonly name: string
  /** `import.meta.url` of the module that defines the stage; workers load the stage from it. */
  readonly module: string
  readonly params: Schema.Codec<P, PE, never, never>
  /** Source name or per-item stage name; makes this stage per-item. */
  readonly forEach?: F
  readonly inputs: I
  readonly outputs: O
  /** Values that change results (library versions, backend); they join the fingerprint. */
  readonly environment?: () => Effect.Effect<Record<string, string>, unknown>
  readonly run: (ctx: RunContext<P, I, O, F extends string ? true : false>) => Effect.Effect<void, unknown>
}

/** A stage definition, as returned by `make`. */
export interface TypedStage<
  P,
  PE,
  I extends Record<string, InputSpec>,
  O extends Record<string, OutputSpec>,
  F extends string | undefined
> extends StageConfig<P, PE, I, O, F> {
  readonly _tag: "Stage"
}

/** Any stage, as the runtime and workflows hold it; its params and context types are erased. */
export interface Stage {
  readonly _tag: "Stage"
  readonly name: string
  readonly module: string
  readonly params: Schema.Codec<any, any, never, never>
  readonly forEach?: string | undefined
  readonly inputs: Readonly<Record<string, InputSpec>>
  readonly outputs: Readonly<Record<string, OutputSpec>>
  readonly environment?: () => Effect.Effect<Record<string, string>, unknown>
  readonly run: (ctx: any) => Effect.Effect<void, unknown>
}

const stageNamePattern = /^[a-z][a-z0-9_-]*$/

/** Define a stage. The name must be lower-case letters, digits, `_` or `-`. */
export const make = <
  P,
  PE,
  const I extends Record<string, InputSpec>,
  const O extends Record<string, OutputSpec>,
  const F extends string | undefined = undefined
>(config: StageConfig<P, PE, I, O, F>): TypedStage<P, PE, I, O, F> => {
  if (!stageNamePattern.test(config.name)) {
    throw new TypeError(`Stage name ${JSON.stringify(config.name)} must match ${stageNamePattern}`)
  }
  for (const port of Object.keys(config.outputs)) {
    if (!/^[A-Za-z][A-Za-z0-9_-]*$/.test(port)) {
      throw new TypeError(`Stage "${config.name}" output port ${JSON.stringify(port)} must be a plain identifier`)
    }
  }
  return { _tag: "Stage", ...config }
}

export const isStage = (value: unknown): value is Stage =>
  typeof value === "object" && value !== null && (value as { _tag?: unknown })._tag === "Stage"
