/**
 * Number-list text format of the synthetic workflow: one decimal number per line.
 */
import { readFile, writeFile } from "node:fs/promises"

export async function readNumbers(path: string): Promise<Array<number>> {
  const text = await readFile(path, "utf8")
  return text.split("\n").filter((line) => line.trim() !== "").map(Number)
}

export async function writeNumbers(path: string, values: ReadonlyArray<number>): Promise<void> {
  await writeFile(path, values.map((v) => `${v}\n`).join(""))
}

/** Wait `OCTFLOW_SYNTHETIC_SLEEP_MS` milliseconds when set; tests use it to kill a run mid-stage. */
export async function testDelay(): Promise<void> {
  const ms = Number(process.env.OCTFLOW_SYNTHETIC_SLEEP_MS ?? "0")
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms))
}
