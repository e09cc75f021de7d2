/**
 * Run folders. `runs/<run-id>/<stage>` links to a view folder whose entries link to the
 * stored objects, so users find outputs by stage, port and item. `latest` points at the
 * newest run.
 */
import { createHash } from "node:crypto"
import { mkdir, readlink, rename, rm, stat, symlink } from "node:fs/promises"
import { dirname, join, relative } from "node:path"
import type { Plan, PlanTask } from "./plan.ts"
import type { Layout, StoredObject } from "./store.ts"

/** A finished task's outputs, or null when it did not finish. */
export type TaskOutputs = Readonly<Record<string, StoredObject>> | null

const safeName = (item: string) => item.replace(/[/\\]/g, "_")

/**
 * Link `runs/<run-id>/<stage>` to a view folder `views/<hash>/<port>[/<item>]` whose entries
 * link to the objects, and point `latest` at the run unless `updateLatest` is false. A view
 * is named by the hash of its entries, so a rerun with unchanged outputs reuses it and costs
 * one link per stage. Returns each stage's view folder, relative to the workspace.
 */
export async function linkRun(
  ws: Layout, runId: string, plan: Plan, tasks: ReadonlyMap<string, PlanTask>, outputsOf: (task: PlanTask) => TaskOutputs,
  options: { readonly updateLatest: boolean } = { updateLatest: true }
): Promise<Map<string, string>> {
  const runDir = join(ws.runs, runId)
  await mkdir(runDir, { recursive: true })
  const views = new Map<string, string>()
  for (const stage of plan.selected) {
    const entries: Array<{ name: string; object: string }> = []
    for (const task of tasks.values()) {
      if (task.stage !== stage) continue
      const outputs = outputsOf(task)
      if (outputs === null) continue
      for (const [port, stored] of Object.entries(outputs)) {
        const name = task.item === null ? port + stored.ext : `${port}/${safeName(task.item)}${stored.ext}`
        entries.push({ name, object: stored.path })
      }
    }
    if (entries.length === 0) continue
    const view = await ensureView(ws, entries)
    await symlink(relative(runDir, view), join(runDir, stage))
    views.set(stage, relative(ws.root, view))
  }

  if (!options.updateLatest) return views
  const latest = join(ws.root, "latest")
  const temporary = join(ws.root, `.latest-${runId}`)
  await symlink(relative(ws.root, runDir), temporary)
  await rename(temporary, latest)
  return views
}

async function ensureView(ws: Layout, entries: ReadonlyArray<{ name: string; object: string }>): Promise<string> {
  const lines = entries.map((e) => `${e.name}\u0000${e.object}\n`).sort()
  const hash = createHash("sha256").update(lines.join("")).digest("hex")
  const view = join(ws.views, hash)
  if (await stat(view).then(() => true, () => false)) return view

  // Build under a temporary name and rename, so a view folder is always complete.
  const building = join(ws.views, `.building-${hash}-${process.pid}`)
  await rm(building, { recursive: true, force: true })
  const dirs = new Set(entries.map((e) => dirname(join(building, e.name))))
  await Promise.all([...dirs].map((d) => mkdir(d, { recursive: true })))
  await Promise.all(entries.map((e) => {
    const link = join(building, e.name)
    return symlink(relative(dirname(link), join(ws.root, e.object)), link)
  }))
  try {
    await rename(building, view)
  } catch (error) {
    // Another run built the same view meanwhile; its content is identical.
    await rm(building, { recursive: true, force: true })
    if (!(await stat(view).then(() => true, () => false))) throw error
  }
  return view
}

/** Return the run directory that `latest` points at, or null. */
export async function latestRunDir(ws: Layout): Promise<string | null> {
  try {
    return join(ws.root, await readlink(join(ws.root, "latest")))
  } catch {
    return null
  }
}
