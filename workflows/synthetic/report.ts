/**
 * Synthetic whole stage: collects every item's stats into one report and a folder of
 * per-item text files, and emits one metrics row per item.
 */
import { readFile, writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stage from "../../src/runtime/stage.ts"

export const report = Stage.make({
  name: "report",
  module: import.meta.url,
  params: Schema.Struct({
    title: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed("synthetic report")))
  }),
  inputs: { stats: Stage.outputMap("stats", "stats") },
  outputs: { summary: Stage.file(".json"), pages: Stage.directory() },
  run: (ctx) =>
    Effect.gen(function* () {
      const items = Object.keys(ctx.inputs.stats).sort()
      const rows: Array<{ item: string; sum: number; count: number }> = []
      for (const item of items) {
        const text = yield* Effect.promise(() => readFile(ctx.inputs.stats[item]!.path, "utf8"))
        const parsed = JSON.parse(text) as { sum: number; count: number }
        rows.push({ item, sum: parsed.sum, count: parsed.count })
        yield* Effect.promise(() => writeFile(join(ctx.outputs.pages, `${item}.txt`), `${item}: ${parsed.sum}\n`))
      }
      const total = rows.reduce((a, r) => a + r.sum, 0)
      yield* Effect.promise(() => writeFile(ctx.outputs.summary, JSON.stringify({ title: ctx.params.title, total, rows })))
      ctx.emit("metrics", rows.map((r) => ({ name: "sum", value: r.sum, item: r.item })))
    })
})
