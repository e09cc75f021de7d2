/**
 * Stages and a workflow for the item-selection tests: `copy` copies each text file of the
 * source, `choose` lists the items whose text starts with "keep", and `gather` joins the
 * copies of the chosen items only, through `outputMap(..., { itemsFrom })`.
 */
import { readdir, readFile, writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stage from "../../src/runtime/stage.ts"
import * as Workflow from "../../src/runtime/workflow.ts"

const texts: Stage.Source = {
  name: "texts",
  discover: ({ dataDir }) =>
    Effect.tryPromise(async () => {
      const names = (await readdir(dataDir!)).filter((name) => name.endsWith(".txt")).sort()
      return names.map((name) => ({ key: name.replace(/\.txt$/, ""), files: [join(dataDir!, name)], meta: {} }))
    })
}

export const copy = Stage.make({
  name: "copy",
  module: import.meta.url,
  params: Schema.Struct({}),
  forEach: "texts",
  inputs: { text: Stage.source("texts") },
  outputs: { out: Stage.file(".txt") },
  run: (ctx) => Effect.promise(async () => writeFile(ctx.outputs.out, await readFile(ctx.inputs.text.files[0]!.path)))
})

export const choose = Stage.make({
  name: "choose",
  module: import.meta.url,
  params: Schema.Struct({}),
  inputs: { copies: Stage.outputMap("copy", "out") },
  outputs: { list: Stage.file(".json") },
  run: (ctx) =>
    Effect.promise(async () => {
      const keys: Array<string> = []
      for (const [key, ref] of Object.entries(ctx.inputs.copies)) {
        if ((await readFile(ref.path, "utf8")).startsWith("keep")) keys.push(key)
      }
      // A file "extra.txt" with text "unknown" adds a key that no item has.
      if (Object.keys(ctx.inputs.copies).includes("extra")) keys.push("no-such-item")
      await writeFile(ctx.outputs.list, JSON.stringify(keys.sort()))
    })
})

export const gather = Stage.make({
  name: "gather",
  module: import.meta.url,
  params: Schema.Struct({}),
  inputs: {
    list: Stage.output("choose", "list"),
    copies: Stage.outputMap("copy", "out", { itemsFrom: { input: "list", select: (text) => JSON.parse(text) as Array<string> } })
  },
  outputs: { joined: Stage.file(".txt") },
  run: (ctx) =>
    Effect.promise(async () => {
      const parts = await Promise.all(Object.keys(ctx.inputs.copies).sort().map((key) => readFile(ctx.inputs.copies[key]!.path, "utf8")))
      await writeFile(ctx.outputs.joined, parts.join("|"))
    })
})

export const selection = Workflow.make({ name: "selection", sources: { texts }, stages: [copy, choose, gather], seed: 1 })
