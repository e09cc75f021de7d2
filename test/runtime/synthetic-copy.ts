/**
 * Copies the synthetic workflow into a temp folder so tests can edit its stage modules.
 * Imports of the runtime are rewritten to absolute paths, and node_modules is linked so
 * the copy resolves `effect`.
 */
import { cpSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
import type { Workflow } from "../../src/runtime/workflow.ts"
import { repoRoot, tempDir } from "./helpers.ts"

export interface SyntheticCopy {
  readonly root: string
  readonly stageFile: (name: string) => string
  readonly load: () => Promise<{ workflow: Workflow; writeSyntheticData: (dir: string, count: number) => Promise<void> }>
}

export function copySynthetic(): SyntheticCopy {
  const root = tempDir("synthetic")
  symlinkSync(join(repoRoot, "node_modules"), join(root, "node_modules"))
  // Without "type": "module", tsx would load the copied .ts files as CommonJS.
  writeFileSync(join(root, "package.json"), JSON.stringify({ type: "module", private: true }))
  cpSync(join(repoRoot, "workflows/synthetic"), join(root, "workflows/synthetic"), { recursive: true })
  cpSync(join(repoRoot, "workflows/synthetic.ts"), join(root, "workflows/synthetic.ts"))
  const runtime = join(repoRoot, "src/runtime")
  const files = [join(root, "workflows/synthetic.ts"), ...readdirSync(join(root, "workflows/synthetic")).map((f) => join(root, "workflows/synthetic", f))]
  for (const file of files) {
    const text = readFileSync(file, "utf8").replace(/"(\.\.\/)+src\/runtime\//g, `"${runtime}/`)
    writeFileSync(file, text)
  }
  return {
    root,
    stageFile: (name) => join(root, "workflows/synthetic", `${name}.ts`),
    load: () => import(pathToFileURL(join(root, "workflows/synthetic.ts")).href)
  }
}
