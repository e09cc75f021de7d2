/**
 * Tagged errors of the workflow runtime, one class per failure reason. Each carries the
 * stage, item, path and values involved, and builds its message from those fields, so the
 * message names what failed and what to do next.
 */
import * as Data from "effect/Data"

/** The declared inputs and outputs form a cycle. */
export class DagCycle extends Data.TaggedError("DagCycle")<{ readonly stages: ReadonlyArray<string> }> {
  override get message() {
    return `Workflow stages form a cycle: ${this.stages.join(" -> ")}. ` +
      "Remove one of these inputs so that every stage depends only on earlier ones."
  }
}

/** An input names a stage, port or source that does not exist. */
export class MissingProducer extends Data.TaggedError("MissingProducer")<{
  readonly stage: string
  readonly input: string
  readonly wanted: string
  readonly known: ReadonlyArray<string>
}> {
  override get message() {
    return `Stage "${this.stage}" input "${this.input}" reads ${this.wanted}, which no stage or source produces. ` +
      `Known: ${this.known.join(", ") || "(none)"}.`
  }
}

/** Two stages share a name, so one output would have two producers. */
export class DuplicateProducer extends Data.TaggedError("DuplicateProducer")<{
  readonly output: string
  readonly modules: ReadonlyArray<string>
}> {
  override get message() {
    return `Output ${this.output} has two producers (${this.modules.join(", ")}). Rename one of the stages.`
  }
}

/** A stage declaration is malformed (bad forEach, wrong input kind for its upstream). */
export class InvalidStage extends Data.TaggedError("InvalidStage")<{
  readonly stage: string
  readonly reason: string
}> {
  override get message() {
    return `Stage "${this.stage}" is invalid: ${this.reason}`
  }
}

/** A params value failed its stage's Schema. */
export class InvalidParam extends Data.TaggedError("InvalidParam")<{
  readonly stage: string
  readonly key: string
  readonly value: unknown
  readonly origin: string
  readonly detail: string
}> {
  override get message() {
    return `Invalid value ${JSON.stringify(this.value)} for ${this.stage}.${this.key} (from ${this.origin}): ` +
      `${this.detail.replace(/\.$/, "")}. Fix the value in ${this.origin}.`
  }
}

/** A params override names a stage or key that is not declared. */
export class UnknownParam extends Data.TaggedError("UnknownParam")<{
  readonly stage: string
  readonly key: string
  readonly origin: string
  readonly known: ReadonlyArray<string>
}> {
  override get message() {
    return `Unknown parameter ${this.stage}.${this.key} (from ${this.origin}). ` +
      `Declared: ${this.known.join(", ") || "(none)"}.`
  }
}

/** A params file or `-p` argument cannot be read or parsed. */
export class InvalidParamsInput extends Data.TaggedError("InvalidParamsInput")<{
  readonly origin: string
  readonly detail: string
}> {
  override get message() {
    return `Cannot read parameters from ${this.origin}: ${this.detail}. ` +
      "Use a JSON object { \"stage\": { \"key\": value } } or -p stage.key=value."
  }
}

/** A command-line flag has a value the command cannot use. */
export class InvalidFlag extends Data.TaggedError("InvalidFlag")<{
  readonly flag: string
  readonly value: string
  readonly expected: string
}> {
  override get message() {
    return `Invalid value ${this.value} for ${this.flag}: expected ${this.expected}.`
  }
}

/** A workflow, profile or stage named on the command line does not exist. */
export class UnknownName extends Data.TaggedError("UnknownName")<{
  readonly kind: "workflow" | "profile" | "stage" | "run"
  readonly name: string
  readonly known: ReadonlyArray<string>
}> {
  override get message() {
    return `Unknown ${this.kind} "${this.name}". Known: ${this.known.join(", ") || "(none)"}.`
  }
}

/** A Source failed to discover its items. */
export class SourceFailed extends Data.TaggedError("SourceFailed")<{
  readonly source: string
  readonly dataDir: string | undefined
  readonly cause: unknown
}> {
  override get message() {
    return `Source "${this.source}" failed to list items in ${this.dataDir ?? "(no --data given)"}: ` +
      `${describeCause(this.cause)}. Check --data.`
  }
}

/** A source item or stage input names a file that cannot be read. */
export class InputUnreadable extends Data.TaggedError("InputUnreadable")<{
  readonly path: string
  readonly cause: unknown
}> {
  override get message() {
    return `Cannot read input file ${this.path}: ${describeCause(this.cause)}. Check that it exists and is readable.`
  }
}

/** A stage finished without writing one of its declared outputs. */
export class OutputMissing extends Data.TaggedError("OutputMissing")<{
  readonly stage: string
  readonly item: string | null
  readonly port: string
  readonly path: string
  readonly expected: "file" | "directory"
}> {
  override get message() {
    return `Stage "${this.stage}"${this.item === null ? "" : ` item "${this.item}"`} did not write output ` +
      `"${this.port}" (expected a ${this.expected} at ${this.path}). The stage's run function must write every port.`
  }
}

/** One or more items of a stage failed; the other items were committed. */
export class StageFailed extends Data.TaggedError("StageFailed")<{
  readonly stage: string
  readonly failures: ReadonlyArray<{ readonly item: string | null; readonly message: string }>
}> {
  override get message() {
    const lines = this.failures.map((f) => `  ${f.item ?? "(whole stage)"}: ${f.message}`)
    return `Stage "${this.stage}" failed for ${this.failures.length} item(s):\n${lines.join("\n")}`
  }
}

/** The closing error of a run: every stage that failed and every stage skipped because of it. */
export class RunFailed extends Data.TaggedError("RunFailed")<{
  readonly failed: ReadonlyArray<StageFailed>
  readonly blocked: ReadonlyArray<string>
  /** False for commands without --exclude (predict), whose message then suggests none. */
  readonly suggestExclude?: boolean
}> {
  override get message() {
    const blocked = this.blocked.length === 0 ? "" : `\nStages with tasks not run because an upstream task failed: ${this.blocked.join(", ")}`
    const items = [...new Set(this.failed.flatMap((f) => f.failures.map((failure) => failure.item)))]
    const hint =
      this.suggestExclude === false || this.blocked.length === 0 || items.includes(null)
        ? ""
        : `\nFix the items above, or run without them: ${items.map((item) => `--exclude '${item}'`).join(" ")}`
    return this.failed.map((f) => f.message).join("\n") + blocked + hint
  }
}

/** A run's tasks finished, but linking its folder under runs/ or moving latest failed. */
export class RunLinksFailed extends Data.TaggedError("RunLinksFailed")<{
  readonly runId: string
  readonly workspace: string
  readonly cause: unknown
}> {
  override get message() {
    return `Run ${this.runId} finished its tasks, but linking its outputs under ${this.workspace}/runs failed ` +
      `(${describeCause(this.cause)}). The run is recorded as failed and its results are kept; ` +
      "fix the workspace folder and run the command again."
  }
}

/** Another live process holds the workspace lock. */
export class WorkspaceLocked extends Data.TaggedError("WorkspaceLocked")<{
  readonly workspace: string
  readonly pid: number
  readonly host: string
}> {
  override get message() {
    // A pid of 0 means the lock file is empty, as it is while a process creates the lock in place.
    const holder = this.pid === 0 ? "a process whose lock file is still empty" : `process ${this.pid} on ${this.host}`
    return `Workspace ${this.workspace} is in use by ${holder}. Wait for it to finish, or run without --no-wait to wait for it.`
  }
}

/** A read command found the workspace's database open for writing in another process. */
export class DatabaseBusy extends Data.TaggedError("DatabaseBusy")<{
  readonly path: string
}> {
  override get message() {
    return `Another process has the database ${this.path} open for writing (a workflow run, gc, or a command ` +
      "importing recorded runs). Retry when it finishes."
  }
}

/** The workspace has no database yet. */
export class NoDatabase extends Data.TaggedError("NoDatabase")<{
  readonly workspace: string
}> {
  override get message() {
    return `The workspace ${this.workspace} has no database yet. Run \`npm run workflow -- full\` first, ` +
      "or pass the workspace with --workspace."
  }
}

/** Another process, such as a read command, has the workspace's database open, and `--no-wait` was given. */
export class DatabaseInUse extends Data.TaggedError("DatabaseInUse")<{
  readonly path: string
}> {
  override get message() {
    return `Another process has the database ${this.path} open (a read command such as query or status). ` +
      "Retry when it finishes, or leave out --no-wait to wait for it."
  }
}

/** The workspace's lock path is a folder or a link, not a lock file. */
export class LockPathInvalid extends Data.TaggedError("LockPathInvalid")<{
  readonly path: string
  readonly kind: string
}> {
  override get message() {
    return `The workspace lock ${this.path} is a ${this.kind}, not a lock file. ` +
      "Make sure no octflow process uses this workspace, then remove it and run the command again."
  }
}

/** A database file cannot be opened or a query failed. */
export class DatabaseFailed extends Data.TaggedError("DatabaseFailed")<{
  readonly path: string
  readonly sql: string
  readonly cause: unknown
}> {
  override get message() {
    return `DuckDB query failed on ${this.path}: ${describeCause(this.cause)}\n  SQL: ${this.sql.slice(0, 300)}`
  }
}

/** A user query does not start with a read-only statement keyword. */
export class QueryNotReadOnly extends Data.TaggedError("QueryNotReadOnly")<{ readonly sql: string }> {
  override get message() {
    return `The query command runs only read-only statements, and this one does not start with a read-only ` +
      `keyword: ${this.sql.slice(0, 200)}. Use SELECT, WITH, DESCRIBE, SHOW or EXPLAIN.`
  }
}

/** An artifact hash or path named by the user is not recorded. */
export class ArtifactNotFound extends Data.TaggedError("ArtifactNotFound")<{
  readonly ref: string
  /** For a path: it does not exist, or it exists but is no artifact and lies in none. */
  readonly pathState?: "missing" | "unrecorded"
  /** Hashes that a prefix matches when it matches several (at most 4). */
  readonly matches?: ReadonlyArray<string>
}> {
  override get message() {
    if (this.matches !== undefined) {
      const prefixes = this.matches.map((hash) => hash.slice(0, 12)).join(", ")
      return `"${this.ref}" is the start of several artifact hashes (${prefixes}${this.matches.length > 3 ? ", ..." : ""}); give more hex digits.`
    }
    // latest/ links only the stages that the newest run selected, so `run train` leaves no latest/evaluate.
    const reason = this.pathState === "missing"
      ? " That path does not exist; latest/ holds only the stages of the newest run, and runs/<id>/ those of each run."
      : this.pathState === "unrecorded"
        ? " That path exists, but it is no recorded artifact, lies in none, and no artifact has its content."
        : ""
    return `No artifact matches "${this.ref}".${reason} Give a full hash or a prefix of at least 4 hex digits, ` +
      "or a path under objects/ or runs/ (list them with the artifacts command)."
  }
}

/** A stage reads a run-time artifact that the run options do not name. */
export class ArtifactNotGiven extends Data.TaggedError("ArtifactNotGiven")<{
  readonly stage: string
  readonly input: string
  readonly name: string
  readonly given: ReadonlyArray<string>
}> {
  override get message() {
    return `Stage "${this.stage}" input "${this.input}" reads artifact "${this.name}", but the run options name ` +
      `no such artifact (given: ${this.given.join(", ") || "(none)"}). Pass artifacts: { ${this.name}: "<hash>" }.`
  }
}

/** A run-time artifact hash is not a full lower-case SHA-256 hex digest. */
export class ArtifactHashInvalid extends Data.TaggedError("ArtifactHashInvalid")<{
  readonly name: string
  readonly hash: string
}> {
  override get message() {
    return `Artifact "${this.name}" is given as ${JSON.stringify(this.hash)}, which is not a full SHA-256 hash ` +
      "(64 lower-case hex digits). Resolve prefixes and paths to the full hash first."
  }
}

/** No stored output of any execution has the hash given for a run-time artifact. */
export class ArtifactNotRecorded extends Data.TaggedError("ArtifactNotRecorded")<{
  readonly name: string
  readonly hash: string
  readonly workspace: string
}> {
  override get message() {
    return `Artifact "${this.name}" (${this.hash}) is not a stage output recorded in workspace ${this.workspace}. ` +
      "Pick one from the artifacts command, or pass the workspace that produced it."
  }
}

/** A run-time artifact exists but was produced by a stage and port the input does not accept. */
export class ArtifactWrongProducer extends Data.TaggedError("ArtifactWrongProducer")<{
  readonly name: string
  readonly hash: string
  readonly actual: ReadonlyArray<string>
  readonly expected: ReadonlyArray<string>
}> {
  override get message() {
    return `Artifact "${this.name}" (${this.hash.slice(0, 12)}) is output ${this.actual.join(", ")}, but this input ` +
      `accepts only ${this.expected.join(" or ")}. Pass an artifact of one of those.`
  }
}

/** A run-time artifact is recorded, but its object is gone from the store (removed by gc) or damaged. */
export class ArtifactObjectMissing extends Data.TaggedError("ArtifactObjectMissing")<{
  readonly name: string
  readonly hash: string
  readonly path: string
}> {
  override get message() {
    return `Artifact "${this.name}" (${this.hash.slice(0, 12)}) is recorded, but ${this.path} is missing or has the ` +
      "wrong size (gc removes objects of old runs). Rerun the run that produced it, or pin runs you want to keep."
  }
}

/** A stage run failed inside its worker; carries the stage error's tag and message. */
export class StageRunFailed extends Data.TaggedError("StageRunFailed")<{
  readonly stage: string
  readonly item: string | null
  readonly tag: string
  readonly detail: string
}> {
  override get message() {
    return `${this.tag}: ${this.detail}`
  }
}

/** A source file changed after the CLI bundle that is running was built from it. */
export class BundleOutdated extends Data.TaggedError("BundleOutdated")<{
  readonly path: string
  readonly build: string
}> {
  override get message() {
    return `${this.path} changed after the CLI bundle in ${this.build} was built from it, so the code this process ` +
      "runs is not the code it would fingerprint. Run the command again: it rebuilds the bundle first."
  }
}

/** Render an unknown cause (Error, errno error, string) as one line. */
export function describeCause(cause: unknown): string {
  if (cause instanceof Error) return cause.message
  if (typeof cause === "object" && cause !== null && "message" in cause) return String(cause.message)
  return String(cause)
}
