/**
 * Workflow registry: workflow name -> module file under workflows/. Modules load lazily,
 * so only the chosen workflow's stages are imported; in the CLI bundle each workflow is an
 * entry point of its own. Add a workflow with one line here.
 */
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { runnableUrl } from "../runtime/bundle.ts"
import { UnknownName } from "../runtime/errors.ts"
import type { Workflow } from "../runtime/workflow.ts"

const workflowFiles: Readonly<Record<string, string>> = {
  predict: "predict.ts",
  retouch: "retouch.ts",
  synthetic: "synthetic.ts"
}

export const defaultWorkflow = "retouch"

export const workflowNames = Object.keys(workflowFiles)

/** Import the named workflow's module and return its exported `workflow`. */
export async function loadWorkflow(name: string): Promise<Workflow> {
  const file = workflowFiles[name]
  const url = file === undefined ? undefined : new URL(`../../workflows/${file}`, import.meta.url)
  if (url === undefined || !existsSync(fileURLToPath(url))) {
    const known = workflowNames.filter((n) => existsSync(fileURLToPath(new URL(`../../workflows/${workflowFiles[n]}`, import.meta.url))))
    throw new UnknownName({ kind: "workflow", name, known })
  }
  const module = (await import(runnableUrl(url.href))) as { workflow?: Workflow }
  if (module.workflow?._tag !== "Workflow") {
    throw new TypeError(`${fileURLToPath(url)} must export a workflow made with Workflow.make as \`workflow\``)
  }
  return module.workflow
}
