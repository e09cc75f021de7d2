// Worker-thread bootstrap: registers the tsx loader in this thread, then loads the
// TypeScript worker. Node 20 does not apply `--import tsx` from a worker's execArgv to the
// worker's own entry module, so the loader is registered here instead.
import { register } from "tsx/esm/api"

register()
await import("./worker.ts")
