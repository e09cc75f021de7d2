/**
 * Params resolution and canonical encoding. Precedence, lowest first: the stage Schema's
 * defaults, the profile, the params file, then `-p stage.key=value`. Each value remembers
 * its origin so a Schema failure names where the bad value came from.
 */
import { readFileSync } from "node:fs"
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import { InvalidParam, InvalidParamsInput, UnknownName, UnknownParam } from "./errors.ts"
import type { Json, Stage } from "./stage.ts"
import type { ParamsLayer, Workflow } from "./workflow.ts"

/**
 * Canonical JSON: object keys sorted, no whitespace, -0 written as 0, non-finite numbers
 * rejected. Equal values always encode to equal strings, so the encoding can be hashed.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value)
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`Cannot encode non-finite number ${value} canonically`)
    return JSON.stringify(Object.is(value, -0) ? 0 : value)
  }
  if (typeof value === "bigint") return value.toString()
  // The loops below build the text without intermediate arrays of entries, because a rerun
  // encodes the inputs of thousands of tasks.
  if (Array.isArray(value)) {
    let text = "["
    for (let i = 0; i < value.length; i++) text += (i === 0 ? "" : ",") + canonicalJson(value[i])
    return text + "]"
  }
  if (typeof value === "object") {
    const record = value as Record<string, unknown>
    // The default sort orders strings by UTF-16 code units, as compareCodeUnits does.
    const keys = Object.keys(record).sort()
    let text = "{"
    for (const key of keys) {
      const member = record[key]
      if (member === undefined) continue
      text += (text.length === 1 ? "" : ",") + JSON.stringify(key) + ":" + canonicalJson(member)
    }
    return text + "}"
  }
  throw new TypeError(`Cannot encode a value of type ${typeof value} canonically`)
}

/** Order strings by UTF-16 code units, the same in every locale. */
export function compareCodeUnits(a: string, b: string): number {
  if (a < b) return -1
  if (a > b) return 1
  return 0
}

export interface ParamsRequest {
  readonly profile?: string
  readonly paramsFile?: string
  /** `-p` arguments, each `stage.key=value`; the value is parsed as JSON, else kept as a string. */
  readonly overrides?: ReadonlyArray<string>
}

export interface ResolvedParams {
  /** Decoded params per stage, as the run function receives them. */
  readonly decoded: ReadonlyMap<string, unknown>
  /** Encoded (JSON) params per stage, the form that is fingerprinted and stored. */
  readonly encoded: ReadonlyMap<string, Json>
  /** Origin of each explicitly set value, `stage.key` -> origin. */
  readonly origins: ReadonlyMap<string, string>
}

interface Layer {
  readonly origin: string
  readonly values: ParamsLayer
  /** True for `-p stage.key.entry=value`: the entry joins the record instead of replacing it. */
  readonly mergesEntries?: boolean
}

/** Parse one `-p stage.key=value` argument. */
export function parseOverride(text: string): { stage: string; key: string; value: unknown } {
  const match = /^([^.=]+)\.([^=]+)=(.*)$/s.exec(text)
  if (match === null) throw new InvalidParamsInput({ origin: `-p ${text}`, detail: "expected stage.key=value" })
  const raw = match[3]!
  let value: unknown = raw
  try {
    value = JSON.parse(raw)
  } catch {
    value = raw
  }
  return { stage: match[1]!, key: match[2]!, value }
}

function readParamsFile(path: string): ParamsLayer {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"))
  } catch (cause) {
    throw new InvalidParamsInput({ origin: `params file ${path}`, detail: String((cause as Error).message ?? cause) })
  }
  const isObject = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v)
  if (!isObject(parsed) || !Object.values(parsed as object).every(isObject)) {
    throw new InvalidParamsInput({ origin: `params file ${path}`, detail: "the top level must map stage names to objects" })
  }
  return parsed as ParamsLayer
}

function collectLayers(workflow: Workflow, request: ParamsRequest): Array<Layer> {
  const layers: Array<Layer> = []
  const profile = request.profile ?? "cpu"
  const profiles = workflow.profiles ?? {}
  if (profiles[profile] !== undefined) {
    layers.push({ origin: `profile "${profile}"`, values: profiles[profile]! })
  } else if (request.profile !== undefined) {
    throw new UnknownName({ kind: "profile", name: profile, known: Object.keys(profiles) })
  }
  if (request.paramsFile !== undefined) {
    layers.push({ origin: `params file ${request.paramsFile}`, values: readParamsFile(request.paramsFile) })
  }
  for (const text of request.overrides ?? []) {
    const { stage, key, value } = parseOverride(text)
    // `-p stage.record.entry=value` sets one entry of a record param, keeping the others.
    const dot = key.indexOf(".")
    if (dot > 0) {
      const entry = { [key.slice(dot + 1)]: value }
      layers.push({ origin: `-p ${text}`, values: { [stage]: { [key.slice(0, dot)]: entry } }, mergesEntries: true })
    } else {
      layers.push({ origin: `-p ${text}`, values: { [stage]: { [key]: value } } })
    }
  }
  return layers
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Keys a params Schema declares, read from its struct fields. */
export function declaredKeys(stage: Stage): ReadonlyArray<string> {
  const fields = (stage.params as unknown as { fields?: Record<string, unknown> }).fields
  return fields === undefined ? [] : Object.keys(fields)
}

/** Resolve every stage's params from defaults, profile, file and `-p`, in that order. */
export function resolveParams(workflow: Workflow, request: ParamsRequest): ResolvedParams {
  const layers = collectLayers(workflow, request)
  const stages = new Map(workflow.stages.map((s) => [s.name, s]))
  const merged = new Map<string, Record<string, unknown>>()
  const origins = new Map<string, string>()
  for (const layer of layers) {
    for (const [stageName, values] of Object.entries(layer.values)) {
      const stage = stages.get(stageName)
      if (stage === undefined) throw new UnknownName({ kind: "stage", name: stageName, known: [...stages.keys()] })
      const keys = declaredKeys(stage)
      for (const [key, value] of Object.entries(values)) {
        if (!keys.includes(key)) throw new UnknownParam({ stage: stageName, key, origin: layer.origin, known: keys })
        const previous = merged.get(stageName)?.[key]
        const next = layer.mergesEntries === true && isPlainObject(previous) ? { ...previous, ...(value as object) } : value
        merged.set(stageName, { ...merged.get(stageName), [key]: next })
        origins.set(`${stageName}.${key}`, layer.origin)
      }
    }
  }

  const decoded = new Map<string, unknown>()
  const encoded = new Map<string, Json>()
  for (const stage of workflow.stages) {
    const values = merged.get(stage.name) ?? {}
    const value = decodeStageParams(stage, values, origins)
    decoded.set(stage.name, value)
    encoded.set(stage.name, Schema.encodeSync(stage.params)(value) as Json)
  }
  return { decoded, encoded, origins }
}

function decodeStageParams(stage: Stage, values: Record<string, unknown>, origins: ReadonlyMap<string, string>): unknown {
  const decode = Schema.decodeUnknownExit(stage.params)
  const exit = decode(values)
  if (Exit.isSuccess(exit)) return exit.value

  // A check on the whole params (a U-Net's depth against its patch size) fails without a
  // key path. Decoding keys alone would blame one value for a combination, so the message
  // names every value that was set, with its origin.
  const detail = schemaMessage(exit.cause)
  if (!detail.includes("at [")) {
    const keys = Object.keys(values).sort()
    throw new InvalidParam({
      stage: stage.name,
      key: keys.length === 0 ? "(defaults)" : `{${keys.join(", ")}}`,
      value: values,
      origin: keys.length === 0 ? "default" : keys.map((key) => origins.get(`${stage.name}.${key}`) ?? "default").join(", "),
      detail
    })
  }

  // Find the key at fault by decoding each set value alone over the defaults.
  for (const [key, value] of Object.entries(values)) {
    const single = decode({ [key]: value })
    if (Exit.isFailure(single)) {
      throw new InvalidParam({
        stage: stage.name,
        key,
        value,
        origin: origins.get(`${stage.name}.${key}`) ?? "default",
        detail: schemaMessage(single.cause)
      })
    }
  }
  throw new InvalidParam({ stage: stage.name, key: "(defaults)", value: values, origin: "default", detail: schemaMessage(exit.cause) })
}

const firstLine = (text: string) =>
  text.split("\n").map((line) => line.trim()).filter((line) => line !== "").slice(0, 3).join("; ")

/** Returns the Schema's own message for a failed decode, without Effect's Cause wrapping. */
const schemaMessage = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return firstLine(error instanceof Error ? error.message : String(error))
}
