/**
 * Tests of src/runtime/hash.ts on real files in temporary directories: known SHA-256
 * vectors, worker-pool ordering, directory hashes and stat keys.
 */
import { execFileSync } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import { appendFileSync } from "node:fs"
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import fc from "fast-check"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { digestFile } from "../../src/runtime/hash-worker.ts"
import {
  buildDirectoryManifest,
  FileChangedWhileHashingError,
  FileNotFoundError,
  hashBytes,
  hashDirectory,
  hashFile,
  hashFiles,
  InvalidConcurrencyError,
  isSameStat,
  manifestHeader,
  NotADirectoryError,
  NotAFileError,
  type StatKey,
  statKey,
  SymlinkInDirectoryError,
  UnsupportedEntryError
} from "../../src/runtime/hash.ts"

const emptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
const abcSha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

const sha256Of = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex")

let dir: string

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "octflow-hash-"))
})

afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Writes `files` (relative path to content) under `root`, in the given order. */
async function writeTree(root: string, files: ReadonlyArray<readonly [string, string | Uint8Array]>): Promise<void> {
  for (const [relativePath, content] of files) {
    const path = join(root, relativePath)
    await mkdir(join(path, ".."), { recursive: true })
    await writeFile(path, content)
  }
}

describe("hashBytes", () => {
  it.each([
    ["empty string", "", emptySha256],
    ["abc string", "abc", abcSha256],
    ["abc bytes", new Uint8Array([0x61, 0x62, 0x63]), abcSha256]
  ])("%s", (_name, data, expected) => {
    expect(hashBytes(data)).toBe(expected)
  })

  it("encodes strings as UTF-8", () => {
    expect(hashBytes("é")).toBe(sha256Of(new Uint8Array([0xc3, 0xa9])))
  })
})

describe("hashFile", () => {
  it("empty file", async () => {
    const path = join(dir, "empty")
    await writeFile(path, "")
    expect(await hashFile(path)).toBe(emptySha256)
  })

  it("abc file", async () => {
    const path = join(dir, "abc")
    await writeFile(path, "abc")
    expect(await hashFile(path)).toBe(abcSha256)
  })

  // Sizes around the 1 MiB read chunk: exactly one and two chunks, and a ragged tail.
  it.each([1024 * 1024, 2 * 1024 * 1024, 5 * 1024 * 1024 + 123])("%i random bytes", async (size) => {
    const data = randomBytes(size)
    const path = join(dir, "random")
    await writeFile(path, data)
    expect(await hashFile(path)).toBe(sha256Of(data))
  })

  it("file that changes", async () => {
    const path = join(dir, "changing")
    await writeFile(path, "abc")
    const first = await hashFile(path)
    await writeFile(path, "abd")
    const second = await hashFile(path)
    expect(first).toBe(abcSha256)
    expect(second).toBe(hashBytes("abd"))
  })

  it("missing file", async () => {
    const path = join(dir, "missing.raw")
    const error = await hashFile(path).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(FileNotFoundError)
    expect((error as FileNotFoundError).path).toBe(path)
    expect((error as FileNotFoundError).message).toContain(path)
  })

  it("directory instead of file", async () => {
    const error = await hashFile(dir).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(NotAFileError)
    expect((error as NotAFileError).actual).toBe("directory")
  })

  it("FIFO instead of file", async () => {
    const path = join(dir, "pipe")
    execFileSync("mkfifo", [path])
    const error = await hashFile(path).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(NotAFileError)
    expect((error as NotAFileError).actual).toBe("FIFO")
  })

  it("file growing during read", async () => {
    const path = join(dir, "growing")
    await writeFile(path, randomBytes(256 * 1024))
    // 16-byte reads take about 16 000 awaits, so appends every 2 ms land mid-read.
    const digesting = digestFile(path, 16)
    const error = await appendUntilSettled(path, digesting)
    expect(error).toMatchObject({ code: "OCTFLOW_FILE_CHANGED", path })
  })

  it("growing file maps to tagged error", async () => {
    const path = join(dir, "growing")
    await writeFile(path, randomBytes(32 * 1024 * 1024))
    const error = await appendUntilSettled(path, hashFile(path))
    expect(error).toBeInstanceOf(FileChangedWhileHashingError)
    expect((error as FileChangedWhileHashingError).path).toBe(path)
    expect((error as FileChangedWhileHashingError).actualBytes).toBeGreaterThan(32n * 1024n * 1024n)
  })
})

/** Appends 4 bytes to `path` every 2 ms until `hashing` settles, then returns its error, if any. */
async function appendUntilSettled(path: string, hashing: Promise<unknown>): Promise<unknown> {
  const timer = setInterval(() => appendFileSync(path, "more"), 2)
  try {
    await hashing
    return undefined
  } catch (error) {
    return error
  } finally {
    clearInterval(timer)
  }
}

describe("hashFiles", () => {
  // Decreasing sizes, so with several workers the later files finish first.
  const sizes = [3 * 1024 * 1024, 1024 * 1024, 4096, 10, 0, 777]

  async function writeInputs(): Promise<{ paths: string[]; expected: string[] }> {
    const paths: string[] = []
    const expected: string[] = []
    for (const [index, size] of sizes.entries()) {
      const data = randomBytes(size)
      const path = join(dir, `input-${index}`)
      await writeFile(path, data)
      paths.push(path)
      expected.push(sha256Of(data))
    }
    return { paths, expected }
  }

  it.each([1, 4])("order with concurrency %i", async (concurrency) => {
    const { paths, expected } = await writeInputs()
    const hashes = await hashFiles(paths, { concurrency, parallelThresholdBytes: 0 })
    expect(hashes).toEqual(expected)
  })

  it("order below parallel threshold", async () => {
    const { paths, expected } = await writeInputs()
    expect(await hashFiles(paths, { concurrency: 4 })).toEqual(expected)
  })

  it("repeated path", async () => {
    const path = join(dir, "abc")
    await writeFile(path, "abc")
    const hashes = await hashFiles([path, path, path], { concurrency: 2, parallelThresholdBytes: 0 })
    expect(hashes).toEqual([abcSha256, abcSha256, abcSha256])
  })

  it("empty list", async () => {
    expect(await hashFiles([])).toEqual([])
  })

  it("missing file on worker", async () => {
    const present = join(dir, "abc")
    const missing = join(dir, "missing.raw")
    await writeFile(present, "abc")
    const error = await hashFiles([present, missing], { concurrency: 2, parallelThresholdBytes: 0 }).catch(
      (caught: unknown) => caught
    )
    expect(error).toBeInstanceOf(FileNotFoundError)
    expect((error as FileNotFoundError).path).toBe(missing)
  })

  it.each([0, -1, 1.5, Number.NaN])("invalid concurrency %d", async (concurrency) => {
    const error = await hashFiles([], { concurrency }).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(InvalidConcurrencyError)
  })
})

describe("hashDirectory", () => {
  const tree = [
    ["a.txt", "abc"],
    ["sub/b.bin", new Uint8Array([0, 1, 2, 255])],
    ["sub/deeper/c.txt", ""],
    ["z.txt", "last"]
  ] as const

  it("same content in two places", async () => {
    const first = join(dir, "first")
    const second = join(dir, "elsewhere", "second")
    await writeTree(first, tree)
    await writeTree(second, [...tree].reverse())
    expect(await hashDirectory(second)).toBe(await hashDirectory(first))
  })

  it("changed byte changes hash", async () => {
    const original = join(dir, "original")
    const edited = join(dir, "edited")
    await writeTree(original, tree)
    await writeTree(edited, tree)
    await writeFile(join(edited, "a.txt"), "abd")
    expect(await hashDirectory(edited)).not.toBe(await hashDirectory(original))
  })

  it("renamed file changes hash", async () => {
    const original = join(dir, "original")
    const renamed = join(dir, "renamed")
    await writeTree(original, [["a.txt", "abc"]])
    await writeTree(renamed, [["b.txt", "abc"]])
    expect(await hashDirectory(renamed)).not.toBe(await hashDirectory(original))
  })

  it("manifest text", async () => {
    const root = join(dir, "root")
    await writeTree(root, [
      ["b.txt", "abc"],
      ["a/x.txt", ""]
    ])
    const manifest = await buildDirectoryManifest(root)
    const expected = `${manifestHeader}\n${emptySha256} 0 "a/x.txt"\n${abcSha256} 3 "b.txt"\n`
    expect(manifest.text).toBe(expected)
    expect(await hashDirectory(root)).toBe(hashBytes(expected))
  })

  it("manifest sorted by UTF-8 bytes", async () => {
    const root = join(dir, "root")
    // UTF-16 order would put U+FF21 (one code unit) after U+1F600 (a surrogate pair).
    await writeTree(root, [
      ["\u{ff21}", "1"],
      ["\u{1f600}", "2"],
      ["B", "3"],
      ["a", "4"]
    ])
    const manifest = await buildDirectoryManifest(root)
    expect(manifest.entries.map((entry) => entry.path)).toEqual(["B", "a", "\u{ff21}", "\u{1f600}"])
  })

  it("same hash on workers", async () => {
    const root = join(dir, "root")
    await writeTree(root, tree)
    const onWorkers = await hashDirectory(root, { concurrency: 4, parallelThresholdBytes: 0 })
    expect(onWorkers).toBe(await hashDirectory(root, { concurrency: 1 }))
  })

  it("symlink rejected", async () => {
    const root = join(dir, "root")
    await writeTree(root, [["a.txt", "abc"]])
    await symlink(join(root, "a.txt"), join(root, "link.txt"))
    const error = await hashDirectory(root).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(SymlinkInDirectoryError)
    expect((error as SymlinkInDirectoryError).path).toBe(join(root, "link.txt"))
    expect((error as SymlinkInDirectoryError).target).toBe(join(root, "a.txt"))
  })

  it("FIFO in directory rejected", async () => {
    const root = join(dir, "root")
    await writeTree(root, [["a.txt", "abc"]])
    execFileSync("mkfifo", [join(root, "pipe")])
    const error = await hashDirectory(root).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(UnsupportedEntryError)
    expect((error as UnsupportedEntryError).path).toBe(join(root, "pipe"))
    expect((error as UnsupportedEntryError).actual).toBe("FIFO")
  })

  it("file instead of directory", async () => {
    const path = join(dir, "a.txt")
    await writeFile(path, "abc")
    const error = await hashDirectory(path).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(NotADirectoryError)
    expect((error as NotADirectoryError).actual).toBe("regular file")
  })

  it("missing directory", async () => {
    const path = join(dir, "missing")
    const error = await hashDirectory(path).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(FileNotFoundError)
  })

  it("independent of creation order", async () => {
    const names = fc.uniqueArray(fc.stringMatching(/^[a-z]{1,6}$/), { minLength: 1, maxLength: 6 })
    await fc.assert(
      fc.asyncProperty(names, fc.integer(), async (fileNames, seed) => {
        const files = fileNames.map((name, index) => [name, `${name}:${index}`] as const)
        const shuffled = [...files].sort((a, b) => ((hashBytes(a[0] + seed) < hashBytes(b[0] + seed)) ? -1 : 1))
        const first = await mkdtemp(join(dir, "p-"))
        const second = await mkdtemp(join(dir, "q-"))
        await writeTree(first, files)
        await writeTree(second, shuffled)
        return (await hashDirectory(first)) === (await hashDirectory(second))
      }),
      { numRuns: 15 }
    )
  })
})

describe("statKey", () => {
  it("unchanged file", async () => {
    const path = join(dir, "a.txt")
    await writeFile(path, "abc")
    expect(isSameStat(await statKey(path), await statKey(path))).toBe(true)
  })

  it("rewritten file", async () => {
    const path = join(dir, "a.txt")
    await writeFile(path, "abc")
    const before = await statKey(path)
    await writeFile(path, "abcd")
    const after = await statKey(path)
    expect(after.size).toBe(4)
    expect(isSameStat(before, after)).toBe(false)
  })

  it("missing file", async () => {
    const error = await statKey(join(dir, "missing")).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(FileNotFoundError)
  })
})

describe("isSameStat", () => {
  const base: StatKey = { dev: 1, ino: 2, size: 3, mtimeNs: 4n }

  it.each([
    ["identical", base, true],
    ["other dev", { ...base, dev: 9 }, false],
    ["other ino", { ...base, ino: 9 }, false],
    ["other size", { ...base, size: 9 }, false],
    ["other mtimeNs", { ...base, mtimeNs: 5n }, false]
  ] as const)("%s", (_name, other, expected) => {
    expect(isSameStat(base, other)).toBe(expected)
  })
})
