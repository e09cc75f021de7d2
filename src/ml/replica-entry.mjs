// Worker-thread bootstrap of a training replica: registers the tsx loader in this thread,
// then loads the TypeScript worker (Node 20 applies no `--import` to a worker's entry).
import { register } from "tsx/esm/api"

register()
await import("./replica-worker.ts")
