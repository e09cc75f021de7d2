/**
 * Synthetic per-item stage: multiplies every number of an item's file by `factor`.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stage from "../../src/runtime/stage.ts"
import { readNumbers, testDelay, writeNumbers } from "./numbers.ts"

/** Raised for the item named by `OCTFLOW_SYNTHETIC_FAIL`, so tests can fail one item on purpose. */
export class InjectedFailure extends Data.TaggedError("InjectedFailure")<{ readonly item: string }> {
  override get message() {
    return `item ${this.item} failed because OCTFLOW_SYNTHETIC_FAIL names it`
  }
}

export const scale = Stage.make({
  name: "scale",
  module: import.meta.url,
  params: Schema.Struct({
    factor: Schema.Number.pipe(Schema.withDecodingDefaultKey(Effect.succeed(2)))
  }),
  forEach: "numbers",
  inputs: { numbers: Stage.source("numbers") },
  outputs: { scaled: Stage.file(".txt") },
  run: (ctx) =>
    Effect.gen(function* () {
      if (process.env.OCTFLOW_SYNTHETIC_FAIL === ctx.item) return yield* new InjectedFailure({ item: ctx.item })
      const values = yield* Effect.promise(() => readNumbers(ctx.inputs.numbers.files[0]!.path))
      yield* Effect.promise(() => writeNumbers(ctx.outputs.scaled, values.map((v) => v * ctx.params.factor)))
      ctx.progress(1, 1)
      yield* Effect.promise(testDelay)
    })
})
