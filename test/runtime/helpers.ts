/**
 * Shared test helpers for the runtime: temp folders, tiny inline stages and workflows, and
 * a way to run the CLI as a child process.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Schema } from "effect"
import * as Stage from "../../src/runtime/stage.ts"
import * as Workflow from "../../src/runtime/workflow.ts"

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..")

export const tempDir = (prefix: string) => mkdtempSync(join(tmpdir(), `octflow-${prefix}-`))

const noParams = Schema.Struct({})

/** Declare a stage that is never run, for DAG and params tests. */
export function declaredStage(
  name: string,
  inputs: Record<string, Stage.InputSpec>,
  options: { forEach?: string; params?: Schema.Codec<any, any, never, never> } = {}
): Stage.Stage {
  return Stage.make({
    name,
    module: import.meta.url,
    params: options.params ?? noParams,
    forEach: options.forEach,
    inputs,
    outputs: { out: Stage.file(".txt") },
    run: () => Effect.void
  }) as Stage.Stage
}

export const emptySource: Stage.Source = { name: "data", discover: () => Effect.succeed([]) }

export const workflowOf = (stages: ReadonlyArray<Stage.Stage>, profiles?: Workflow.WorkflowConfig["profiles"]) =>
  Workflow.make({ name: "test", sources: { data: emptySource }, stages, profiles, seed: 1 })

export interface CliResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Start the CLI as a child process, as `npm run workflow` does, through bin/octflow.mjs and
 * the bundle; `onStderr` receives stderr as it arrives.
 */
export function startCli(args: ReadonlyArray<string>, env: Record<string, string> = {}, onStderr?: (text: string, child: ChildProcess) => void): {
  child: ChildProcess
  done: Promise<CliResult>
} {
  const child = spawn(process.execPath, [join(repoRoot, "bin/octflow.mjs"), ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString()
    onStderr?.(stderr, child)
  })
  const done = new Promise<CliResult>((resolvePromise) => {
    child.on("close", (code, signal) => resolvePromise({ code, signal, stdout, stderr }))
  })
  return { child, done }
}

export const runCli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) => startCli(args, env).done
