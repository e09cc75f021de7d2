/**
 * The CLI launcher (bin/octflow.mjs) and its bundle: rebuilds after source edits, a killed
 * rebuild, runs from other folders, and no-op reruns through the bundle. Tests that edit
 * sources work on a copy of the repository, with node_modules linked.
 */
import { spawn, spawnSync } from "node:child_process"
import { cpSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { writeSyntheticData } from "../../workflows/synthetic.ts"
import { repoRoot, tempDir } from "../runtime/helpers.ts"

/** Copy what the bundle is built from into a new folder and link node_modules. */
function copyRepository(): string {
  const root = tempDir("repo")
  for (const path of ["bin", "src", "stages", "workflows", "package.json", "tsconfig.json"]) {
    cpSync(join(repoRoot, path), join(root, path), { recursive: true })
  }
  symlinkSync(join(repoRoot, "node_modules"), join(root, "node_modules"))
  return root
}

/** Run the `octflow` entry of `root` with `args` in `cwd`. */
function octflow(root: string, args: ReadonlyArray<string>, cwd = root) {
  const result = spawnSync(process.execPath, [join(root, "bin/octflow.mjs"), ...args], { cwd, encoding: "utf8" })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

const currentBuild = (root: string): string => (JSON.parse(readFileSync(join(root, "dist/current.json"), "utf8")) as { id: string }).id

const buildFolders = (root: string): Array<string> =>
  readdirSync(join(root, "dist"), { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name)

function replaceInFile(path: string, from: string, to: string): void {
  const text = readFileSync(path, "utf8")
  if (!text.includes(from)) throw new Error(`${path} does not contain ${JSON.stringify(from)}`)
  writeFileSync(path, text.replace(from, to))
}

const dag = ["dag", "--workflow", "synthetic"]

describe("CLI bundle", () => {
  it("rebuilds after a source edit", () => {
    const root = copyRepository()
    const first = octflow(root, dag)
    expect(first.status).toBe(0)
    expect(first.stderr).toContain("building the CLI bundle, because there is no CLI bundle yet")
    expect(first.stdout).toContain("flowchart TD")

    const again = octflow(root, dag)
    expect(again.stderr).toBe("")

    replaceInFile(join(root, "src/runtime/workflow.ts"), `"flowchart TD"`, `"flowchart LR"`)
    const edited = octflow(root, dag)
    expect(edited.status).toBe(0)
    expect(edited.stderr).toContain("because src/runtime/workflow.ts changed")
    expect(edited.stdout).toContain("flowchart LR")
    expect(buildFolders(root)).toEqual([currentBuild(root)])
  })

  it("never uses a killed rebuild", async () => {
    const root = copyRepository()
    expect(octflow(root, ["--version"]).status).toBe(0)
    const before = currentBuild(root)

    replaceInFile(join(root, "src/runtime/workflow.ts"), `"flowchart TD"`, `"flowchart LR"`)
    const child = spawn(process.execPath, [join(root, "bin/octflow.mjs"), ...dag], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
    let stderr = ""
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
      if (stderr.includes("building the CLI bundle")) child.kill("SIGKILL")
    })
    const signal = await new Promise((resolve) => child.on("close", (_, closeSignal) => resolve(closeSignal)))
    expect(signal).toBe("SIGKILL")
    expect(currentBuild(root)).toBe(before)

    const after = octflow(root, dag)
    expect(after.status).toBe(0)
    expect(after.stderr).toContain("building the CLI bundle")
    expect(after.stdout).toContain("flowchart LR")
    expect(currentBuild(root)).not.toBe(before)
    expect(buildFolders(root)).toEqual([currentBuild(root)])
  })

  it("builds once for parallel runs", async () => {
    const root = copyRepository()
    expect(octflow(root, ["--version"]).status).toBe(0)
    replaceInFile(join(root, "src/runtime/workflow.ts"), `"flowchart TD"`, `"flowchart LR"`)
    const start = () => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [join(root, "bin/octflow.mjs"), ...dag], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      child.on("close", (code) => resolve({ code, stdout, stderr }))
    })
    const runs = await Promise.all([start(), start(), start()])
    for (const run of runs) {
      expect(run.code).toBe(0)
      expect(run.stdout).toContain("flowchart LR")
    }
    const builds = runs.map((run) => run.stderr).join("").match(/^octflow: building the CLI bundle/gm) ?? []
    expect(builds.length).toBe(1)
    expect(buildFolders(root)).toEqual([currentBuild(root)])
  })

  it("rebuilds a damaged build", () => {
    const root = copyRepository()
    expect(octflow(root, ["--version"]).status).toBe(0)
    const chunks = join(root, "dist", currentBuild(root), "chunks")
    const chunk = readdirSync(chunks).find((name) => name.endsWith(".js"))!
    writeFileSync(join(chunks, chunk), "")
    const truncated = octflow(root, dag)
    expect(truncated.status).toBe(0)
    expect(truncated.stderr).toContain(`${chunk} is missing or damaged`)
    expect(truncated.stdout).toContain("flowchart TD")

    writeFileSync(join(root, "dist", currentBuild(root), "manifest.json"), "{")
    const unreadable = octflow(root, dag)
    expect(unreadable.status).toBe(0)
    expect(unreadable.stderr).toContain("because there is no CLI bundle yet")
    expect(unreadable.stdout).toContain("flowchart TD")
  })

  it("reports a compile error with its file", () => {
    const root = copyRepository()
    replaceInFile(join(root, "src/runtime/workflow.ts"), `const lines = ["flowchart TD"]`, `const lines = ["flowchart TD"`)
    const result = octflow(root, dag)
    expect(result.status).toBe(2)
    expect(result.stderr).toContain("error: building the CLI bundle in")
    expect(result.stderr).toContain("src/runtime/workflow.ts")
    expect(buildFolders(root)).toEqual([])
  })

  it("runs from another folder and through a link", () => {
    const elsewhere = tempDir("elsewhere")
    const direct = octflow(repoRoot, dag, elsewhere)
    expect(direct.status).toBe(0)
    expect(direct.stdout).toContain("flowchart TD")

    // `npm link` and global installs put a symbolic link named after the bin on PATH.
    const binDir = tempDir("path")
    symlinkSync(join(repoRoot, "bin/octflow.mjs"), join(binDir, "octflow"))
    const linked = spawnSync("octflow", ["--version"], {
      cwd: elsewhere,
      encoding: "utf8",
      env: { ...process.env, PATH: `${binDir}:${process.env.PATH}` }
    })
    expect(linked.status).toBe(0)
    expect(linked.stdout).toContain("0.1.0")
  })

  it("still runs from source", () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...dag], { cwd: repoRoot, encoding: "utf8" })
    expect(result.status).toBe(0)
    expect(result.stdout).toContain("flowchart TD")
  })
})

describe("synthetic run through the bundle", () => {
  it("reruns nothing, then an edited stage", async () => {
    const root = copyRepository()
    const folder = tempDir("bundle-run")
    await writeSyntheticData(join(folder, "data"), 4)
    // Relative paths resolve against the caller's folder, not the repository.
    const full = ["full", "--workflow", "synthetic", "--workspace", "ws", "--data", "data", "--jobs", "2"]
    const first = octflow(root, full, folder)
    expect(first.status).toBe(0)
    expect(first.stdout).toMatch(/^scale\s+4\s+0\s/m)

    const rerun = octflow(root, full, folder)
    expect(rerun.status).toBe(0)
    expect(rerun.stdout).toMatch(/^scale\s+0\s+4\s/m)
    expect(rerun.stdout).toMatch(/^stats\s+0\s+4\s/m)
    expect(rerun.stdout).toMatch(/^report\s+0\s+1\s/m)
    const actions = octflow(root, ["query", "--json", "--workspace", "ws",
      "SELECT DISTINCT action FROM run_tasks WHERE run_id = (SELECT id FROM runs ORDER BY started DESC LIMIT 1)"], folder)
    expect(JSON.parse(actions.stdout)).toEqual([{ action: "cached" }])

    replaceInFile(join(root, "workflows/synthetic/scale.ts"), "v * ctx.params.factor", "v * ctx.params.factor + 1")
    const edited = octflow(root, full, folder)
    expect(edited.status).toBe(0)
    expect(edited.stderr).toContain("because workflows/synthetic/scale.ts changed")
    expect(edited.stdout).toMatch(/^scale\s+4\s+0\s/m)
    // item-0001.txt contains 1, 2 and 2, and the edited stage doubles them and adds 1.
    expect(readFileSync(join(folder, "ws/latest/scale/scaled/item-0001.txt"), "utf8")).toBe("3\n5\n5\n")
  })

  it("runs a stage module outside the bundle's entries", async () => {
    // Entry points are the modules under workflows/ and stages/. A stage defined elsewhere
    // is bundled into its workflow, and its worker loads it from source through tsx.
    const root = copyRepository()
    const scale = readFileSync(join(root, "workflows/synthetic/scale.ts"), "utf8")
    mkdirSync(join(root, "src/extra"))
    writeFileSync(join(root, "src/extra/double.ts"), scale
      .replace(`"../../src/runtime/stage.ts"`, `"../runtime/stage.ts"`)
      .replace(`"./numbers.ts"`, `"../../workflows/synthetic/numbers.ts"`)
      .replace(`name: "scale"`, `name: "double"`))
    writeFileSync(join(root, "workflows/extra.ts"), [
      `import * as Workflow from "../src/runtime/workflow.ts"`,
      `import { scale as double } from "../src/extra/double.ts"`,
      `import { numbersSource } from "./synthetic.ts"`,
      `export const workflow = Workflow.make({ name: "extra", sources: { numbers: numbersSource }, stages: [double], seed: 1 })`
    ].join("\n"))
    replaceInFile(join(root, "src/cli/registry.ts"), `synthetic: "synthetic.ts"`, `synthetic: "synthetic.ts",\n  extra: "extra.ts"`)
    const folder = tempDir("bundle-extra")
    await writeSyntheticData(join(folder, "data"), 2)

    const result = octflow(root, ["full", "--workflow", "extra", "--workspace", "ws", "--data", "data"], folder)
    expect(result.status).toBe(0)
    expect(result.stdout).toMatch(/^double\s+2\s+0\s/m)
    expect(readFileSync(join(folder, "ws/latest/double/scaled/item-0001.txt"), "utf8")).toBe("2\n4\n4\n")
  })

  it("rejects stage code edited after its build", async () => {
    const root = copyRepository()
    const folder = tempDir("bundle-outdated")
    await writeSyntheticData(join(folder, "data"), 2)
    expect(octflow(root, ["--version"]).status).toBe(0)
    const main = join(root, "dist", currentBuild(root), "src/cli/main.js")

    // Running the built entry directly skips the launcher's freshness check, as an edit
    // between that check and the code hashing would.
    replaceInFile(join(root, "workflows/synthetic/scale.ts"), "v * ctx.params.factor", "v * ctx.params.factor + 1")
    const result = spawnSync(process.execPath, [main, "full", "--workflow", "synthetic", "--workspace", "ws", "--data", "data"], {
      cwd: folder,
      encoding: "utf8"
    })
    expect(result.status).toBe(2)
    expect(result.stderr).toContain("scale.ts changed after the CLI bundle")
  })
})
