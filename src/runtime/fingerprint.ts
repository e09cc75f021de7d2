/**
 * Fingerprints of stage runs. A fingerprint is the SHA-256 of the canonical JSON of the
 * material below: input content hashes, the stage's declared params (encoded), its code
 * identity, its environment values and the workflow seed. It contains no absolute paths
 * and no times, so it is the same on every machine and in every workspace.
 */
import { createHash } from "node:crypto"
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

export function fingerprintOf(material: FingerprintMaterial): string {
  const text = canonicalJson({ v: fingerprintVersion, ...material })
  return createHash("sha256").update(text).digest("hex")
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
