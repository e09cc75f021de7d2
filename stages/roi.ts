/**
 * roi (per case): the entropy ROI of every B-scan of the preprocessed volume, OR-ed with
 * the case's fluid labels and closed with a disk (see src/kernels/roi.ts). Writes a uint8
 * (0/1) MetaImage mask with the volume's spacing.
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { defaultRoiParams, roiVolume } from "../src/kernels/roi.ts"
import * as Stage from "../src/runtime/stage.ts"
import { attempt, attemptPromise } from "./support/effect.ts"
import { readMetaImage, writeMetaImage } from "../src/volume/metaimage.ts"
import type { Volume } from "../src/volume/volume.ts"

const PositiveInteger = Schema.Int.check(Schema.isGreaterThan(0))

export const RoiParams = Schema.Struct({
  /** Normalised local entropy must exceed this for a pixel to enter the ROI. */
  threshold: Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 })).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(defaultRoiParams.threshold))
  ),
  /** Radius in pixels of the disk the local entropy is computed over. */
  entropyRadius: PositiveInteger.pipe(Schema.withDecodingDefaultKey(Effect.succeed(defaultRoiParams.entropyRadius))),
  /** Radius in pixels of the disk of the binary closing. */
  closingRadius: PositiveInteger.pipe(Schema.withDecodingDefaultKey(Effect.succeed(defaultRoiParams.closingRadius)))
})

export const roi = Stage.make({
  name: "roi",
  module: import.meta.url,
  params: RoiParams,
  forEach: "preprocess",
  inputs: {
    volume: Stage.output("preprocess", "volume"),
    labels: Stage.output("preprocess", "labels")
  },
  outputs: { mask: Stage.file(".mha") },
  run: (ctx) =>
    Effect.gen(function* () {
      const volume = (yield* attemptPromise(() => readMetaImage(ctx.inputs.volume.path))) as Volume<Uint8Array>
      const labels = (yield* attemptPromise(() => readMetaImage(ctx.inputs.labels.path))) as Volume<Uint8Array>
      ctx.progress(0, 1, "computing")
      const mask = yield* attempt(() => roiVolume(volume, labels, ctx.params))
      yield* attemptPromise(() => writeMetaImage(ctx.outputs.mask, mask, { compress: true }))
      ctx.progress(1, 1, "done")
    })
})
