import { createHash } from "node:crypto"
import { existsSync } from "node:fs"
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { readBscanCase, readGrayImage, writeBscanCase } from "../../src/volume/bscans.ts"
import { summarizeSlices } from "../../src/volume/labels.ts"
import { makeVolume } from "../../src/volume/volume.ts"

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const sharedRoot = resolve(repoRoot, "../shared")
const realData = join(sharedRoot, "data", "real")
const hasRealData = existsSync(realData)
if (!hasRealData) {
  process.stderr.write(`real-data tests skipped: ${realData} not found (the original public OCT files are not present)\n`)
}

const sampleRoot = join(repoRoot, "data", "sample")
const sha256 = async (path: string): Promise<string> => createHash("sha256").update(await readFile(path)).digest("hex")

const listFiles = async (dir: string): Promise<string[]> => {
  const entries = await readdir(dir, { withFileTypes: true })
  const nested = await Promise.all(
    entries.map((entry) => (entry.isDirectory() ? listFiles(join(dir, entry.name)) : Promise.resolve([join(dir, entry.name)])))
  )
  return nested.flat()
}

describe("sample NOTICE hashes", () => {
  it("lists every shipped image with its hash", async () => {
    const notice = await readFile(join(sampleRoot, "NOTICE.md"), "utf8")
    const listed = new Map<string, string>()
    for (const line of notice.split("\n")) {
      const cells = line.split("|").map((cell) => cell.trim())
      if (cells.length > 3 && cells[1].startsWith("Spectralis/")) listed.set(cells[1], cells[2])
    }
    const shipped = (await listFiles(join(sampleRoot, "Spectralis")))
      .filter((path) => path.endsWith(".png"))
      .map((path) => relative(sampleRoot, path))
      .sort()
    expect([...listed.keys()].sort()).toEqual(shipped)
    for (const file of shipped) expect(await sha256(join(sampleRoot, file)), file).toBe(listed.get(file))
  })
})

describe.skipIf(!hasRealData)("shipped copies of real data", () => {
  it("keeps Duke images byte-identical", async () => {
    for (const name of ["Subject_01_1.png", "Subject_01_31.png", "Subject_01_61.png"]) {
      const original = join(realData, "duke_dme_chiu2015_subject01", name)
      expect(await sha256(join(sampleRoot, "Spectralis", "DUKE01", "oct", name)), name).toBe(await sha256(original))
    }
  })

  it("stores UMN channel 0 losslessly", { timeout: 60_000 }, async () => {
    for (const name of ["24_00.png", "24_12.png", "26_05.png"]) {
      const subject = name.slice(0, 2)
      const original = await readGrayImage(join(realData, "umn_duke_dme_zs144", `umn_subject${subject}`, "images", name))
      const shipped = await readGrayImage(join(sampleRoot, "Spectralis", `UMN${subject}`, "oct", name))
      expect(shipped.width).toBe(original.width)
      expect(Buffer.from(shipped.data.buffer).equals(Buffer.from(original.data.buffer)), name).toBe(true)
    }
  })
})

describe.skipIf(!hasRealData)("RETOUCH-coded crops", () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "octflow-real-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  // Label pixel counts of the 256 x 256 crops, codes 85/170/255 = IRF/SRF/PED.
  const expected: ReadonlyArray<[string, readonly number[]]> = [
    ["Cirrus_2.png", [64306, 0, 757, 473]],
    ["Spectralis_3.png", [65030, 209, 0, 297]],
    ["Topcon_2.png", [59057, 398, 601, 5480]]
  ]

  it("decodes x85 masks to RETOUCH codes", async () => {
    const caseDir = join(dir, "crops")
    await writeBscanCase(caseDir, { oct: makeVolume("uint8", [256, 256, expected.length]) })
    await mkdir(join(caseDir, "reference"), { recursive: true })
    for (const [index, [name]] of expected.entries()) {
      await copyFile(join(realData, "retouch_wsc12358", name), join(caseDir, "reference", `bscan_${index}.png`))
    }
    const sidecar = JSON.parse(await readFile(join(caseDir, "octflow.json"), "utf8")) as Record<string, unknown>
    await writeFile(
      join(caseDir, "octflow.json"),
      JSON.stringify({ ...sidecar, reference: "reference", labelScheme: "retouch", maskEncoding: "retouch-x85" })
    )
    const { labels } = await readBscanCase(join(caseDir, "octflow.json"))
    if (labels === undefined) throw new Error("labels missing")
    const summary = summarizeSlices(labels, "retouch")
    for (const [index, [name, counts]] of expected.entries()) expect(summary[index].classVoxels, name).toEqual(counts)
  })
})
