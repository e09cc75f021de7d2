/**
 * The workspace database (`<workspace>/octflow.duckdb`): schema, lineage views and a small
 * promise-based wrapper that serialises statements on one connection, so a transaction is
 * never interleaved with another statement. Only the process holding the workspace lock
 * opens it for writing; read-only commands open it with `access_mode = READ_ONLY`.
 */
import { createHash } from "node:crypto"
import type { DuckDBConnection, DuckDBValue } from "@duckdb/node-api"
import {
  appendRows, closeDatabase, connect, execute, firstVarchar, openDatabase, type Connection, type Database as Handle, type SqlValue
} from "./duckdb.ts"
import { DatabaseFailed } from "./errors.ts"

export type { SqlValue }

const schema = `
CREATE TABLE IF NOT EXISTS octflow_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
  id VARCHAR PRIMARY KEY, workflow VARCHAR, started TIMESTAMPTZ, finished TIMESTAMPTZ, status VARCHAR,
  argv JSON, profile VARCHAR, params JSON, data_dir VARCHAR, host VARCHAR, pid INTEGER, seed BIGINT,
  jobs INTEGER, node_version VARCHAR, targets JSON, summary JSON);
CREATE TABLE IF NOT EXISTS executions (
  id BIGINT PRIMARY KEY, run_id VARCHAR, stage VARCHAR, item VARCHAR, fingerprint VARCHAR, status VARCHAR,
  started TIMESTAMPTZ, duration_ms DOUBLE, error VARCHAR, code_hash VARCHAR, code_modules JSON,
  params JSON, environment JSON, inputs JSON, seed BIGINT);
CREATE TABLE IF NOT EXISTS artifacts (
  hash VARCHAR, kind VARCHAR, path VARCHAR, size BIGINT, ext VARCHAR, execution_id BIGINT,
  stage VARCHAR, port VARCHAR, item VARCHAR);
CREATE TABLE IF NOT EXISTS lineage (execution_id BIGINT, input VARCHAR, item VARCHAR, hash VARCHAR);
-- The execution whose output the input was; null for a source file and for runs before it was recorded.
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS producer BIGINT;
CREATE TABLE IF NOT EXISTS run_tasks (run_id VARCHAR, stage VARCHAR, item VARCHAR, execution_id BIGINT, action VARCHAR);
CREATE TABLE IF NOT EXISTS params (run_id VARCHAR, stage VARCHAR, key VARCHAR, value JSON, origin VARCHAR);
CREATE TABLE IF NOT EXISTS metrics (
  execution_id BIGINT, stage VARCHAR, item VARCHAR, name VARCHAR, value DOUBLE, class VARCHAR,
  epoch INTEGER, split VARCHAR);
CREATE TABLE IF NOT EXISTS slices (
  execution_id BIGINT, stage VARCHAR, item VARCHAR, image VARCHAR, vendor VARCHAR, root VARCHAR,
  slice INTEGER, irf DOUBLE, srf DOUBLE, ped DOUBLE, labelled BOOLEAN, fluid DOUBLE);
ALTER TABLE slices ADD COLUMN IF NOT EXISTS fluid DOUBLE;
CREATE TABLE IF NOT EXISTS splits (
  execution_id BIGINT, stage VARCHAR, item VARCHAR, vendor VARCHAR, side VARCHAR, fold INTEGER);
CREATE TABLE IF NOT EXISTS stat_cache (
  path VARCHAR PRIMARY KEY, dev BIGINT, ino BIGINT, size BIGINT, mtime_ns HUGEINT, sha256 VARCHAR);
CREATE TABLE IF NOT EXISTS pins (run_id VARCHAR PRIMARY KEY, pinned_at TIMESTAMPTZ);

-- One edge per (input artifact, output artifact) of an execution.
CREATE OR REPLACE VIEW lineage_edges AS
  SELECT l.hash AS input_hash, a.hash AS output_hash, l.execution_id, e.stage, e.item, l.input, a.port
  FROM lineage l
  JOIN artifacts a ON a.execution_id = l.execution_id
  JOIN executions e ON e.id = l.execution_id;

-- Every ancestor of every artifact, with the shortest distance in executions. An execution
-- can write content equal to what it read (an empty mask predicted inside an empty ROI), so
-- the graph of hashes can have cycles: each pair is kept once, at its first depth
-- (USING KEY), later steps skip pairs already found, and no artifact is its own ancestor.
CREATE OR REPLACE VIEW lineage_upstream AS
  WITH RECURSIVE up(artifact, ancestor, depth) USING KEY (artifact, ancestor) AS (
    SELECT DISTINCT output_hash, input_hash, 1 FROM lineage_edges WHERE output_hash <> input_hash
    UNION
    SELECT up.artifact, e.input_hash, min(up.depth) + 1
    FROM up JOIN lineage_edges e ON e.output_hash = up.ancestor
    WHERE e.input_hash <> up.artifact
      AND NOT EXISTS (SELECT 1 FROM recurring.up r WHERE r.artifact = up.artifact AND r.ancestor = e.input_hash)
    GROUP BY up.artifact, e.input_hash
  )
  SELECT artifact, ancestor, depth FROM up;

-- Every descendant of every artifact: the same closure seen from the other end.
CREATE OR REPLACE VIEW lineage_downstream AS
  SELECT ancestor AS artifact, artifact AS descendant, depth FROM lineage_upstream;

-- Table macros for one artifact, cheaper than filtering the full closure views. Each hash
-- is kept once, at its first depth, as in lineage_upstream.
CREATE OR REPLACE MACRO upstream_of(h) AS TABLE
  WITH RECURSIVE up(hash, depth) USING KEY (hash) AS (
    SELECT h, 0
    UNION
    SELECT e.input_hash, min(up.depth) + 1 FROM up JOIN lineage_edges e ON e.output_hash = up.hash
    WHERE NOT EXISTS (SELECT 1 FROM recurring.up r WHERE r.hash = e.input_hash)
    GROUP BY e.input_hash
  )
  SELECT hash, depth FROM up WHERE depth > 0;
CREATE OR REPLACE MACRO downstream_of(h) AS TABLE
  WITH RECURSIVE down(hash, depth) USING KEY (hash) AS (
    SELECT h, 0
    UNION
    SELECT e.output_hash, min(down.depth) + 1 FROM down JOIN lineage_edges e ON e.input_hash = down.hash
    WHERE NOT EXISTS (SELECT 1 FROM recurring.down r WHERE r.hash = e.output_hash)
    GROUP BY e.output_hash
  )
  SELECT hash, depth FROM down WHERE depth > 0;

-- The newest successful execution of each fingerprint.
CREATE OR REPLACE VIEW cache_entries AS
  SELECT * FROM executions WHERE status = 'ok'
  QUALIFY row_number() OVER (PARTITION BY stage, fingerprint ORDER BY id DESC) = 1;
`

/** SHA-256 of the schema text, stored in `octflow_meta` once the schema is applied. */
const schemaHash = createHash("sha256").update(schema).digest("hex")

/** Wrap `sql` so that DuckDB returns its rows as one JSON array in one VARCHAR value. */
const asJsonArray = (sql: string) => `SELECT to_json(list(q))::VARCHAR AS rows FROM (${sql}) q`

const parseRows = <Row>(text: string | null): Array<Row> => (text === null ? [] : (JSON.parse(text) as Array<Row>))

export class Database {
  private queue: Promise<unknown> = Promise.resolve()
  /** @duckdb/node-api's view of the same connection, created by the first `all`. */
  private converting: DuckDBConnection | null = null
  /** Second connection of `readCommittedAsJson`, opened on first use, with its own queue. */
  private reader: { readonly connection: Promise<Connection>; queue: Promise<unknown> } | null = null

  private constructor(
    readonly path: string,
    private readonly handle: Handle,
    private readonly connection: Connection
  ) {}

  /** Open (and for writing, create and migrate) the database file at `path`. */
  static async open(path: string, options: { readonly readOnly?: boolean } = {}): Promise<Database> {
    let opened: { database: Handle; connection: Connection }
    try {
      opened = await openDatabase(path, options.readOnly === true)
    } catch (cause) {
      throw new DatabaseFailed({ path, sql: "(open)", cause })
    }
    const db = new Database(path, opened.database, opened.connection)
    if (options.readOnly !== true) await db.migrate()
    return db
  }

  /**
   * Apply the schema unless the database records that this exact schema was applied.
   * Replacing the views and macros on every open would change the catalog, which the
   * checkpoint on close then writes again.
   */
  private async migrate(): Promise<void> {
    const applied = await this.allAsJson<{ value: string }>("SELECT value FROM octflow_meta WHERE key = 'schema'")
      .catch(() => [])
    if (applied[0]?.value === schemaHash) return
    await this.run(schema)
    await this.run("INSERT OR REPLACE INTO octflow_meta VALUES ('schema', $1)", [schemaHash])
  }

  /** Run statements that return nothing. */
  run(sql: string, values: ReadonlyArray<SqlValue> = []): Promise<void> {
    return this.enqueue(async () => {
      await execute(this.connection, sql, values)
    }, sql)
  }

  /**
   * Run a query and return its rows as plain JS objects (BIGINT as bigint, JSON as string).
   * The first call loads @duckdb/node-api, which converts values of every DuckDB type.
   */
  all<Row = Record<string, unknown>>(sql: string, values: ReadonlyArray<SqlValue> = []): Promise<Array<Row>> {
    return this.enqueue(async () => {
      if (this.converting === null) {
        const api = await import("@duckdb/node-api")
        // Node lists this CommonJS package's exports by name, while the CLI bundle exposes
        // them on the default export only.
        const { DuckDBConnection } = "DuckDBConnection" in api ? api : (api as unknown as { default: typeof api }).default
        this.converting = new DuckDBConnection(this.connection)
      }
      const reader = await this.converting.runAndReadAll(sql, values.length === 0 ? undefined : (values as Array<DuckDBValue>))
      return reader.getRowObjectsJS() as Array<Row>
    }, sql)
  }

  /**
   * Run a query and return its rows, in no particular order, parsed from one JSON array
   * that DuckDB builds. For thousands of rows this is several times faster than `all`, which
   * converts every value separately in JavaScript. Values follow DuckDB's JSON conversion.
   * A BIGINT becomes a number, exact only up to 2^53, so cast wider integers to VARCHAR in
   * `sql`. A JSON column becomes its parsed value, not a string.
   */
  allAsJson<Row = Record<string, unknown>>(sql: string, values: ReadonlyArray<SqlValue> = []): Promise<Array<Row>> {
    return this.enqueue(async () => parseRows<Row>(firstVarchar(await execute(this.connection, asJsonArray(sql), values))), sql)
  }

  /**
   * Run `allAsJson` on a second connection, so the query runs in parallel with the
   * statements queued here. It reads only committed data, never the writes of an open
   * transaction.
   */
  readCommittedAsJson<Row = Record<string, unknown>>(sql: string, values: ReadonlyArray<SqlValue> = []): Promise<Array<Row>> {
    const reader = (this.reader ??= { connection: connect(this.handle), queue: Promise.resolve() })
    const task = async () => parseRows<Row>(firstVarchar(await execute(await reader.connection, asJsonArray(sql), values)))
    const next = reader.queue.then(task, task).catch((cause: unknown) => this.rethrow(cause, sql))
    reader.queue = next.catch(() => undefined)
    return next
  }

  /** Run `body` inside one transaction; statements it issues go through `tx`, not `this`. */
  transaction<A>(body: (tx: Transaction) => Promise<A>): Promise<A> {
    return this.enqueue(async () => {
      await execute(this.connection, "BEGIN TRANSACTION")
      try {
        const result = await body(new Transaction(this.connection, this.path))
        await execute(this.connection, "COMMIT")
        return result
      } catch (error) {
        await execute(this.connection, "ROLLBACK")
        throw error
      }
    }, "(transaction)")
  }

  /**
   * Close the connection and the database once every queued statement has finished, so a
   * query started early and never awaited (after an error elsewhere) cannot outlive it.
   */
  async close(): Promise<void> {
    await this.queue
    const connections = [this.connection]
    if (this.reader !== null) {
      await this.reader.queue
      const reader = await this.reader.connection.catch(() => null)
      if (reader !== null) connections.push(reader)
    }
    closeDatabase(this.handle, connections)
  }

  private enqueue<A>(task: () => Promise<A>, sql: string): Promise<A> {
    const next = this.queue.then(task, task).catch((cause: unknown) => this.rethrow(cause, sql))
    this.queue = next.catch(() => undefined)
    return next
  }

  /** Rethrow a failed statement's error as DatabaseFailed, unless it is tagged already. */
  private rethrow(cause: unknown, sql: string): never {
    if (cause instanceof DatabaseFailed || isTagged(cause)) throw cause
    throw new DatabaseFailed({ path: this.path, sql, cause })
  }
}

const isTagged = (value: unknown) => typeof value === "object" && value !== null && "_tag" in value

/** Statements inside a transaction; run in order on the transaction's connection. */
export class Transaction {
  constructor(private readonly connection: Connection, private readonly path: string) {}

  async run(sql: string, values: ReadonlyArray<SqlValue> = []): Promise<void> {
    try {
      await execute(this.connection, sql, values)
    } catch (cause) {
      throw new DatabaseFailed({ path: this.path, sql, cause })
    }
  }

  /** Append many rows in column order with DuckDB's appender (see appendRows), far faster than VALUES statements. */
  async append(table: string, rows: ReadonlyArray<ReadonlyArray<SqlValue>>): Promise<void> {
    if (rows.length === 0) return
    try {
      appendRows(this.connection, table, rows)
    } catch (cause) {
      throw new DatabaseFailed({ path: this.path, sql: `(append to ${table})`, cause })
    }
  }

  /** Insert rows in batches of multi-row VALUES statements. */
  async insert(table: string, columns: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<SqlValue>>, verb = "INSERT"): Promise<void> {
    const batch = Math.max(1, Math.floor(2000 / columns.length))
    for (let start = 0; start < rows.length; start += batch) {
      const chunk = rows.slice(start, start + batch)
      const values: Array<SqlValue> = []
      const tuples = chunk.map((row) => {
        const slots = row.map((v) => {
          values.push(v)
          return `$${values.length}`
        })
        return `(${slots.join(",")})`
      })
      await this.run(`${verb} INTO ${table} (${columns.join(",")}) VALUES ${tuples.join(",")}`, values)
    }
  }
}
