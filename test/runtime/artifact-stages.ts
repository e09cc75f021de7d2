/**
 * Stages and workflows for the run-time artifact tests: `producer` writes a text "model"
 * and its notes, `consumer` reads one model chosen by hash when the run starts, and
 * `copier` writes that model again unchanged.
 */
import { copyFile, readFile, writeFile } from "node:fs/promises"
import { Effect, Schema } from "effect"
import * as Stage from "../../src/runtime/stage.ts"
import * as Workflow from "../../src/runtime/workflow.ts"

export const make = Stage.make({
  name: "make",
  module: import.meta.url,
  params: Schema.Struct({
    text: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed("model-v1"))),
    /** Written to the notes only, so two settings can make the same model bytes. */
    remark: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed("")))
  }),
  inputs: {},
  outputs: { model: Stage.file(".txt"), notes: Stage.file(".txt") },
  run: (ctx) =>
    Effect.promise(async () => {
      await writeFile(ctx.outputs.model, ctx.params.text)
      await writeFile(ctx.outputs.notes, `notes on ${ctx.params.text}${ctx.params.remark}`)
    })
})

export const consume = Stage.make({
  name: "consume",
  module: import.meta.url,
  params: Schema.Struct({}),
  inputs: { model: Stage.artifact("model", { producedBy: ["make.model"] }) },
  outputs: { out: Stage.file(".txt") },
  run: (ctx) =>
    Effect.promise(async () => {
      const text = await readFile(ctx.inputs.model.path, "utf8")
      await writeFile(ctx.outputs.out, `used ${text}`)
    })
})

/** Writes the model it reads unchanged, so its output has its input's hash. */
export const copy = Stage.make({
  name: "copy",
  module: import.meta.url,
  params: Schema.Struct({}),
  inputs: { model: Stage.artifact("model", { producedBy: ["make.model"] }) },
  outputs: { out: Stage.file(".txt") },
  run: (ctx) => Effect.promise(() => copyFile(ctx.inputs.model.path, ctx.outputs.out))
})

export const producer = Workflow.make({ name: "producer", sources: {}, stages: [make], seed: 1 })

export const consumer = Workflow.make({ name: "consumer", sources: {}, stages: [consume], seed: 1 })

export const copier = Workflow.make({ name: "copier", sources: {}, stages: [copy], seed: 1 })
