/**
 * Errors the RETOUCH stages raise for one item; each names the case, the value and the
 * param that fixes it.
 */
import * as Data from "effect/Data"

export class CaseVendorError extends Data.TaggedError("CaseVendorError")<{
  readonly item: string
  readonly folder: string
  readonly value: string | null
}> {
  override get message(): string {
    const problem =
      this.value === null
        ? `its vendor folder "${this.folder}" is not Cirrus, Spectralis or Topcon`
        : `the vendor override "${this.value}" is not Cirrus, Spectralis or Topcon`
    return (
      `case ${this.item}: ${problem}; set -p 'preprocess.vendor.${this.item}="Cirrus"' (or Spectralis, Topcon), ` +
      `or -p 'preprocess.vendor.${this.folder}="Cirrus"' for every case of that folder`
    )
  }
}

export class CaseGeometryError extends Data.TaggedError("CaseGeometryError")<{
  readonly item: string
  readonly path: string
  readonly vendor: string
  readonly actual: string
  readonly expected: string
}> {
  override get message(): string {
    return (
      `case ${this.item} (${this.path}): ${this.actual} does not fit ${this.vendor} (${this.expected}); ` +
      `set the right vendor with -p 'preprocess.vendor.${this.item}="..."', ` +
      `or accept the volume as it is with -p preprocess.strictGeometry=false`
    )
  }
}

export class MissingReferenceVolumeError extends Data.TaggedError("MissingReferenceVolumeError")<{
  readonly item: string
  readonly reference: string
  readonly reason: string
}> {
  override get message(): string {
    return (
      `case ${this.item} needs histogram matching to a Spectralis volume, but the reference ${this.reference} ${this.reason}; ` +
      `name a Spectralis case with -p 'preprocess.reference="Spectralis/<case>"', or add one to the dataset`
    )
  }
}

export class EmptySplitError extends Data.TaggedError("EmptySplitError")<{
  readonly side: string
  readonly cases: number
}> {
  override get message(): string {
    return (
      `the split left no ${this.side} case (${this.cases} labelled cases in all); ` +
      `add labelled cases with --data, or change -p split.testFraction`
    )
  }
}

export class CaseDiscoveryError extends Data.TaggedError("CaseDiscoveryError")<{
  readonly item: string
  readonly tag: string
  readonly reason: string
}> {
  override get message(): string {
    return `case ${this.item} cannot be read (${this.tag}): ${this.reason}`
  }
}

export class ValidationFoldError extends Data.TaggedError("ValidationFoldError")<{
  readonly fold: number
  readonly folds: number
  /** Folds that contain training cases. */
  readonly usable: readonly number[]
}> {
  override get message(): string {
    return (
      `train.validationFold is ${this.fold}, but of the split's ${this.folds} folds only ${this.usable.join(", ")} ` +
      `contain training cases; set -p train.validationFold to one of them, or change -p split.folds`
    )
  }
}

export class MixedSchemeError extends Data.TaggedError("MixedSchemeError")<{
  /** Training case keys by label scheme, one entry per scheme found. */
  readonly casesByScheme: Readonly<Record<string, readonly string[]>>
}> {
  override get message(): string {
    const groups = Object.entries(this.casesByScheme).map(([scheme, keys]) => `${scheme}: ${keys.join(", ")}`)
    return (
      `the training cases mix label schemes (${groups.join("; ")}); one model has one set of classes, ` +
      `so train on cases of one scheme (RETOUCH 0..3 or binary fluid 0/1) and leave the others out with --exclude '<case>'`
    )
  }
}
