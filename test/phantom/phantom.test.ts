import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync } from "node:fs"
import { mkdtemp, readFile, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { roundRobinCases, writePhantomDataset } from "../../src/phantom/dataset.ts"
import { generatePhantom, phantomGeometry } from "../../src/phantom/phantom.ts"
import { makeRandom } from "../../src/phantom/random.ts"
import { discoverDataset, loadCase, vendors } from "../../src/volume/dataset.ts"
import { validateLabels } from "../../src/volume/labels.ts"

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..")

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "octflow-phantom-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

const sha256 = async (path: string): Promise<string> => createHash("sha256").update(await readFile(path)).digest("hex")

describe("makeRandom", () => {
  it("repeats sequence for seed", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (seed) => {
        const a = makeRandom(seed)
        const b = makeRandom(seed)
        for (let i = 0; i < 20; i++) expect(a.next()).toBe(b.next())
      })
    )
  })

  it("stays in unit interval", () => {
    const random = makeRandom(7)
    for (let i = 0; i < 10000; i++) {
      const value = random.next()
      expect(value).toBeGreaterThanOrEqual(0)
      expect(value).toBeLessThan(1)
    }
  })
})

describe("generatePhantom", () => {
  it("repeats bytes for seed", () => {
    const a = generatePhantom({ vendor: "Spectralis", seed: 42, scale: 0.125 })
    const b = generatePhantom({ vendor: "Spectralis", seed: 42, scale: 0.125 })
    expect(Buffer.from(a.oct.data.buffer).equals(Buffer.from(b.oct.data.buffer))).toBe(true)
    expect(Buffer.from(a.labels.data).equals(Buffer.from(b.labels.data))).toBe(true)
  })

  it("differs between seeds", () => {
    const a = generatePhantom({ vendor: "Cirrus", seed: 1, scale: 0.0625 })
    const b = generatePhantom({ vendor: "Cirrus", seed: 2, scale: 0.0625 })
    expect(Buffer.from(a.oct.data.buffer).equals(Buffer.from(b.oct.data.buffer))).toBe(false)
  })

  for (const vendor of vendors) {
    it(`keeps ${vendor} height and type`, () => {
      const phantom = generatePhantom({ vendor, seed: 3, scale: 0.0625 })
      const geometry = phantomGeometry[vendor]
      expect(phantom.oct.dims[1]).toBe(geometry.dims[1])
      expect(phantom.oct.dims[0]).toBe(geometry.dims[0] / 16)
      expect(phantom.oct.dtype).toBe(geometry.dtype)
      expect(phantom.oct.spacingMm[0]).toBeCloseTo(geometry.spacingMm[0] * 16, 9)
    })
  }

  it("writes valid RETOUCH labels", () => {
    const phantom = generatePhantom({ vendor: "Topcon", seed: 9, scale: 0.125 })
    expect(() => validateLabels(phantom.labels, "retouch", "phantom")).not.toThrow()
  })

  it("labels fluid on every seed", () => {
    for (let seed = 0; seed < 5; seed++) {
      const phantom = generatePhantom({ vendor: "Spectralis", seed, scale: 0.25 })
      expect(phantom.labels.data.some((value) => value > 0)).toBe(true)
    }
  })

  it("draws fluid darker than retina", () => {
    const phantom = generatePhantom({ vendor: "Spectralis", seed: 5, scale: 0.25 })
    let fluidSum = 0
    let fluidCount = 0
    for (let i = 0; i < phantom.labels.data.length; i++) {
      if (phantom.labels.data[i] === 1 || phantom.labels.data[i] === 2) {
        fluidSum += phantom.oct.data[i]
        fluidCount++
      }
    }
    expect(fluidCount).toBeGreaterThan(0)
    expect(fluidSum / fluidCount).toBeLessThan(0.1 * 65535)
  })

  it("omits fluid on request", () => {
    const phantom = generatePhantom({ vendor: "Cirrus", seed: 5, scale: 0.0625, fluid: false })
    expect(phantom.blobs).toEqual([])
    expect(phantom.labels.data.every((value) => value === 0)).toBe(true)
  })

  it("rejects scale above one", () => {
    expect(() => generatePhantom({ vendor: "Cirrus", seed: 1, scale: 2 })).toThrow("(0, 1]")
  })
})

describe("writePhantomDataset", () => {
  it("writes identical files for seed", async () => {
    const cases = [{ vendor: "Topcon" as const, key: "TRAIN001" }]
    await writePhantomDataset(join(dir, "a"), { cases, seed: 11, scale: 0.0625 })
    await writePhantomDataset(join(dir, "b"), { cases, seed: 11, scale: 0.0625 })
    for (const name of ["oct.raw", "reference.raw", "oct.mhd"]) {
      expect(await sha256(join(dir, "a", "Topcon", "TRAIN001", name))).toBe(await sha256(join(dir, "b", "Topcon", "TRAIN001", name)))
    }
  })

  it("is discovered with strict geometry", async () => {
    const out = join(dir, "discover")
    await writePhantomDataset(out, { cases: roundRobinCases(3), seed: 1, scale: 0.0625 })
    const cases = await discoverDataset(out)
    expect(cases.map((c) => c.key)).toEqual(["Cirrus/TRAIN001", "Spectralis/TRAIN001", "Topcon/TRAIN001"])
    expect(cases.map((c) => c.error)).toEqual([undefined, undefined, undefined])
    const { labels } = await loadCase(cases[1])
    expect(labels?.dims).toEqual(cases[1].meta.dims)
  })

  it("spreads cases over vendors", () => {
    const cases = roundRobinCases(4)
    expect(cases).toEqual([
      { vendor: "Cirrus", key: "TRAIN001" },
      { vendor: "Spectralis", key: "TRAIN001" },
      { vendor: "Topcon", key: "TRAIN001" },
      { vendor: "Cirrus", key: "TRAIN002" }
    ])
  })
})

describe("phantom cli", () => {
  const cli = join(repoRoot, "src", "phantom", "cli.ts")
  const run = (args: readonly string[]) =>
    spawnSync(process.execPath, ["--import", "tsx", cli, ...args], { cwd: repoRoot, encoding: "utf8" })

  it("writes requested cases", { timeout: 60_000 }, () => {
    const out = join(dir, "cli")
    const result = run([out, "--cases", "2", "--scale", "0.0625", "--seed", "4"])
    expect(result.status, result.stderr).toBe(0)
    expect(existsSync(join(out, "Cirrus", "TRAIN001", "oct.raw"))).toBe(true)
    expect(existsSync(join(out, "Spectralis", "TRAIN001", "reference.mhd"))).toBe(true)
    expect(existsSync(join(out, "phantom.json"))).toBe(true)
  })

  it("rejects invalid scale", { timeout: 60_000 }, () => {
    const result = run([join(dir, "bad"), "--scale", "3"])
    expect(result.status).toBe(2)
    expect(result.stderr).toContain("--scale")
  })
})
