/**
 * split (whole): assigns labelled cases to train or test, stratified by vendor and seeded,
 * and deals the training cases into k folds (see src/split/split.ts). Cases without any
 * labelled B-scan can be neither trained on nor scored, so they are listed apart.
 */
import { readFile, writeFile } from "node:fs/promises"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stage from "../src/runtime/stage.ts"
import { splitCases } from "../src/split/split.ts"
import type { CaseInfo } from "./preprocess.ts"
import { attempt, attemptPromise } from "./support/effect.ts"
import { EmptySplitError } from "./support/errors.ts"

export const SplitParams = Schema.Struct({
  /** Fraction of each vendor's labelled cases held out for the test set. */
  testFraction: Schema.Number.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0.25))
  ),
  /** Folds of the training cases; train validates on one of them. */
  folds: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(4)))
})

/** Contents of the split artifact. */
export interface SplitFile {
  readonly seed: number
  readonly test: readonly string[]
  readonly train: readonly string[]
  readonly folds: readonly (readonly string[])[]
  readonly unlabelled: readonly string[]
  readonly vendors: Readonly<Record<string, string>>
}

export const readSplitFile = async (path: string): Promise<SplitFile> =>
  JSON.parse(await readFile(path, "utf8")) as SplitFile

/** The training cases (every fold) of the split that a stage's `split` input reads, for its per-case inputs. */
export const trainingCases: Stage.ItemSelection = { input: "split", select: (text) => (JSON.parse(text) as SplitFile).train }

/** The test cases of the split that a stage's `split` input reads, for its per-case inputs. */
export const testCases: Stage.ItemSelection = { input: "split", select: (text) => (JSON.parse(text) as SplitFile).test }

export const split = Stage.make({
  name: "split",
  module: import.meta.url,
  params: SplitParams,
  inputs: { info: Stage.outputMap("preprocess", "info") },
  outputs: { split: Stage.file(".json") },
  run: (ctx) =>
    Effect.gen(function* () {
      const infos: CaseInfo[] = []
      for (const key of Object.keys(ctx.inputs.info).sort()) {
        const text = yield* attemptPromise(() => readFile(ctx.inputs.info[key]!.path, "utf8"))
        infos.push(JSON.parse(text) as CaseInfo)
      }
      const labelled = infos.filter((info) => info.labelledSlices > 0)
      const result = yield* attempt(() =>
        splitCases(
          labelled.map((info) => ({ key: info.key, vendor: info.vendor })),
          { testFraction: ctx.params.testFraction, folds: ctx.params.folds, seed: ctx.seed }
        )
      )
      if (result.train.length === 0) return yield* new EmptySplitError({ side: "training", cases: labelled.length })
      if (result.test.length === 0) return yield* new EmptySplitError({ side: "test", cases: labelled.length })

      const file: SplitFile = {
        seed: ctx.seed,
        test: result.test,
        train: result.train,
        folds: result.folds,
        unlabelled: infos.filter((info) => info.labelledSlices === 0).map((info) => info.key),
        vendors: Object.fromEntries(infos.map((info) => [info.key, info.vendor]))
      }
      yield* attemptPromise(() => writeFile(ctx.outputs.split, JSON.stringify(file, null, 2)))
      const foldOf = new Map(result.folds.flatMap((members, fold) => members.map((key) => [key, fold] as const)))
      ctx.emit(
        "splits",
        infos.map((info) => ({
          item: info.key,
          vendor: info.vendor,
          side: result.test.includes(info.key) ? "test" : foldOf.has(info.key) ? "train" : "unlabelled",
          fold: foldOf.get(info.key) ?? null
        }))
      )
      ctx.log("info", "split cases", { test: result.test.length, train: result.train.length })
    })
})
