/**
 * Worker-thread entry that runs stage tasks. The main thread sends one task at a time: the
 * stage module URL and name, the encoded params and the resolved context. The worker loads
 * the module, finds the exported stage by name, decodes the params with the stage's Schema,
 * runs it and forwards progress, log lines and emitted rows as messages.
 */
import { parentPort } from "node:worker_threads"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import { bundle, runnableUrl } from "./bundle.ts"
import { isStage, type Json, type LogLevel, type Stage } from "./stage.ts"

/** Context fields that cross the thread boundary; all are structured-clone safe. */
export interface TaskContext {
  readonly stage: string
  readonly params: Json
  readonly inputs: Record<string, unknown>
  readonly item: string | null
  readonly outputs: Record<string, string>
  readonly seed: number
  readonly scratchDir: string
  readonly environment: Record<string, string>
}

export interface TaskRequest {
  readonly type: "task"
  readonly id: number
  readonly moduleUrl: string
  readonly context: TaskContext
}

export type TaskMessage =
  | { readonly type: "progress"; readonly id: number; readonly done: number; readonly total: number; readonly info?: string }
  | { readonly type: "log"; readonly id: number; readonly level: LogLevel; readonly message: string; readonly annotations?: Record<string, Json> }
  | { readonly type: "emit"; readonly id: number; readonly table: string; readonly rows: ReadonlyArray<unknown> }
  | { readonly type: "done"; readonly id: number }
  | { readonly type: "failed"; readonly id: number; readonly tag: string; readonly message: string }

const stageCache = new Map<string, Stage>()

let typeScriptLoader: Promise<void> | null = null

/**
 * Import a stage module by its source URL: its compiled file when the CLI bundle contains
 * it. A TypeScript module outside the bundle needs tsx's loader, which a bundled worker
 * registers on first use; a worker started from source has it already.
 */
async function importModule(sourceUrl: string): Promise<unknown> {
  const url = runnableUrl(sourceUrl)
  if (bundle !== null && /\.[cm]?ts$/.test(url)) {
    typeScriptLoader ??= import("tsx/esm/api").then((api) => api.register()).then(() => undefined)
    await typeScriptLoader
  }
  return import(url)
}

async function loadStage(moduleUrl: string, name: string): Promise<Stage> {
  const key = `${moduleUrl}#${name}`
  const cached = stageCache.get(key)
  if (cached !== undefined) return cached
  const module = (await importModule(moduleUrl)) as Record<string, unknown>
  const stage = Object.values(module).find((value): value is Stage => isStage(value) && value.name === name)
  if (stage === undefined) throw new Error(`Module ${moduleUrl} exports no stage named "${name}"`)
  stageCache.set(key, stage)
  return stage
}

/** Tag and message of whatever a stage failed with. */
export function describeFailure(error: unknown): { tag: string; message: string } {
  if (typeof error === "object" && error !== null) {
    const tag = "_tag" in error && typeof error._tag === "string" ? error._tag : error.constructor?.name ?? "Error"
    const message = "message" in error && typeof error.message === "string" && error.message !== "" ? error.message : String(error)
    return { tag, message }
  }
  return { tag: "Error", message: String(error) }
}

/** Run one task with `post` receiving every message; shared by workers and in-thread execution. */
export async function runTask(request: TaskRequest, post: (message: TaskMessage) => void): Promise<void> {
  const { id, context } = request
  try {
    const stage = await loadStage(request.moduleUrl, context.stage)
    const params = Schema.decodeUnknownSync(stage.params)(context.params)
    const ctx = {
      ...context,
      params,
      progress: (done: number, total: number, info?: string) => post({ type: "progress", id, done, total, info }),
      log: (level: LogLevel, message: string, annotations?: Record<string, Json>) =>
        post({ type: "log", id, level, message, annotations }),
      emit: (table: string, rows: ReadonlyArray<unknown>) => post({ type: "emit", id, table, rows: [...rows] })
    }
    const exit = await Effect.runPromiseExit((stage.run as (c: unknown) => Effect.Effect<void, unknown>)(ctx))
    if (Exit.isSuccess(exit)) {
      post({ type: "done", id })
      return
    }
    const failure = Cause.findErrorOption(exit.cause)
    const error = failure._tag === "Some" ? failure.value : Cause.squash(exit.cause)
    post({ type: "failed", id, ...describeFailure(error) })
  } catch (error) {
    post({ type: "failed", id, ...describeFailure(error) })
  }
}

if (parentPort !== null) {
  const port = parentPort
  port.on("message", (request: TaskRequest) => {
    void runTask(request, (message) => port.postMessage(message))
  })
}
