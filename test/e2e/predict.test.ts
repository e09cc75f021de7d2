/**
 * End to end: `workflow full --profile ci` trains a tiny model on a phantom dataset (two
 * Spectralis cases and one Cirrus case), then `workflow predict` segments new phantom scans
 * with it, through the CLI in child processes and a real workspace database.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { histogram256 } from "../../src/kernels/histogram.ts"
import { toUint8Volume } from "../../src/kernels/intensity.ts"
import { preprocessVolume } from "../../src/kernels/preprocess.ts"
import { writePhantomDataset } from "../../src/phantom/dataset.ts"
import { readMetaImage, writeMetaImage } from "../../src/volume/metaimage.ts"
import { writeBscanCase } from "../../src/volume/bscans.ts"
import { readNifti } from "../../src/volume/nifti.ts"
import type { Volume } from "../../src/volume/volume.ts"
import { matchingOf } from "../../stages/predict-prepare.ts"
import { describeScan, resolveScanVendor, type ScanMeta } from "../../stages/predict-scan.ts"

const repoRoot = resolve(fileURLToPath(new URL("../..", import.meta.url)))
const root = mkdtempSync(join(tmpdir(), "octflow-predict-"))
const data = join(root, "data")
const scans = join(root, "scans")
const workspace = join(root, "ws")
const newCirrus = join(scans, "Cirrus", "NEW001")
const looseScan = join(root, "loose", "scan.mha")
const bscanFolder = join(root, "exports", "case42")

afterAll(() => rmSync(root, { recursive: true, force: true }))

const cli = (...args: string[]) => {
  const result = spawnSync(process.execPath, ["bin/octflow.mjs", ...args], {
    cwd: repoRoot,
    encoding: "utf8",
    env: { ...process.env, OCTFLOW_BACKEND: "wasm" },
    timeout: 10 * 60_000
  })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

const predict = (...args: string[]) => cli("predict", "--workspace", workspace, "--profile", "ci", ...args)

const query = <Row>(sql: string): Row[] => {
  const result = cli("query", "--json", "--workspace", workspace, sql)
  expect(result.stderr).not.toMatch(/error:/)
  return JSON.parse(result.stdout) as Row[]
}

/** Returns the path printed after `label`, as in "label volume   /ws/runs/.../NEW001.mha". */
const printedPath = (stdout: string, label: string): string => {
  const match = new RegExp(`^  ${label}\\s+(\\S+)`, "m").exec(stdout)
  if (match === null) throw new Error(`no "${label}" line in:\n${stdout}`)
  return match[1]!
}

describe("workflow predict", () => {
  let fullRun = { status: null as number | null, stderr: "" }
  let newCirrusRun = { status: null as number | null, stdout: "", stderr: "" }

  beforeAll(async () => {
    await writePhantomDataset(data, {
      seed: 11,
      scale: 0.125,
      cases: [
        { vendor: "Spectralis", key: "TRAIN001" },
        { vendor: "Spectralis", key: "TRAIN002" },
        { vendor: "Cirrus", key: "TRAIN001" }
      ]
    })
    await writePhantomDataset(scans, {
      seed: 12,
      scale: 0.125,
      cases: [
        { vendor: "Cirrus", key: "NEW001" },
        { vendor: "Spectralis", key: "NEW002" }
      ]
    })
    // A lone file in a folder whose name is no vendor, without a reference.
    mkdirSync(join(root, "loose"))
    await writeMetaImage(looseScan, await readMetaImage(join(scans, "Spectralis", "NEW002", "oct.mhd")))
    // A B-scan export whose sidecar names the vendor, in a folder whose name is no vendor.
    await writeBscanCase(bscanFolder, {
      oct: (await readMetaImage(join(scans, "Spectralis", "NEW002", "oct.mhd"))) as Volume<Uint16Array>,
      labels: (await readMetaImage(join(scans, "Spectralis", "NEW002", "reference.mhd"))) as Volume<Uint8Array>,
      vendor: "Spectralis"
    })

    // A non-default roi threshold shows that prediction takes the training run's.
    fullRun = cli("full", "--profile", "ci", "--data", data, "--workspace", workspace, "--jobs", "2", "-p", "roi.threshold=0.02")
    newCirrusRun = predict(newCirrus)
  }, 8 * 60_000)

  it("trains the model first", () => {
    expect(fullRun.stderr).not.toMatch(/^error:/m)
    expect(fullRun.status).toBe(0)
  })

  it("predicts a new Cirrus case", async () => {
    expect(newCirrusRun.stderr).not.toMatch(/^error:/m)
    expect(newCirrusRun.status).toBe(0)
    const oct = await readMetaImage(join(newCirrus, "oct.mhd"))
    const labels = await readMetaImage(printedPath(newCirrusRun.stdout, "label volume"))
    expect(labels.dims).toEqual(oct.dims)
    expect(labels.spacingMm).toEqual(oct.spacingMm)
    expect(labels.dtype).toBe("uint8")
    const nifti = await readNifti(printedPath(newCirrusRun.stdout, "NIfTI labels"))
    expect(nifti.dims).toEqual(oct.dims)
  })

  it("does not warn for a new case", () => {
    expect(newCirrusRun.stdout).not.toMatch(/training case/)
  })

  it("warns for a training case", { timeout: 5 * 60_000 }, () => {
    const history = JSON.parse(readFileSync(join(workspace, "latest", "train", "history.json"), "utf8")) as {
      fit: string[]
    }
    const trainingCase = history.fit[0]!
    const result = predict(join(data, trainingCase))
    expect(result.status).toBe(0)
    expect(result.stdout).toContain(`warning: this scan is the model's training case ${trainingCase}`)
  })

  it("study lineage leaves out predict's copies", { timeout: 5 * 60_000 }, () => {
    // Predicting a training case prepares it exactly as the study's preprocess did.
    const shared = query<{ n: number }>(
      `SELECT count(*)::INTEGER AS n FROM artifacts p JOIN artifacts s ON s.hash = p.hash
       WHERE p.stage = 'prepare' AND s.stage = 'preprocess'`
    )
    expect(shared[0]!.n).toBeGreaterThan(0)
    const result = cli("lineage", "--json", "--upstream", "--workspace", workspace, join(workspace, "latest", "evaluate", "metrics.json"))
    expect(result.status).toBe(0)
    type Row = { stage: string | null; hash: string; port: string | null; item: string | null; path: string; depth: number }
    const rows = (JSON.parse(result.stdout) as { rows: Array<Row> }).rows
    expect(rows.filter((row) => row.stage === "prepare")).toEqual([])
    // Each artifact once: two source headers may share content, so the path is part of the key.
    const keys = rows.map((row) => `${row.hash} ${row.port} ${row.item} ${row.path}`)
    expect(new Set(keys).size).toBe(keys.length)
    const depths = rows.map((row) => row.depth)
    expect(depths).toEqual([...depths].sort((a, b) => a - b))
  })

  it("artifacts of a stage skip predict runs", () => {
    // The newest run is a prediction; the roi masks are the study's.
    const result = cli("artifacts", "--stage", "roi", "--json", "--workspace", workspace)
    expect(result.status).toBe(0)
    const rows = JSON.parse(result.stdout) as Array<{ stage: string; item: string }>
    expect(rows.map((row) => row.item).sort()).toEqual(["Cirrus/TRAIN001", "Spectralis/TRAIN001", "Spectralis/TRAIN002"])
  })

  it("writes overlays and metrics", () => {
    const overlay = printedPath(newCirrusRun.stdout, "overlays")
    expect(overlay).toMatch(/NEW001_z\d{3}\.png$/)
    expect(existsSync(overlay)).toBe(true)
    const metrics = JSON.parse(readFileSync(printedPath(newCirrusRun.stdout, "metrics"), "utf8")) as {
      evaluation: { metrics: { classes: Array<{ name: string }> } } | null
    }
    expect(metrics.evaluation).not.toBeNull()
    expect(metrics.evaluation!.metrics.classes.length).toBeGreaterThan(0)
  })

  it("preprocesses as training did", async () => {
    const rows = query<{ path: string }>("SELECT path FROM artifacts WHERE stage = 'prepare' AND port = 'volume' AND item = 'NEW001'")
    expect(rows).toHaveLength(1)
    const prepared = await readMetaImage(join(workspace, rows[0]!.path))
    // Training matched Cirrus to the first Spectralis case, with the default z-median vendors.
    const reference = await readMetaImage(join(data, "Spectralis", "TRAIN001", "oct.mhd"))
    const expected = preprocessVolume(await readMetaImage(join(newCirrus, "oct.mhd")), "Cirrus", {
      referenceHistogram: histogram256(toUint8Volume(reference)),
      zMedianVendors: ["Cirrus", "Topcon"]
    })
    expect(Buffer.from(prepared.data.buffer).equals(Buffer.from(expected.data.buffer))).toBe(true)
  })

  it("uses the training ROI params", () => {
    const rows = query<{ params: string }>("SELECT params::VARCHAR AS params FROM executions WHERE stage = 'prepare' AND item = 'NEW001'")
    expect(rows).toHaveLength(1)
    expect(JSON.parse(rows[0]!.params).roi).toMatchObject({ threshold: 0.02 })
  })

  it("labels nothing outside the ROI", async () => {
    const masks = query<{ path: string }>("SELECT path FROM artifacts WHERE stage = 'prepare' AND port = 'roi' AND item = 'NEW001'")
    const mask = await readMetaImage(join(workspace, masks[0]!.path))
    const labels = await readMetaImage(printedPath(newCirrusRun.stdout, "label volume"))
    let outside = 0
    let labelledOutside = 0
    for (let i = 0; i < mask.data.length; i++) {
      if (mask.data[i] !== 0) continue
      outside++
      if (labels.data[i] !== 0) labelledOutside++
    }
    expect(outside).toBeGreaterThan(0)
    expect(labelledOutside).toBe(0)
  })

  it("traces labels to the model", () => {
    const labelsPath = printedPath(newCirrusRun.stdout, "label volume")
    const result = cli("lineage", "--json", "--upstream", "--workspace", workspace, labelsPath)
    expect(result.status).toBe(0)
    const rows = (JSON.parse(result.stdout) as { rows: Array<Record<string, unknown>> }).rows
    const best = query<{ hash: string }>("SELECT DISTINCT hash FROM artifacts WHERE stage = 'train' AND port = 'best'")
    expect(best).toHaveLength(1)
    expect(rows.map((row) => row.hash)).toContain(best[0]!.hash)
    const trainRows = rows.filter((row) => row.stage === "train" && row.execution_id !== null)
    expect(trainRows.length).toBeGreaterThan(0)
    const sources = rows.filter((row) => row.kind === "source")
    expect(sources.map((row) => row.item)).toContain("Spectralis/TRAIN001")
    expect(sources.map((row) => row.path)).toContain(join(newCirrus, "oct.mhd"))
  })

  it("records the backend", () => {
    const rows = query<{ environment: string }>(
      "SELECT environment::VARCHAR AS environment FROM executions WHERE stage = 'predict' AND status = 'ok'"
    )
    expect(rows.length).toBeGreaterThan(0)
    expect(JSON.parse(rows[0]!.environment)).toMatchObject({ backend: "wasm" })
  })

  it("keeps latest on the study", () => {
    expect(existsSync(join(workspace, "latest", "train", "best"))).toBe(true)
  })

  it("skips a repeated prediction", () => {
    const result = predict(newCirrus)
    expect(result.status).toBe(0)
    const executions = query<{ code_hash: string }>(
      "SELECT code_hash FROM executions WHERE stage = 'predict' AND item = 'NEW001' ORDER BY id"
    )
    const actions = query<{ action: string }>(
      `SELECT action FROM run_tasks WHERE stage = 'predict'
       AND run_id = (SELECT id FROM runs ORDER BY started DESC LIMIT 1)`
    )
    if (actions[0]?.action === "cached") {
      expect(executions).toHaveLength(1)
      return
    }
    // A second execution is right only when the code changed between the two runs, which
    // happens when the working tree is edited while the test runs.
    expect(executions).toHaveLength(2)
    expect(executions[1]!.code_hash).not.toBe(executions[0]!.code_hash)
  })

  it("predicts a lone file with --vendor", async () => {
    const runId = query<{ id: string }>("SELECT id FROM runs WHERE workflow = 'retouch' ORDER BY started DESC LIMIT 1")[0]!.id
    const out = join(root, "out")
    const result = predict(looseScan, "--vendor", "Spectralis", "--model", runId, "--out", out)
    expect(result.stderr).not.toMatch(/^error:/m)
    expect(result.status).toBe(0)
    expect(result.stdout).toMatch(/^  volumes .*no reference/m)
    const copied = readdirSync(out)
    expect(copied).toContain("scan.mha")
    expect(copied).toContain("scan.nii.gz")
    expect(copied).toContain("scan_metrics.json")
    expect(copied.some((name) => /^scan_z\d{3}\.png$/.test(name))).toBe(true)
    const labels = await readMetaImage(join(out, "scan.mha"))
    expect(labels.dims).toEqual((await readMetaImage(looseScan)).dims)
  })

  it("warns for a blank scan", async () => {
    const spectralis = await readMetaImage(join(scans, "Spectralis", "NEW002", "oct.mhd"))
    const blank = join(root, "blank", "Spectralis", "BLANK1", "oct.mha")
    mkdirSync(join(root, "blank", "Spectralis", "BLANK1"), { recursive: true })
    await writeMetaImage(blank, { ...spectralis, data: new Uint16Array(spectralis.data.length) })
    const result = predict(join(root, "blank", "Spectralis", "BLANK1"))
    expect(result.status).toBe(0)
    expect(result.stderr + result.stdout).toContain("the scan's ROI is empty, so no fluid can be predicted")
  })

  it("predicts a B-scan folder", async () => {
    const result = predict(bscanFolder, "--model", join(workspace, "latest", "train", "best"))
    expect(result.stderr).not.toMatch(/^error:/m)
    expect(result.status).toBe(0)
    expect(result.stdout).toContain("prediction for case42 (Spectralis)")
    const labels = await readMetaImage(printedPath(result.stdout, "label volume"))
    expect(labels.dims).toEqual((await readMetaImage(join(scans, "Spectralis", "NEW002", "oct.mhd"))).dims)
    expect(printedPath(result.stdout, "metrics")).toMatch(/case42\.json$/)
  })

  it("rejects a scan without vendor", () => {
    const result = predict(looseScan)
    expect(result.status).toBe(2)
    expect(result.stderr).toContain(looseScan)
    expect(result.stderr).toContain('the folder "loose" that contains it is not a vendor name')
    expect(result.stderr).toContain("pass --vendor")
  })

  it("a failed scan suggests no --exclude", () => {
    // A Cirrus volume's B-scan height does not fit Spectralis, so prepare fails.
    const result = predict(newCirrus, "--vendor", "Spectralis")
    expect(result.status).toBe(1)
    expect(result.stderr).toContain("voxels high does not fit Spectralis")
    expect(result.stderr).toContain("pass --vendor Cirrus, or --skip-geometry-check")
    expect(result.stderr).toContain("Stages with tasks not run because an upstream task failed")
    expect(result.stderr).not.toContain("--exclude")
  })

  it("rejects an unknown model", () => {
    const result = predict(newCirrus, "--model", "no-such-run")
    expect(result.status).toBe(2)
    expect(result.stderr).toContain('--model "no-such-run"')
    expect(result.stderr).toContain("pass a run id")
  })

  it("rejects a run without train", () => {
    const runId = query<{ id: string }>("SELECT id FROM runs WHERE workflow = 'predict' LIMIT 1")[0]!.id
    const result = predict(newCirrus, "--model", runId)
    expect(result.status).toBe(2)
    expect(result.stderr).toContain(`is a predict run without a finished train stage`)
  })

  it("rejects a path outside the store", () => {
    const result = predict(newCirrus, "--model", data)
    expect(result.status).toBe(2)
    expect(result.stderr).toContain(`${data} is not an object of workspace`)
  })

  it("rejects a non-model artifact", () => {
    const metrics = query<{ hash: string }>("SELECT hash FROM artifacts WHERE stage = 'evaluate' AND port = 'metrics' LIMIT 1")
    const result = predict(newCirrus, "--model", metrics[0]!.hash.slice(0, 16))
    expect(result.status).toBe(2)
    expect(result.stderr).toContain("output evaluate.metrics")
    expect(result.stderr).toContain("not a model of the train stage")
  })
})

describe("resolveScanVendor", () => {
  const meta = (parentFolder: string, sidecarVendor: string | null): ScanMeta => ({
    format: "metaimage",
    scheme: "retouch",
    octFile: "scan.mha",
    referenceFile: null,
    parentFolder,
    sidecarVendor,
    sidecar: null
  })

  it.each([
    { case: "request wins", requested: "cirrus", folder: "Topcon", sidecar: "Topcon", vendor: "Cirrus", source: "requested" },
    { case: "sidecar before folder", requested: "auto", folder: "Cirrus", sidecar: "Topcon", vendor: "Topcon", source: "sidecar" },
    { case: "RETOUCH folder", requested: "auto", folder: "RETOUCH-TestSet-Spectralis", sidecar: null, vendor: "Spectralis", source: "folder" }
  ])("decides by $case", ({ requested, folder, sidecar, vendor, source }) => {
    expect(resolveScanVendor("/x/scan.mha", meta(folder, sidecar), requested)).toEqual({ vendor, source })
  })

  it.each([
    { case: "unknown folder", requested: "auto", folder: "scans", sidecar: null, value: null },
    { case: "unknown request", requested: "Zeiss", folder: "Cirrus", sidecar: null, value: "Zeiss" },
    { case: "unknown sidecar vendor", requested: "auto", folder: "Cirrus", sidecar: "Optovue", value: "Optovue" }
  ])("rejects $case", ({ requested, folder, sidecar, value }) => {
    expect(() => resolveScanVendor("/x/scan.mha", meta(folder, sidecar), requested)).toThrow(
      expect.objectContaining({ _tag: "ScanVendorError", value })
    )
  })
})

describe("matchingOf", () => {
  const histogram = Array.from({ length: 256 }, (_, value) => value % 7)

  it("ignores info for Spectralis", () => {
    expect(matchingOf("info.json", {}, "Spectralis")).toEqual({ referenceHistogram: null, zMedianVendors: [] })
  })

  it("reads histogram and z-median vendors", () => {
    const matching = matchingOf("info.json", { referenceHistogram: histogram, zMedianVendors: ["Topcon"] }, "Cirrus")
    expect(matching.referenceHistogram).toBe(histogram)
    expect(matching.zMedianVendors).toEqual(["Topcon"])
  })

  it.each([
    { case: "missing z-median vendors", info: { referenceHistogram: histogram }, tag: "TrainingInfoOutdatedError" },
    { case: "missing histogram", info: { zMedianVendors: ["Cirrus" as const] }, tag: "TrainingInfoOutdatedError" },
    { case: "null histogram", info: { referenceHistogram: null, zMedianVendors: [] }, tag: "NoReferenceHistogramError" },
    { case: "short histogram", info: { referenceHistogram: [1, 2], zMedianVendors: [] }, tag: "ReferenceHistogramInvalidError" }
  ])("rejects $case", ({ info, tag }) => {
    expect(() => matchingOf("info.json", info, "Topcon")).toThrow(expect.objectContaining({ _tag: tag, path: "info.json" }))
  })
})

describe("describeScan", () => {
  const dir = mkdtempSync(join(tmpdir(), "octflow-scan-"))
  const tiny = { dims: [2, 2, 1] as const, spacingMm: [1, 1, 1] as const, dtype: "uint8" as const, data: new Uint8Array(4) }

  beforeAll(async () => {
    mkdirSync(join(dir, "Cirrus", "CASE1"), { recursive: true })
    await writeMetaImage(join(dir, "Cirrus", "CASE1", "oct.mhd"), tiny)
    await writeMetaImage(join(dir, "Cirrus", "CASE1", "reference.mhd"), tiny)
    await writeMetaImage(join(dir, "lone.mha"), tiny)
    writeFileSync(join(dir, "notes.txt"), "not a scan")
    mkdirSync(join(dir, "empty"))
  })

  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it("keys a lone file by stem", async () => {
    const item = await describeScan(join(dir, "lone.mha"))
    expect(item.key).toBe("lone")
    expect(item.files).toEqual([join(dir, "lone.mha")])
  })

  it("reads a case folder with reference", async () => {
    const item = await describeScan(join(dir, "Cirrus", "CASE1"))
    const meta = item.meta as unknown as ScanMeta
    expect(item.key).toBe("CASE1")
    expect(item.files).toHaveLength(4)
    expect(meta.referenceFile).toBe("reference.mhd")
    expect(meta.parentFolder).toBe("Cirrus")
  })

  it("treats oct.mhd as its case", async () => {
    const item = await describeScan(join(dir, "Cirrus", "CASE1", "oct.mhd"))
    expect(item.key).toBe("CASE1")
    expect((item.meta as unknown as ScanMeta).referenceFile).toBe("reference.mhd")
  })

  it.each([
    { case: "missing path", name: "absent.mha", tag: "ScanNotFoundError" },
    { case: "text file", name: "notes.txt", tag: "ScanFormatError" },
    { case: "folder without OCT", name: "empty", tag: "ScanFormatError" }
  ])("rejects $case", async ({ name, tag }) => {
    await expect(describeScan(join(dir, name))).rejects.toMatchObject({ _tag: tag, path: join(dir, name) })
  })
})
