import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { codeIdentity, type CodeIdentity } from "../../src/runtime/codehash.ts"
import { racyMs } from "../../src/runtime/file-identity.mjs"
import { deriveSeed, fingerprintOf, type FingerprintMaterial } from "../../src/runtime/fingerprint.ts"
import { canonicalJson } from "../../src/runtime/params.ts"
import type { Json } from "../../src/runtime/stage.ts"
import { repoRoot, tempDir } from "./helpers.ts"

const material: FingerprintMaterial = {
  stage: "scale",
  item: "item-0001",
  inputs: { numbers: { key: "item-0001", files: ["ab".repeat(32)], meta: { name: "item-0001.txt" } } },
  params: { factor: 2 },
  code: "cd".repeat(32),
  environment: { backend: "cpu" },
  seed: 7
}

describe("fingerprintOf", () => {
  it("matches the golden value", () => {
    // Golden value from Python: sha256(json.dumps({"v": 1, **material}, sort_keys=True,
    // separators=(",", ":"))). A change here invalidates every cached result everywhere.
    expect(fingerprintOf(material)).toBe("01f8a5b35acf4907831973c0ba244dd2b460d478111d51e428f040e3fbbc8cae")
  })

  it("ignores key order", () => {
    const reordered = { seed: 7, environment: { backend: "cpu" }, code: material.code, params: { factor: 2 }, inputs: material.inputs, item: "item-0001", stage: "scale" }
    expect(fingerprintOf(reordered)).toBe(fingerprintOf(material))
  })

  it("hashes the canonical material", () => {
    const jsonObject = fc.dictionary(fc.string(), fc.jsonValue() as fc.Arbitrary<Json>)
    const materials = fc.record({
      stage: fc.string(),
      item: fc.option(fc.string(), { nil: null }),
      inputs: jsonObject,
      params: fc.oneof(jsonObject, fc.jsonValue() as fc.Arbitrary<Json>),
      code: fc.string(),
      environment: fc.dictionary(fc.string(), fc.string()),
      seed: fc.nat()
    })
    fc.assert(fc.property(materials, (random) => {
      const expected = createHash("sha256").update(canonicalJson({ v: 1, ...random })).digest("hex")
      expect(fingerprintOf(random)).toBe(expected)
    }))
  })

  it.each([
    ["params", { ...material, params: { factor: 3 } }],
    ["input hash", { ...material, inputs: { numbers: { key: "item-0001", files: ["ef".repeat(32)], meta: { name: "item-0001.txt" } } } }],
    ["code", { ...material, code: "00".repeat(32) }],
    ["environment", { ...material, environment: { backend: "wasm" } }],
    ["seed", { ...material, seed: 8 }],
    ["item", { ...material, item: "item-0002" }]
  ])("changes with %s", (_, changed) => {
    expect(fingerprintOf(changed)).not.toBe(fingerprintOf(material))
  })
})

describe("deriveSeed", () => {
  it("matches the golden value", () => {
    // Python: struct.unpack(">I", hashlib.sha256(b"7/train/").digest()[:4])[0]
    expect(deriveSeed(7, "train", null)).toBe(2131741562)
  })

  it("differs per item", () => {
    expect(deriveSeed(7, "train", "a")).not.toBe(deriveSeed(7, "train", "b"))
  })
})

function copyModules(): string {
  const dir = tempDir("code")
  mkdirSync(join(dir, "lib"))
  writeFileSync(join(dir, "stage.ts"), `import { helper } from "./lib/helper.ts"\nexport const run = () => helper(2)\n`)
  writeFileSync(join(dir, "lib/helper.ts"), `// Doubles a number.\nexport function helper(x: number) {\n  return x * 2\n}\n`)
  return dir
}

describe("codeIdentity", () => {
  it("ignores comments and formatting", () => {
    const dir = copyModules()
    const before = codeIdentity(join(dir, "stage.ts"))
    writeFileSync(join(dir, "lib/helper.ts"), `/* Twice x. */ export function helper(x: number) { return x * 2 }  // same\n`)
    expect(codeIdentity(join(dir, "stage.ts")).hash).toBe(before.hash)
  })

  it("changes with an imported module's code", () => {
    const dir = copyModules()
    const before = codeIdentity(join(dir, "stage.ts"))
    writeFileSync(join(dir, "lib/helper.ts"), `export function helper(x: number) {\n  return x * 3\n}\n`)
    const after = codeIdentity(join(dir, "stage.ts"))
    expect(after.hash).not.toBe(before.hash)
    expect(after.modules["lib/helper.ts"]).not.toBe(before.modules["lib/helper.ts"])
    expect(after.modules["stage.ts"]).toBe(before.modules["stage.ts"])
  })

  it("does not depend on the folder", () => {
    const first = copyModules()
    const second = tempDir("code2")
    mkdirSync(join(second, "lib"))
    copyFileSync(join(first, "stage.ts"), join(second, "stage.ts"))
    copyFileSync(join(first, "lib/helper.ts"), join(second, "lib/helper.ts"))
    expect(codeIdentity(join(second, "stage.ts")).hash).toBe(codeIdentity(join(first, "stage.ts")).hash)
  })

  it("leaves out runtime modules", () => {
    const identity = codeIdentity(join(repoRoot, "workflows/synthetic/scale.ts"))
    expect(Object.keys(identity.modules).sort()).toEqual(["numbers.ts", "scale.ts"])
  })

  it("follows worker module URLs", () => {
    const dir = copyModules()
    writeFileSync(
      join(dir, "lib/helper.ts"),
      `import { Worker } from "node:worker_threads"\n` +
        `const data = new URL("../data/", import.meta.url)\n` +
        `export const helper = () => new Worker(new URL("./worker.ts", import.meta.url), { workerData: data.href })\n`
    )
    writeFileSync(join(dir, "lib/worker.ts"), `export const work = (x: number) => x * 2\n`)
    const before = codeIdentity(join(dir, "stage.ts"))
    expect(Object.keys(before.modules).sort()).toEqual(["lib/helper.ts", "lib/worker.ts", "stage.ts"])
    writeFileSync(join(dir, "lib/worker.ts"), `export const work = (x: number) => x * 3\n`)
    expect(codeIdentity(join(dir, "stage.ts")).hash).not.toBe(before.hash)
  })

  it("reads the module text, not a cache", () => {
    const dir = copyModules()
    const path = join(dir, "stage.ts")
    const before = codeIdentity(path).hash
    writeFileSync(path, readFileSync(path, "utf8").replace("helper(2)", "helper(4)"))
    expect(codeIdentity(path).hash).not.toBe(before)
  })
})

/** Compute a code identity in a new process, which starts with an empty in-memory cache. */
function identityInNewProcess(path: string): CodeIdentity {
  const script = `
    import { codeIdentity, saveCodeHashCache } from ${JSON.stringify(join(repoRoot, "src/runtime/codehash.ts"))}
    const identity = codeIdentity(${JSON.stringify(path)})
    saveCodeHashCache()
    process.stdout.write(JSON.stringify(identity))`
  const result = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot, encoding: "utf8" })
  expect(result.stderr).toBe("")
  return JSON.parse(result.stdout) as CodeIdentity
}

describe("code hash cache", () => {
  const cacheFile = join(repoRoot, "dist/code-hashes.json")
  const cachedModules = () => (JSON.parse(readFileSync(cacheFile, "utf8")) as { modules: Record<string, { hash: string }> }).modules

  it("keeps hashes across processes", async () => {
    const dir = copyModules()
    // A file changed within the last racyMs is never cached.
    await new Promise((resolve) => setTimeout(resolve, racyMs + 100))
    const identity = identityInNewProcess(join(dir, "stage.ts"))
    expect(cachedModules()[join(dir, "lib/helper.ts")]?.hash).toBe(identity.modules["lib/helper.ts"])
  })

  it("hashes a file again after an edit that keeps its mtime", async () => {
    const dir = copyModules()
    const helper = join(dir, "lib/helper.ts")
    // Whole seconds, which utimes can set again exactly.
    const mtime = Math.floor(Date.now() / 1000) - 10
    utimesSync(helper, mtime, mtime)
    await new Promise((resolve) => setTimeout(resolve, racyMs + 100))
    const before = identityInNewProcess(join(dir, "stage.ts"))
    expect(cachedModules()[helper]).toBeDefined()

    // Same size, same modification time: only the change time and the bytes differ.
    writeFileSync(helper, readFileSync(helper, "utf8").replace("x * 2", "x * 3"))
    utimesSync(helper, mtime, mtime)
    expect(statSync(helper, { bigint: true }).mtimeNs).toBe(BigInt(mtime) * 1_000_000_000n)
    // Past racyMs, only the change time in the cache key can tell that the file changed.
    await new Promise((resolve) => setTimeout(resolve, racyMs + 100))
    const after = identityInNewProcess(join(dir, "stage.ts"))
    expect(after.modules["lib/helper.ts"]).not.toBe(before.modules["lib/helper.ts"])
    expect(after.modules["stage.ts"]).toBe(before.modules["stage.ts"])
  })

  it("does not cache a file written just now", () => {
    const dir = copyModules()
    identityInNewProcess(join(dir, "stage.ts"))
    expect(existsSync(cacheFile) ? cachedModules()[join(dir, "lib/helper.ts")] : undefined).toBeUndefined()
  })
})
