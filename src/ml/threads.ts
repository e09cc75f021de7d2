/**
 * Starts a worker thread on a TypeScript module: its compiled file when the CLI runs from
 * its bundle, else through thread-entry.mjs, which registers the tsx loader first.
 */
import { Worker } from "node:worker_threads"
import { runnableUrl } from "../runtime/bundle.ts"

export function startModuleWorker(moduleUrl: string): Worker {
  const url = runnableUrl(moduleUrl)
  if (!url.endsWith(".ts")) return new Worker(new URL(url))
  return new Worker(new URL("./thread-entry.mjs", import.meta.url), { workerData: { module: moduleUrl } })
}
