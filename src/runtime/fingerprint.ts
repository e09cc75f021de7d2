/**
 * Fingerprints of stage runs. A fingerprint is the SHA-256 of the canonical JSON of the
 * material below: input content hashes, the stage's declared params (encoded), its code
 * identity, its environment values and the workflow seed. It contains no absolute paths
 * and no times, so it is the same on every machine and in every workspace.
 */
import { createHash, hash } from "node:crypto"
import { canonicalJson } from "./params.ts"
import type { Json, SourceItemRef } from "./stage.ts"

/** Fingerprint format version; bump it when the material changes shape. */
export const fingerprintVersion = 1

export interface FingerprintMaterial {
  readonly stage: string
  readonly item: string | null
  /** Per input name: the content description of what the input resolves to. */
  readonly inputs: Readonly<Record<string, Json>>
  readonly params: Json
  readonly code: string
  readonly environment: Readonly<Record<string, string>>
  readonly seed: number
}

/** Canonical JSON of params and environment objects, which every task of a stage shares. */
const sharedJson = new WeakMap<object, string>()

function canonicalShared(value: Json | Readonly<Record<string, string>>): string {
  if (typeof value !== "object" || value === null) return canonicalJson(value)
  let text = sharedJson.get(value)
  if (text === undefined) {
    text = canonicalJson(value)
    sharedJson.set(value, text)
  }
  return text
}

/**
 * Compute the SHA-256 of `canonicalJson({ v: fingerprintVersion, ...material })`. The text
 * is joined from the members in sorted key order. The params and environment objects,
 * which all tasks of a stage share, are encoded once per object.
 * NOTE: a params or environment object changed after its first fingerprint keeps its old
 * encoding. The runtime never changes them.
 */
export function fingerprintOf(material: FingerprintMaterial): string {
  const text = `{"code":${canonicalJson(material.code)},"environment":${canonicalShared(material.environment)},` +
    `"inputs":${canonicalJson(material.inputs)},"item":${canonicalJson(material.item)},` +
    `"params":${canonicalShared(material.params)},"seed":${canonicalJson(material.seed)},` +
    `"stage":${canonicalJson(material.stage)},"v":${fingerprintVersion}}`
  return hash("sha256", text)
}

/** Content description of a source item: key, file hashes in order, and metadata. */
export const describeSourceItem = (ref: SourceItemRef): Json => ({
  key: ref.key,
  files: ref.files.map((f) => f.hash),
  meta: ref.meta
})

/**
 * Seed of one stage run: the first 4 bytes (big-endian, unsigned) of
 * SHA-256("<workflow seed>/<stage>/<item or empty>").
 */
export function deriveSeed(workflowSeed: number, stage: string, item: string | null): number {
  const digest = createHash("sha256").update(`${workflowSeed}/${stage}/${item ?? ""}`).digest()
  return digest.readUInt32BE(0)
}
