/**
 * Stages and workflows for the run-time artifact tests: `producer` writes a text "model"
 * and its notes, and `consumer` reads one model chosen by hash when the run starts.
 */
import { readFile, writeFile } from "node:fs/promises"
import { Effect, Schema } from "effect"
import * as Stage from "../../src/runtime/stage.ts"
import * as Workflow from "../../src/runtime/workflow.ts"

export const make = Stage.make({
  name: "make",
  module: import.meta.url,
  params: Schema.Struct({ text: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed("model-v1"))) }),
  inputs: {},
  outputs: { model: Stage.file(".txt"), notes: Stage.file(".txt") },
  run: (ctx) =>
    Effect.promise(async () => {
      await writeFile(ctx.outputs.model, ctx.params.text)
      await writeFile(ctx.outputs.notes, `notes on ${ctx.params.text}`)
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

export const producer = Workflow.make({ name: "producer", sources: {}, stages: [make], seed: 1 })

export const consumer = Workflow.make({ name: "consumer", sources: {}, stages: [consume], seed: 1 })
