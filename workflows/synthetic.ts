/**
 * Synthetic test workflow: a source of number-list files (`<data>/*.txt`, one item per
 * file) -> `scale` (per item) -> `stats` (per item) -> `report` (whole). Tests and
 * benchmarks use it; `writeSyntheticData` creates its input files.
 */
import { mkdir, readdir, writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import type { Source } from "../src/runtime/stage.ts"
import * as Workflow from "../src/runtime/workflow.ts"
import { report } from "./synthetic/report.ts"
import { scale } from "./synthetic/scale.ts"
import { stats } from "./synthetic/stats.ts"

export const numbersSource: Source = {
  name: "numbers",
  discover: ({ dataDir }) =>
    Effect.tryPromise(async () => {
      if (dataDir === undefined) throw new Error("the synthetic workflow needs --data DIR with *.txt files")
      const names = (await readdir(dataDir)).filter((n) => n.endsWith(".txt")).sort()
      return names.map((name) => ({ key: name.replace(/\.txt$/, ""), files: [join(dataDir, name)], meta: { name } }))
    }),
  roots: ({ dataDir }) => (dataDir === undefined ? [] : [dataDir])
}

export const workflow = Workflow.make({
  name: "synthetic",
  sources: { numbers: numbersSource },
  stages: [report, stats, scale],
  profiles: { cpu: {}, paper: { scale: { factor: 3 } } },
  seed: 7
})

/** Write `count` item files `item-0000.txt`... with small integer lists into `dir`. */
export async function writeSyntheticData(dir: string, count: number): Promise<void> {
  await mkdir(dir, { recursive: true })
  await Promise.all(Array.from({ length: count }, (_, i) => {
    const key = `item-${String(i).padStart(4, "0")}`
    return writeFile(join(dir, `${key}.txt`), `${i}\n${i + 1}\n${2 * i}\n`)
  }))
}
