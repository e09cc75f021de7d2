/**
 * Synthetic per-item stage: sum and count of an item's scaled numbers, plus `offset`.
 */
import { writeFile } from "node:fs/promises"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stage from "../../src/runtime/stage.ts"
import { readNumbers } from "./numbers.ts"

export const stats = Stage.make({
  name: "stats",
  module: import.meta.url,
  params: Schema.Struct({
    offset: Schema.Number.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0)))
  }),
  forEach: "scale",
  inputs: { scaled: Stage.output("scale", "scaled") },
  outputs: { stats: Stage.file(".json") },
  run: (ctx) =>
    Effect.gen(function* () {
      const values = yield* Effect.promise(() => readNumbers(ctx.inputs.scaled.path))
      const sum = values.reduce((a, b) => a + b, 0) + ctx.params.offset
      const body = JSON.stringify({ item: ctx.item, count: values.length, sum })
      yield* Effect.promise(() => writeFile(ctx.outputs.stats, body))
    })
})
