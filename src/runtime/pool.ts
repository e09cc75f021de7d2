/**
 * A pool of worker threads that run stage tasks, at most one task per worker at a time.
 * Workers start lazily, so a run where every task is cached starts none. A worker that
 * crashes fails its task and is replaced by a fresh one for the next task.
 */
import { Worker } from "node:worker_threads"
import { runnableUrl } from "./bundle.ts"
import type { TaskMessage, TaskRequest } from "./worker.ts"

/**
 * The bundled worker module when this code is bundled. From source, worker-entry.mjs
 * registers the TypeScript loader in the new thread first, then loads worker.ts.
 */
const workerUrl = (() => {
  const url = runnableUrl(new URL("./worker.ts", import.meta.url).href)
  return url.endsWith(".ts") ? new URL("./worker-entry.mjs", import.meta.url) : new URL(url)
})()

export type TaskResult = { readonly ok: true } | { readonly ok: false; readonly tag: string; readonly message: string }

interface Job {
  readonly request: TaskRequest
  readonly onMessage: (message: TaskMessage) => void
  readonly resolve: (result: TaskResult) => void
}

interface Slot {
  worker: Worker
  job: Job | null
}

export class WorkerPool {
  private readonly slots: Array<Slot> = []
  private readonly queue: Array<Job> = []
  private closed = false

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`Worker pool size must be a positive integer, got ${size}`)
  }

  /** Queue a task; resolves when the worker reports done or failed. */
  run(request: TaskRequest, onMessage: (message: TaskMessage) => void): Promise<TaskResult> {
    return new Promise((resolve) => {
      this.queue.push({ request, onMessage, resolve })
      this.dispatch()
    })
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.all(this.slots.map((slot) => slot.worker.terminate()))
    this.slots.length = 0
  }

  private dispatch(): void {
    while (this.queue.length > 0 && !this.closed) {
      let slot = this.slots.find((s) => s.job === null)
      if (slot === undefined) {
        if (this.slots.length >= this.size) return
        slot = this.spawn()
      }
      const job = this.queue.shift()!
      slot.job = job
      slot.worker.postMessage(job.request)
    }
  }

  private spawn(): Slot {
    const worker = new Worker(workerUrl)
    const slot: Slot = { worker, job: null }
    worker.on("message", (message: TaskMessage) => {
      const job = slot.job
      if (job === null || message.id !== job.request.id) return
      if (message.type === "done" || message.type === "failed") {
        slot.job = null
        job.resolve(message.type === "done" ? { ok: true } : { ok: false, tag: message.tag, message: message.message })
        this.dispatch()
      } else {
        job.onMessage(message)
      }
    })
    const crash = (reason: string) => {
      const index = this.slots.indexOf(slot)
      if (index >= 0) this.slots.splice(index, 1)
      const job = slot.job
      slot.job = null
      job?.resolve({ ok: false, tag: "WorkerCrashed", message: `the worker thread stopped: ${reason}` })
      this.dispatch()
    }
    worker.on("error", (error: unknown) => crash(error instanceof Error ? error.message : String(error)))
    worker.on("exit", (code) => {
      if (!this.closed) crash(`exit code ${code}`)
    })
    this.slots.push(slot)
    return slot
  }
}
