/**
 * Read-side commands over a workspace: status of the newest run, the list of runs, the
 * outputs of a run, lineage of one artifact, read-only SQL, and garbage collection of
 * objects that no kept run uses.
 */
import { existsSync } from "node:fs"
import { readdir, readlink, realpath, rm, stat } from "node:fs/promises"
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path"
import { ArtifactNotFound, InvalidFlag, QueryNotReadOnly, UnknownName } from "./errors.ts"
import type { SqlValue } from "./db.ts"
import { hashFile } from "./hash.ts"
import { openForRead, openForWrite, type OpenOptions, type WorkspaceSession } from "./session.ts"
import { latestRunDir } from "./links.ts"
import { makeWritable } from "./store.ts"

async function withRead<A>(workspace: string, body: (session: WorkspaceSession) => Promise<A>): Promise<A> {
  const session = await openForRead(workspace)
  try {
    return await body(session)
  } finally {
    await session.close()
  }
}

export interface RunRow {
  readonly id: string
  readonly workflow: string
  readonly started: string
  readonly finished: string | null
  readonly status: string
  readonly profile: string
  readonly targets: string
  readonly pinned: boolean
  readonly ran: number
  readonly cached: number
  readonly failed: number
}

/**
 * List every run, newest first, with its task counts. The database opens read-only only
 * while no process writes it, so a run still marked running was killed and is listed as
 * interrupted, as `status` does.
 */
export function listRuns(workspace: string): Promise<Array<RunRow>> {
  return withRead(workspace, (session) => session.db.all<RunRow>(
    `SELECT r.id, r.workflow, r.started::VARCHAR AS started, r.finished::VARCHAR AS finished,
            CASE WHEN r.status = 'running' THEN 'interrupted' ELSE r.status END AS status, r.profile,
            r.targets::VARCHAR AS targets, p.run_id IS NOT NULL AS pinned,
            count(*) FILTER (WHERE t.action = 'ran')::INTEGER AS ran,
            count(*) FILTER (WHERE t.action = 'cached')::INTEGER AS cached,
            count(*) FILTER (WHERE t.action = 'failed')::INTEGER AS failed
     FROM runs r LEFT JOIN run_tasks t ON t.run_id = r.id LEFT JOIN pins p ON p.run_id = r.id
     GROUP BY r.id, r.workflow, r.started, r.finished, r.status, r.profile, r.targets, p.run_id
     ORDER BY r.started DESC, r.id DESC`
  ))
}

export interface StageStatus {
  readonly stage: string
  readonly ran: number
  readonly cached: number
  readonly failed: number
  /** Tasks the run planned for the stage; null for runs recorded before plans were. */
  readonly tasks: number | null
  readonly last_error: string | null
}

/**
 * Return the newest run and, per stage, the counts of tasks that ran, were cached or failed.
 * Stages come in plan order with the number of tasks planned, so a stage that a kill or a
 * failure upstream stopped before any of its tasks ended is listed too.
 */
export function workspaceStatus(workspace: string): Promise<{ run: RunRow | null; stages: Array<StageStatus> }> {
  return withRead(workspace, async (session) => {
    const runs = await session.db.all<RunRow & { planned: string | null }>(
      `SELECT id, workflow, started::VARCHAR AS started, finished::VARCHAR AS finished, status, profile, stages::VARCHAR AS planned
       FROM runs ORDER BY started DESC, id DESC LIMIT 1`
    )
    const newest = runs[0] ?? null
    if (newest === null) return { run: newest, stages: [] }
    const { planned, ...row } = newest
    // The database opens read-only only while no process writes it, so a run still marked
    // running here was killed. The next writing command records it as interrupted.
    const run = row.status === "running" ? { ...row, status: "interrupted (its process is gone)" } : row
    const recorded = await session.db.all<Omit<StageStatus, "tasks">>(
      `SELECT t.stage,
              count(*) FILTER (WHERE t.action = 'ran')::INTEGER AS ran,
              count(*) FILTER (WHERE t.action = 'cached')::INTEGER AS cached,
              count(*) FILTER (WHERE t.action = 'failed')::INTEGER AS failed,
              max(e.error) FILTER (WHERE t.action = 'failed') AS last_error
       FROM run_tasks t LEFT JOIN executions e ON e.id = t.execution_id
       WHERE t.run_id = $1 GROUP BY t.stage ORDER BY min(t.execution_id)`,
      [run.id]
    )
    if (planned === null) return { run, stages: recorded.map((stage) => ({ ...stage, tasks: null })) }
    const byStage = new Map(recorded.map((stage) => [stage.stage, stage]))
    const stages = (JSON.parse(planned) as Array<{ stage: string; tasks: number }>).map(({ stage, tasks }) => ({
      ...(byStage.get(stage) ?? { stage, ran: 0, cached: 0, failed: 0, last_error: null }),
      tasks
    }))
    return { run, stages }
  })
}

export interface ArtifactRow {
  readonly stage: string
  readonly port: string
  readonly item: string | null
  readonly hash: string
  readonly path: string
  readonly size: number
}

/** Outputs of a run (the newest by default), optionally of one stage, sorted by stage, port, item. */
export function listArtifacts(workspace: string, options: { stage?: string; run?: string } = {}): Promise<Array<ArtifactRow>> {
  return withRead(workspace, async (session) => {
    if (options.stage !== undefined) {
      const stages = (await session.db.all<{ stage: string }>("SELECT DISTINCT stage FROM run_tasks ORDER BY stage")).map((row) => row.stage)
      if (!stages.includes(options.stage)) throw new UnknownName({ kind: "stage", name: options.stage, known: stages })
    }
    const runId = options.run ?? (await newestRunId(session, options.stage))
    if (runId === null) return []
    if (options.run !== undefined) {
      const known = await session.db.all<{ id: string }>("SELECT id FROM runs ORDER BY started DESC, id DESC")
      if (!known.some((row) => row.id === options.run)) {
        throw new UnknownName({ kind: "run", name: options.run, known: known.slice(0, 5).map((row) => row.id) })
      }
    }
    const values: Array<SqlValue> = [runId]
    let filter = ""
    if (options.stage !== undefined) {
      values.push(options.stage)
      filter = "AND a.stage = $2"
    }
    const rows = await session.db.all<ArtifactRow>(
      `SELECT a.stage, a.port, a.item, a.hash, a.path, a.size::DOUBLE AS size
       FROM run_tasks t JOIN artifacts a ON a.execution_id = t.execution_id
       WHERE t.run_id = $1 ${filter} ORDER BY a.stage, a.port, a.item`,
      values
    )
    return rows.map((r) => ({ ...r, path: join(session.ws.root, r.path) }))
  })
}

/**
 * Returns the newest finished run, or with `stage`, the newest finished run that has tasks
 * of that stage, so that after a predict `artifacts --stage roi` still lists the study's
 * ROI masks.
 */
async function newestRunId(session: WorkspaceSession, stage?: string): Promise<string | null> {
  const rows = await session.db.all<{ id: string }>(
    stage === undefined
      ? "SELECT id FROM runs WHERE status <> 'running' ORDER BY started DESC, id DESC LIMIT 1"
      : `SELECT id FROM runs r WHERE status <> 'running' AND EXISTS (SELECT 1 FROM run_tasks t WHERE t.run_id = r.id AND t.stage = $1)
         ORDER BY started DESC, id DESC LIMIT 1`,
    stage === undefined ? [] : [stage]
  )
  return rows[0]?.id ?? null
}

export interface LineageRow {
  readonly depth: number
  readonly hash: string
  readonly kind: string
  readonly stage: string | null
  readonly port: string | null
  readonly item: string | null
  readonly path: string
  readonly execution_id: number | null
  readonly params: string | null
  readonly code_hash: string | null
  /** Environment the stage recorded, as JSON, such as the tfjs backend; "{}" when none. */
  readonly environment: string | null
}

/** A resolved artifact reference: its hash, and the run named by a path under `runs/<id>/`. */
interface ArtifactRef {
  readonly hash: string
  readonly runId: string | null
  /** The path of a source file given by its path; null otherwise. */
  readonly sourcePath: string | null
}

/** Resolve an artifact reference: a hash or hash prefix, an object path, or a path under runs/ or latest/. */
async function resolveArtifact(session: WorkspaceSession, ref: string): Promise<ArtifactRef> {
  let hash = ref.toLowerCase()
  let runId: string | null = null
  let pathState: "missing" | "unrecorded" | undefined
  if (ref.includes("/") || ref.includes(sep)) {
    let path = isAbsolute(ref) ? ref : resolve(ref)
    const underRuns = relative(session.ws.runs, path).split(sep)
    if (underRuns.length > 1 && underRuns[0] !== ".." && !isAbsolute(underRuns[0]!)) runId = underRuns[0]!
    try {
      const target = await readlink(path)
      path = resolve(dirname(path), target)
    } catch {
      // Not a link: the path itself is an object path or a source file.
    }
    const relativePath = relative(session.ws.root, path).split(sep).join("/")
    const byPath = await session.db.all<{ hash: string; kind: string }>(
      "SELECT hash, kind FROM artifacts WHERE path = $1 OR path = $2 ORDER BY kind = 'source' DESC LIMIT 1", [relativePath, path]
    )
    if (byPath[0] !== undefined) {
      return { hash: byPath[0].hash, runId, sourcePath: byPath[0].kind === "source" ? path : null }
    }
    const found = await artifactContaining(session, path)
    if (found !== null) return { hash: found, runId, sourcePath: null }
    hash = basename(path).replace(/\..*$/, "")
    // A removed object's path still names its hash, so the path is blamed only when the hash is unknown too.
    pathState = existsSync(path) ? "unrecorded" : "missing"
  }
  if (!/^[0-9a-f]{4,64}$/.test(hash)) throw new ArtifactNotFound({ ref, pathState })
  const rows = await session.db.all<{ hash: string }>(
    "SELECT DISTINCT hash FROM artifacts WHERE hash LIKE $1 || '%' ORDER BY hash LIMIT 4", [hash]
  )
  if (rows.length > 1) throw new ArtifactNotFound({ ref, pathState, matches: rows.map((row) => row.hash) })
  if (rows.length === 0) throw new ArtifactNotFound({ ref, pathState })
  return { hash: rows[0]!.hash, runId, sourcePath: null }
}

/**
 * Finds the artifact behind an existing path that is not itself recorded. Inside the
 * workspace, that is the stored folder that contains it, such as evaluate's labels folder
 * for one label volume. Outside, a file resolves to the artifact with its content, such as
 * a copy that predict --out wrote. Returns null when neither is recorded.
 */
async function artifactContaining(session: WorkspaceSession, path: string): Promise<string | null> {
  const real = await realpath(path).catch(() => null)
  if (real === null) return null
  const root = await realpath(session.ws.root).catch(() => session.ws.root)
  const inside = relative(root, real).split(sep)
  if (inside[0] !== ".." && !isAbsolute(inside[0]!)) {
    for (let depth = inside.length - 1; depth > 0; depth--) {
      const rows = await session.db.all<{ hash: string }>(
        "SELECT hash FROM artifacts WHERE path = $1 AND kind = 'directory' LIMIT 1", [inside.slice(0, depth).join("/")]
      )
      if (rows[0] !== undefined) return rows[0].hash
    }
    return null
  }
  if (!(await stat(real)).isFile()) return null
  const content = await hashFile(real)
  const rows = await session.db.all<{ hash: string }>("SELECT hash FROM artifacts WHERE hash = $1 LIMIT 1", [content])
  return rows[0]?.hash ?? null
}

/** Returns the run a lineage question is about: the one named by the path, else the newest run that used the artifact. */
async function contextRun(session: WorkspaceSession, artifact: ArtifactRef): Promise<string | null> {
  if (artifact.runId !== null) return artifact.runId
  const rows = await session.db.all<{ run_id: string }>(
    `SELECT t.run_id FROM run_tasks t JOIN artifacts a ON a.execution_id = t.execution_id JOIN runs r ON r.id = t.run_id
     WHERE a.hash = $1 ORDER BY r.started DESC LIMIT 1`,
    [artifact.hash]
  )
  return rows[0]?.run_id ?? null
}

const lineageColumns = `h.depth::INTEGER AS depth, a.hash, a.kind, a.stage, a.port, a.item, a.path,
       a.execution_id::INTEGER AS execution_id, e.params::VARCHAR AS params, e.code_hash,
       e.environment::VARCHAR AS environment`

/**
 * Ancestors (upstream) or descendants (downstream) of one artifact, nearest first.
 *
 * Upstream follows one producing execution per artifact. Identical content can come from
 * several executions (a rerun with the same result, or predict preparing a scan exactly
 * as the study's preprocess did), so the producer is the one recorded with each read. For
 * the artifact asked about, and for reads recorded before producers were, it is the one
 * that the consuming run used, else the newest one that started before the consumer. The
 * consuming run of the artifact asked about is the one in the path (`runs/<id>/...`), else
 * the newest run that used the artifact. A source file is listed under the item that read
 * it. Downstream lists every execution, in any run, that read the artifact or something
 * made from it; see `downstreamRows`.
 */
export function lineage(workspace: string, ref: string, direction: "upstream" | "downstream"): Promise<{ hash: string; rows: Array<LineageRow> }> {
  return withRead(workspace, async (session) => {
    const artifact = await resolveArtifact(session, ref)
    if (direction === "downstream") return { hash: artifact.hash, rows: await downstreamRows(session, artifact) }
    const ancestors = await upstreamAncestors(session, artifact.hash, await contextRun(session, artifact))
    const rows = await session.db.all<LineageRow>(
      `WITH h AS (
         SELECT unnest(from_json($1::JSON, '[{"hash":"VARCHAR","item":"VARCHAR","path":"VARCHAR","depth":"INTEGER","producer":"BIGINT"}]'), recursive := true))
       SELECT DISTINCT ${lineageColumns}
       FROM h JOIN artifacts a ON a.hash = h.hash
         AND (a.execution_id = h.producer
              OR (h.producer IS NULL AND a.execution_id IS NULL AND (h.item IS NULL OR a.item = h.item)
                  AND (h.path IS NULL OR a.path = h.path)))
       LEFT JOIN executions e ON e.id = a.execution_id
       ORDER BY depth, execution_id DESC NULLS LAST, a.item, a.port`,
      [JSON.stringify(ancestors)]
    )
    return { hash: artifact.hash, rows }
  })
}

/**
 * Returns the artifact itself at depth 0 and the outputs of every execution that read it,
 * or read an output of such an execution, nearest first. It follows the producer recorded
 * with each read, so executions that read equal bytes made elsewhere are left out. A source
 * file given by its path counts only the executions that read that path.
 */
async function downstreamRows(session: WorkspaceSession, artifact: ArtifactRef): Promise<Array<LineageRow>> {
  const itself = await session.db.all<LineageRow>(
    `SELECT DISTINCT ${lineageColumns}
     FROM (SELECT 0 AS depth) h, artifacts a LEFT JOIN executions e ON e.id = a.execution_id
     WHERE a.hash = $1 AND ($2::VARCHAR IS NULL OR a.path = $2)
     ORDER BY a.stage, a.item, a.port`,
    [artifact.hash, artifact.sourcePath]
  )
  const recorded = await recordedLineageColumns(session)
  if (!recorded.producer) {
    // A workspace last written by an older version has no producers to follow, and opened
    // read-only it may keep a downstream_of macro that loops on cycles. So it gets a
    // closure over bare hashes that ends on them.
    const older = await session.db.all<LineageRow>(
      `WITH RECURSIVE h(hash, depth) USING KEY (hash) AS (
         SELECT $1, 0
         UNION
         SELECT e.output_hash, min(h.depth) + 1 FROM h JOIN lineage_edges e ON e.input_hash = h.hash
         WHERE NOT EXISTS (SELECT 1 FROM recurring.h r WHERE r.hash = e.output_hash)
         GROUP BY e.output_hash)
       SELECT DISTINCT ${lineageColumns}
       FROM h JOIN artifacts a ON a.hash = h.hash LEFT JOIN executions e ON e.id = a.execution_id
       WHERE h.depth > 0
       ORDER BY depth, a.stage, a.item, a.port`,
      [artifact.hash]
    )
    return [...itself, ...older]
  }
  const pathFilter = recorded.path ? "AND ($2::VARCHAR IS NULL OR l.path IS NULL OR l.path = $2)" : ""
  const descendants = await session.db.all<LineageRow>(
    `WITH RECURSIVE h(execution_id, depth) USING KEY (execution_id) AS (
       SELECT DISTINCT l.execution_id, 1 FROM lineage l WHERE l.hash = $1 ${pathFilter}
       UNION
       SELECT i.execution_id, min(h.depth) + 1 FROM h JOIN execution_inputs i ON i.producer = h.execution_id
       WHERE NOT EXISTS (SELECT 1 FROM recurring.h r WHERE r.execution_id = i.execution_id)
       GROUP BY i.execution_id)
     SELECT DISTINCT ${lineageColumns}
     FROM h JOIN artifacts a ON a.execution_id = h.execution_id LEFT JOIN executions e ON e.id = a.execution_id
     WHERE a.hash <> $1
     ORDER BY depth, a.stage, a.item, a.port`,
    pathFilter === "" ? [artifact.hash] : [artifact.hash, artifact.sourcePath]
  )
  return [...itself, ...descendants]
}

/**
 * Returns which of the lineage table's later columns, `producer` and `path`, the workspace
 * has. A workspace last written by an older version, opened read-only, may lack them.
 */
async function recordedLineageColumns(session: WorkspaceSession): Promise<{ producer: boolean; path: boolean }> {
  const rows = await session.db.all<{ column_name: string }>(
    "SELECT column_name FROM information_schema.columns WHERE table_name = 'lineage' AND column_name IN ('producer', 'path')"
  )
  const names = rows.map((row) => row.column_name)
  return { producer: names.includes("producer"), path: names.includes("path") }
}

/** An artifact reached by upstream lineage, with the execution chosen as its producer. */
interface Ancestor {
  readonly hash: string
  /** The item whose input it was, which keeps source files of equal content apart. */
  readonly item: string | null
  /** The path a source file was read from, when recorded; equal content can lie at several paths. */
  readonly path: string | null
  readonly depth: number
  readonly producer: number | null
}

/**
 * An artifact still to be traced: the execution that read it, the run that execution ran
 * in, and the producer recorded with the read (null for a source file or an older record).
 */
interface Pending {
  readonly hash: string
  readonly item: string | null
  readonly path: string | null
  readonly consumer: number | null
  readonly run: string | null
  readonly producer: number | null
}

/**
 * Walks from `hash` to its sources one generation at a time, choosing one producer per
 * read (see `lineage`). Each artifact of each item and producer is traced once, at its
 * smallest depth, so content that an execution reads and writes again does not loop.
 */
async function upstreamAncestors(session: WorkspaceSession, hash: string, runId: string | null): Promise<Array<Ancestor>> {
  const recorded = await recordedLineageColumns(session)
  const producerColumn = recorded.producer ? "producer::INTEGER" : "NULL::INTEGER"
  const pathColumn = recorded.path ? "path" : "NULL::VARCHAR"
  const found = new Map<string, Ancestor>()
  let pending: Array<Pending> = [{ hash, item: null, path: null, consumer: null, run: runId, producer: null }]
  for (let depth = 0; pending.length > 0; depth++) {
    const hashes = [...new Set(pending.map((entry) => entry.hash))]
    const candidates = await session.db.all<Candidate>(
      `SELECT a.hash, a.item, a.execution_id::INTEGER AS execution_id, e.run_id,
              list(DISTINCT t.run_id) FILTER (WHERE t.run_id IS NOT NULL) AS runs
       FROM artifacts a JOIN executions e ON e.id = a.execution_id AND e.status = 'ok'
       LEFT JOIN run_tasks t ON t.execution_id = a.execution_id
       WHERE list_contains(from_json($1::JSON, '["VARCHAR"]'), a.hash)
       GROUP BY ALL`,
      [JSON.stringify(hashes)]
    )
    const producers: Array<Candidate> = []
    for (const entry of pending) {
      // A read with a recorded path was of a source file, whatever else has the same bytes.
      const producer = entry.path !== null ? null : chooseProducer(candidates.filter((c) => c.hash === entry.hash), entry)
      // Equal content can come from two producers on two paths (a reused split made from
      // an earlier case file), so each producer of an artifact is listed and traced once.
      const key = `${keyOf(entry)}\u0000${producer?.execution_id ?? ""}`
      if (found.has(key)) continue
      found.set(key, { hash: entry.hash, item: entry.item, path: entry.path, depth, producer: producer?.execution_id ?? null })
      if (producer !== null && !producers.includes(producer)) producers.push(producer)
    }
    if (producers.length === 0) break
    const inputs = await session.db.all<{ execution_id: number; hash: string; item: string | null; producer: number | null; path: string | null }>(
      `SELECT DISTINCT execution_id::INTEGER AS execution_id, hash, item, ${producerColumn} AS producer, ${pathColumn} AS path FROM lineage
       WHERE list_contains(from_json($1::JSON, '["BIGINT"]'), execution_id)`,
      [JSON.stringify(producers.map((producer) => producer.execution_id))]
    )
    const consumers = new Map(producers.map((producer) => [producer.execution_id, producer]))
    pending = inputs.map((input) => ({
      hash: input.hash,
      item: input.item,
      path: input.path,
      consumer: input.execution_id,
      run: consumers.get(input.execution_id)!.run_id,
      producer: input.producer
    }))
  }
  return [...found.values()]
}

/** An execution that wrote an artifact, with the run it ran in and every run that used it. */
interface Candidate {
  readonly hash: string
  readonly item: string | null
  readonly execution_id: number
  readonly run_id: string
  readonly runs: Array<string> | null
}

const keyOf = (artifact: { readonly hash: string; readonly item: string | null; readonly path: string | null }) =>
  `${artifact.hash}\u0000${artifact.item ?? ""}\u0000${artifact.path ?? ""}`

/**
 * Picks the producer recorded with the read when it is known. Otherwise, it picks the
 * producer that the consuming run used, else the newest that started before the consumer,
 * else the newest. Producers of the same item come first.
 */
function chooseProducer(all: ReadonlyArray<Candidate>, entry: Pending): Candidate | null {
  const recorded = all.find((c) => c.execution_id === entry.producer)
  if (recorded !== undefined) return recorded
  const sameItem = all.filter((c) => c.item === entry.item)
  const candidates = sameItem.length > 0 ? sameItem : all
  const newest = (list: ReadonlyArray<Candidate>) =>
    list.reduce<Candidate | null>((best, c) => (best === null || c.execution_id > best.execution_id ? c : best), null)
  const inRun = entry.run === null ? [] : candidates.filter((c) => (c.runs ?? []).includes(entry.run!))
  if (inRun.length > 0) return newest(inRun)
  const consumer = entry.consumer
  const earlier = consumer === null ? [] : candidates.filter((c) => c.execution_id < consumer)
  return newest(earlier) ?? newest(candidates)
}

const readOnlyStatement = /^\s*(select|with|describe|show|explain|summarize|from|pragma\s+(table_info|show)|values)\b/i

/** Run one read-only SQL statement and return its column names and rows. */
export function query(workspace: string, sql: string): Promise<{ columns: Array<string>; rows: Array<Record<string, unknown>> }> {
  if (!readOnlyStatement.test(sql)) throw new QueryNotReadOnly({ sql })
  return withRead(workspace, async (session) => {
    const rows = await session.db.all(sql)
    return { columns: rows[0] === undefined ? [] : Object.keys(rows[0]), rows }
  })
}

/** Pin a run so `gc` keeps every object it uses. */
export async function pinRun(workspace: string, runId: string, options: OpenOptions = {}): Promise<void> {
  const session = await openForWrite(workspace, options)
  try {
    const runs = await session.db.all<{ id: string }>("SELECT id FROM runs WHERE id = $1", [runId])
    if (runs.length === 0) {
      const known = await session.db.all<{ id: string }>("SELECT id FROM runs ORDER BY started DESC LIMIT 10")
      throw new UnknownName({ kind: "run", name: runId, known: known.map((r) => r.id) })
    }
    await session.db.run("INSERT OR REPLACE INTO pins VALUES ($1, now())", [runId])
  } finally {
    await session.close()
  }
}

export interface GcResult {
  readonly keptRuns: ReadonlyArray<string>
  readonly removedObjects: ReadonlyArray<string>
  readonly removedRunDirs: ReadonlyArray<string>
  readonly removedViews: ReadonlyArray<string>
  readonly keptObjects: number
}

/** Remove `views/<hash>` folders that no remaining `runs/<id>/<stage>` link points at. */
async function removeUnusedViews(session: WorkspaceSession, dryRun: boolean, removedRuns: ReadonlySet<string>): Promise<Array<string>> {
  if (!existsSync(session.ws.views)) return []
  const used = new Set<string>()
  if (existsSync(session.ws.runs)) {
    for (const id of await readdir(session.ws.runs)) {
      if (removedRuns.has(id)) continue
      for (const stage of await readdir(join(session.ws.runs, id))) {
        const target = await readlink(join(session.ws.runs, id, stage)).catch(() => null)
        if (target !== null) used.add(basename(target))
      }
    }
  }
  const removed: Array<string> = []
  for (const name of await readdir(session.ws.views)) {
    if (used.has(name)) continue
    removed.push(name)
    if (!dryRun) await rm(join(session.ws.views, name), { recursive: true, force: true })
  }
  return removed
}

/**
 * Remove every object that neither the newest `keepRuns` runs, the run `latest` points at,
 * nor a pinned run uses, the `runs/<id>` link folders of other runs, and the views only
 * those runs used. `latest` stays on the study while predict runs are added, so it may be
 * older than the newest runs. Database records stay, so lineage remains queryable, and a
 * cache entry whose object was removed is rerun when next needed.
 */
export async function collectGarbage(
  workspace: string,
  options: OpenOptions & { readonly keepRuns?: number; readonly dryRun?: boolean } = {}
): Promise<GcResult> {
  const keepRuns = options.keepRuns ?? 5
  if (!Number.isInteger(keepRuns) || keepRuns < 0) {
    throw new InvalidFlag({ flag: "--keep", value: String(keepRuns), expected: "an integer of at least 0" })
  }
  const session = await openForWrite(workspace, { ...options, keepStamp: options.dryRun === true })
  try {
    // Interrupted runs do not count towards keepRuns. Those newer than the newest finished
    // run are kept as well, because a rerun resumes from their committed tasks.
    const keptRuns = `
      SELECT id FROM (SELECT id FROM runs WHERE status <> 'interrupted' ORDER BY started DESC, id DESC LIMIT $1)
      UNION SELECT id FROM runs
        WHERE status = 'interrupted'
          AND started > coalesce((SELECT max(started) FROM runs WHERE status <> 'interrupted'), '-infinity'::TIMESTAMPTZ)
      UNION SELECT run_id FROM pins`
    const keptIds = (await session.db.all<{ id: string }>(keptRuns, [keepRuns])).map((row) => row.id)
    const latest = await latestRunDir(session.ws)
    const latestId = latest === null ? null : basename(latest)
    if (latestId !== null && !keptIds.includes(latestId)) keptIds.push(latestId)
    const reachable = new Set((await session.db.all<{ path: string }>(
      `SELECT DISTINCT a.path FROM run_tasks t JOIN artifacts a ON a.execution_id = t.execution_id
       WHERE list_contains(from_json($1::JSON, '["VARCHAR"]'), t.run_id)`,
      [JSON.stringify(keptIds)]
    )).map((r) => r.path))

    const removedObjects: Array<string> = []
    if (existsSync(session.ws.objects)) {
      for (const prefix of await readdir(session.ws.objects)) {
        for (const name of await readdir(join(session.ws.objects, prefix))) {
          const relativePath = `objects/${prefix}/${name}`
          if (reachable.has(relativePath)) continue
          removedObjects.push(relativePath)
          if (options.dryRun !== true) {
            const path = join(session.ws.root, relativePath)
            await makeWritable(path)
            await rm(path, { recursive: true, force: true })
          }
        }
      }
    }

    const removedRunDirs: Array<string> = []
    if (existsSync(session.ws.runs)) {
      for (const id of await readdir(session.ws.runs)) {
        if (keptIds.includes(id)) continue
        removedRunDirs.push(id)
        if (options.dryRun !== true) await rm(join(session.ws.runs, id), { recursive: true, force: true })
      }
    }
    const removedViews = await removeUnusedViews(session, options.dryRun === true, new Set(removedRunDirs))
    return { keptRuns: keptIds, removedObjects, removedRunDirs, removedViews, keptObjects: reachable.size }
  } finally {
    await session.close()
  }
}
