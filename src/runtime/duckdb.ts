/**
 * The few DuckDB calls that every run makes, on @duckdb/node-bindings (DuckDB's C API for
 * Node) directly: open, statements with parameters, one VARCHAR result, and the appender.
 * @duckdb/node-api, which converts results of any type, is some 360 KB of JavaScript.
 * Bundled, it took about 25 ms longer to load than the bindings alone (Node 20, two cores
 * of an AMD EPYC), so db.ts loads it only for queries whose rows it must convert.
 */
import { createRequire } from "node:module"
import type * as Bindings from "@duckdb/node-bindings"

export type SqlValue = string | number | bigint | boolean | null

export type Connection = Bindings.Connection
export type Database = Bindings.Database

// The package sets module.exports to the native binding at run time, which Node's ES module
// loader cannot list as named exports, so it is loaded with require.
const duckdb = createRequire(import.meta.url)("@duckdb/node-bindings") as typeof Bindings

/** Open the database file at `path` and one connection to it. */
export async function openDatabase(path: string, readOnly: boolean): Promise<{ database: Database; connection: Connection }> {
  const config = duckdb.create_config()
  if (readOnly) duckdb.set_config(config, "access_mode", "READ_ONLY")
  const database = await duckdb.open(path, config)
  try {
    return { database, connection: await duckdb.connect(database) }
  } catch (error) {
    duckdb.close_sync(database)
    throw error
  }
}

/** Open another connection to `database`. Statements on different connections run in parallel. */
export function connect(database: Database): Promise<Connection> {
  return duckdb.connect(database)
}

export function closeDatabase(database: Database, connections: ReadonlyArray<Connection>): void {
  for (const connection of connections) duckdb.disconnect_sync(connection)
  duckdb.close_sync(database)
}

/**
 * Bind a parameter with the type that @duckdb/node-api would infer, so SQL behaves the
 * same with both: INTEGER or BIGINT for integers, DOUBLE for other numbers, HUGEINT for
 * bigints. DuckDB numbers parameters from 1.
 */
function bind(statement: Bindings.PreparedStatement, index: number, value: SqlValue): void {
  if (value === null) duckdb.bind_null(statement, index)
  else if (typeof value === "string") duckdb.bind_varchar(statement, index, value)
  else if (typeof value === "boolean") duckdb.bind_boolean(statement, index, value)
  else if (typeof value === "bigint") duckdb.bind_hugeint(statement, index, value)
  else if (!Number.isInteger(value)) duckdb.bind_double(statement, index, value)
  else if (value >= -2_147_483_648 && value <= 2_147_483_647) duckdb.bind_int32(statement, index, value)
  else duckdb.bind_int64(statement, index, BigInt(value))
}

/**
 * Run `sql` and return its materialized result. Without values, `sql` may contain several
 * statements, and the result is the last one's. With values, it must be one statement.
 */
export async function execute(connection: Connection, sql: string, values: ReadonlyArray<SqlValue> = []): Promise<Bindings.Result> {
  if (values.length === 0) return duckdb.query(connection, sql)
  const statement = await duckdb.prepare(connection, sql)
  try {
    values.forEach((value, index) => bind(statement, index + 1, value))
    return await duckdb.execute_prepared(statement)
  } finally {
    duckdb.destroy_prepare_sync(statement)
  }
}

const decoder = new TextDecoder()

/**
 * Return the first row's first column of a VARCHAR result, or null when there is no row
 * or the value is NULL. DuckDB stores a string of up to 12 bytes inside its 16-byte
 * vector entry, after the length, and a longer one behind a pointer at offset 8.
 */
export function firstVarchar(result: Bindings.Result): string | null {
  if (duckdb.result_chunk_count(result) === 0) return null
  const chunk = duckdb.result_get_chunk(result, 0)
  if (duckdb.data_chunk_get_size(chunk) === 0) return null
  const vector = duckdb.data_chunk_get_vector(chunk, 0)
  // The validity mask is null when every value is valid, which its declared type leaves out.
  const validity = duckdb.vector_get_validity(vector, 8) as Uint8Array | null
  if (validity !== null && (validity[0]! & 1) === 0) return null
  const entry = duckdb.vector_get_data(vector, 16)
  const length = new DataView(entry.buffer, entry.byteOffset, 16).getUint32(0, true)
  const bytes = length <= 12
    ? entry.subarray(4, 4 + length)
    : duckdb.get_data_from_pointer(entry.buffer as ArrayBuffer, entry.byteOffset + 8, length)
  return decoder.decode(bytes)
}

/**
 * Append rows to `table` with DuckDB's appender, in column order. A JS number is appended
 * as BIGINT when it is an integer and as DOUBLE otherwise, and DuckDB casts it to the
 * column type.
 */
export function appendRows(connection: Connection, table: string, rows: ReadonlyArray<ReadonlyArray<SqlValue>>): void {
  const appender = duckdb.appender_create_ext(connection, null, null, table)
  for (const row of rows) {
    for (const value of row) {
      if (value === null) duckdb.append_null(appender)
      else if (typeof value === "string") duckdb.append_varchar(appender, value)
      else if (typeof value === "bigint") duckdb.append_int64(appender, value)
      else if (typeof value === "boolean") duckdb.append_bool(appender, value)
      else if (Number.isInteger(value)) duckdb.append_int64(appender, BigInt(value))
      else duckdb.append_double(appender, value)
    }
    duckdb.appender_end_row(appender)
  }
  duckdb.appender_close_sync(appender)
}
