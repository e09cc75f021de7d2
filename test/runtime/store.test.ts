import { spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { acquireLock } from "../../src/runtime/lock.ts"
import * as Stage from "../../src/runtime/stage.ts"
import { commitOutput, createStaging, layout, objectSize, sweepStaging } from "../../src/runtime/store.ts"
import { tempDir } from "./helpers.ts"

// SHA-256 of the three bytes "abc".
const abcHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

describe("commitOutput", () => {
  it("stores a file by content hash", async () => {
    const ws = layout(tempDir("store"))
    await sweepStaging(ws)
    const { ports } = await createStaging(ws, { out: Stage.file(".txt") })
    writeFileSync(ports.out!, "abc")
    const stored = await commitOutput(ws, ports.out!, Stage.file(".txt"))
    expect(stored.path).toBe(`objects/ba/${abcHash}.txt`)
    expect(readFileSync(join(ws.root, stored.path), "utf8")).toBe("abc")
    expect(statSync(join(ws.root, stored.path)).mode & 0o222).toBe(0)
    expect(existsSync(ports.out!)).toBe(false)
  })

  it("keeps one copy of equal content", async () => {
    const ws = layout(tempDir("store"))
    await sweepStaging(ws)
    const paths: Array<string> = []
    for (let i = 0; i < 2; i++) {
      const { ports } = await createStaging(ws, { out: Stage.file(".txt") })
      writeFileSync(ports.out!, "abc")
      paths.push((await commitOutput(ws, ports.out!, Stage.file(".txt"))).path)
    }
    expect(paths[1]).toBe(paths[0])
  })

  it("stores a directory with its size", async () => {
    const ws = layout(tempDir("store"))
    await sweepStaging(ws)
    const { ports } = await createStaging(ws, { model: Stage.directory() })
    writeFileSync(join(ports.model!, "model.json"), "{}")
    mkdirSync(join(ports.model!, "shards"))
    writeFileSync(join(ports.model!, "shards/weights.bin"), "12345")
    const stored = await commitOutput(ws, ports.model!, Stage.directory())
    expect(stored.size).toBe(7)
    expect(objectSize(ws, stored.path, "directory")).toBe(7)
    expect(readFileSync(join(ws.root, stored.path, "shards/weights.bin"), "utf8")).toBe("12345")
  })

  it("reports a missing object", async () => {
    const ws = layout(tempDir("store"))
    expect(objectSize(ws, "objects/00/nothing.txt", "file")).toBeNull()
  })
})

describe("acquireLock", () => {
  it("takes over a dead holder's lock", async () => {
    const dir = tempDir("lock")
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString()
    writeFileSync(join(dir, "lock"), JSON.stringify({ pid: Number(dead), host: hostname(), started: "" }))
    const takeovers: Array<number> = []
    const lock = await acquireLock(join(dir, "lock"), dir, { noWait: true, onTakeover: (h) => takeovers.push(h.pid) })
    expect(takeovers).toEqual([Number(dead)])
    expect(JSON.parse(readFileSync(join(dir, "lock"), "utf8")).pid).toBe(process.pid)
    await lock.release()
    expect(existsSync(join(dir, "lock"))).toBe(false)
  })

  it("fails at once with noWait", async () => {
    const dir = tempDir("lock")
    const holder = await acquireLock(join(dir, "lock"), dir)
    await expect(acquireLock(join(dir, "lock"), dir, { noWait: true })).rejects.toMatchObject({ _tag: "WorkspaceLocked", pid: process.pid })
    await holder.release()
  })

  it("waits for a live holder", async () => {
    const dir = tempDir("lock")
    const sleeper = spawn(process.execPath, ["-e", "setTimeout(() => {}, 600)"])
    writeFileSync(join(dir, "lock"), JSON.stringify({ pid: sleeper.pid, host: hostname(), started: "" }))
    let waited = 0
    const started = Date.now()
    const lock = await acquireLock(join(dir, "lock"), dir, { pollMs: 50, onWait: () => waited++ })
    expect(waited).toBe(1)
    expect(Date.now() - started).toBeGreaterThanOrEqual(300)
    await lock.release()
  })

  it("writes the lock whole", async () => {
    const dir = tempDir("lock")
    const lock = await acquireLock(join(dir, "lock"), dir)
    expect(JSON.parse(readFileSync(join(dir, "lock"), "utf8"))).toMatchObject({ pid: process.pid, host: hostname() })
    expect(readdirSync(dir)).toEqual(["lock"])
    await lock.release()
  })

  it("takes over an old empty lock", async () => {
    const dir = tempDir("lock")
    writeFileSync(join(dir, "lock"), "")
    const old = new Date(Date.now() - 10_000)
    utimesSync(join(dir, "lock"), old, old)
    const lock = await acquireLock(join(dir, "lock"), dir, { noWait: true })
    expect(JSON.parse(readFileSync(join(dir, "lock"), "utf8")).pid).toBe(process.pid)
    await lock.release()
  })

  it("rejects a folder as the lock", async () => {
    const dir = tempDir("lock")
    mkdirSync(join(dir, "lock"))
    await expect(acquireLock(join(dir, "lock"), dir, { noWait: true })).rejects.toMatchObject({ _tag: "LockPathInvalid", kind: "folder" })
  })

  it("rejects a dangling link as the lock", async () => {
    const dir = tempDir("lock")
    symlinkSync(join(dir, "missing"), join(dir, "lock"))
    await expect(acquireLock(join(dir, "lock"), dir)).rejects.toThrow("is a link or special file, not a lock file")
  })

  it("waits on a young empty lock", async () => {
    const dir = tempDir("lock")
    writeFileSync(join(dir, "lock"), "")
    setTimeout(() => rmSync(join(dir, "lock")), 300)
    const waits: Array<number> = []
    const started = Date.now()
    const lock = await acquireLock(join(dir, "lock"), dir, { onWait: (holder) => waits.push(holder.pid) })
    expect(Date.now() - started).toBeGreaterThanOrEqual(250)
    expect(waits).toEqual([0])
    await lock.release()
  })

  it("fails on a young empty lock", async () => {
    const dir = tempDir("lock")
    writeFileSync(join(dir, "lock"), "")
    await expect(acquireLock(join(dir, "lock"), dir, { noWait: true })).rejects.toThrow("whose lock file is still empty")
  })
})
