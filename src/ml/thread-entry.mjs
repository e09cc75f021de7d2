// Worker-thread bootstrap for the training replicas and inference workers when they run
// from source; threads.ts starts the bundled file otherwise. It registers the tsx loader in
// this thread, because Node 20 applies no `--import` to a worker's entry module, and then
// loads the TypeScript module named by workerData.module (a file URL).
import { workerData } from "node:worker_threads"
import { register } from "tsx/esm/api"

register()
await import(workerData.module)
