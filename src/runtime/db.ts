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
-- The selected stages in plan order, each with its number of tasks, written when the run starts.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS stages JSON;
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
-- The path a source file was read from; null for an artifact and for runs before it was recorded.
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS path VARCHAR;
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

-- One edge per (input artifact, output artifact) of an execution, with the execution that
-- produced the input (producer; null for a source file and for older records).
CREATE OR REPLACE VIEW lineage_edges AS
  SELECT l.hash AS input_hash, a.hash AS output_hash, l.execution_id, e.stage, e.item, l.input, a.port, l.producer
  FROM lineage l
  JOIN artifacts a ON a.execution_id = l.execution_id
  JOIN executions e ON e.id = l.execution_id;

-- Each execution's inputs with the execution that produced each one: the producer recorded
-- with the read, else, for records made before producers were, every successful execution
-- that wrote that hash. A source file (a read with a recorded path) has producer -1.
CREATE OR REPLACE VIEW execution_inputs AS
  SELECT l.execution_id, l.hash, l.producer FROM lineage l WHERE l.producer IS NOT NULL
  UNION ALL
  SELECT l.execution_id, l.hash, -1 AS producer FROM lineage l WHERE l.producer IS NULL AND l.path IS NOT NULL
  UNION ALL
  SELECT l.execution_id, l.hash, coalesce(p.execution_id, -1) AS producer
  FROM lineage l
  LEFT JOIN (SELECT DISTINCT a.hash, a.execution_id FROM artifacts a JOIN executions x ON x.id = a.execution_id AND x.status = 'ok') p
    ON p.hash = l.hash
  WHERE l.producer IS NULL AND l.path IS NULL;

-- Every ancestor of every artifact, with the shortest distance in executions. The closure
-- follows producing executions, not bare hashes, so two executions that wrote equal bytes
-- from different inputs do not mix their ancestors. Equal content can also be read and
-- written again (an empty mask predicted inside an empty ROI), so each (artifact, ancestor,
-- producer) is kept once, at its first depth (USING KEY), later steps skip those already
-- found, and no artifact is its own ancestor.
CREATE OR REPLACE VIEW lineage_upstream AS
  WITH RECURSIVE up(artifact, ancestor, producer, depth) USING KEY (artifact, ancestor, producer) AS (
    SELECT DISTINCT a.hash, i.hash, i.producer, 1
    FROM artifacts a JOIN execution_inputs i ON i.execution_id = a.execution_id
    WHERE i.hash <> a.hash
    UNION
    SELECT up.artifact, i.hash, i.producer, min(up.depth) + 1
    FROM up JOIN execution_inputs i ON i.execution_id = up.producer
    WHERE i.hash <> up.artifact
      AND NOT EXISTS (
        SELECT 1 FROM recurring.up r WHERE r.artifact = up.artifact AND r.ancestor = i.hash AND r.producer = i.producer)
    GROUP BY up.artifact, i.hash, i.producer
  )
  SELECT artifact, ancestor, min(depth) AS depth FROM up GROUP BY artifact, ancestor;

-- Every descendant of every artifact: the same closure seen from the other end.
CREATE OR REPLACE VIEW lineage_downstream AS
  SELECT ancestor AS artifact, artifact AS descendant, depth FROM lineage_upstream;

-- Table macros for one artifact, cheaper than filtering the full closure views, with the
-- same rules.
CREATE OR REPLACE MACRO upstream_of(h) AS TABLE
  WITH RECURSIVE up(hash, producer, depth) USING KEY (hash, producer) AS (
    SELECT DISTINCT i.hash, i.producer, 1
    FROM artifacts a JOIN execution_inputs i ON i.execution_id = a.execution_id
    WHERE a.hash = h AND i.hash <> h
    UNION
    SELECT i.hash, i.producer, min(up.depth) + 1
    FROM up JOIN execution_inputs i ON i.execution_id = up.producer
    WHERE i.hash <> h
      AND NOT EXISTS (SELECT 1 FROM recurring.up r WHERE r.hash = i.hash AND r.producer = i.producer)
    GROUP BY i.hash, i.producer
  )
  SELECT hash, min(depth) AS depth FROM up GROUP BY hash;
-- Starts from every execution that read h, then follows the executions that read their outputs.
CREATE OR REPLACE MACRO downstream_of(h) AS TABLE
  WITH RECURSIVE down(execution_id, depth) USING KEY (execution_id) AS (
    SELECT DISTINCT l.execution_id, 1 FROM lineage l WHERE l.hash = h
    UNION
    SELECT i.execution_id, min(down.depth) + 1
    FROM down JOIN execution_inputs i ON i.producer = down.execution_id
    WHERE NOT EXISTS (SELECT 1 FROM recurring.down r WHERE r.execution_id = i.execution_id)
    GROUP BY i.execution_id
  )
  SELECT a.hash, min(d.depth) AS depth FROM down d JOIN artifacts a ON a.execution_id = d.execution_id
  WHERE a.hash <> h GROUP BY a.hash;

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
