/**
 * Segments one preprocessed OCT volume with a trained model and writes its label volume,
 * overlays and, when a reference is given, its RETOUCH measures.
 *
 * The model is either a folder written by the trainer (`modelDir`, loaded with tfjs on the
 * backend already initialised) or any `Predictor`. The label scheme follows the model's
 * softmax channels: 4 for RETOUCH (background, IRF, SRF, PED), 2 for binary fluid. A
 * RETOUCH reference given with a binary model is merged to fluid / background first.
 */
import * as tf from "@tensorflow/tfjs-core"
import * as Data from "effect/Data"
import { loadModel } from "../ml/model-io.ts"
import { type LabelScheme, toBinaryFluid } from "../volume/labels.ts"
import type { Volume } from "../volume/volume.ts"
import {
  type InferenceOptions,
  inferVolume,
  type LabelVolumePaths,
  type ModelInputSize,
  type Predictor,
  predictorFromModel,
  writeLabelVolume
} from "./infer.ts"
import { evaluateVolume, type MetricsOptions, type SliceScores, type VolumeEvaluation } from "./metrics.ts"
import { type OverlayOptions, type WrittenOverlay, writeOverlays } from "./overlay.ts"

export interface PredictVolumeOptions {
  /** Folder with model.json and weights.bin from the trainer; or pass `predictor`. */
  readonly modelDir?: string
  readonly predictor?: Predictor
  /** Input size for a model saved without a fixed spatial input shape. */
  readonly inputSize?: ModelInputSize
  /** Preprocessed B-scans, uint8, with the header's spacing. */
  readonly volume: Volume
  readonly vendor: string
  readonly caseId: string
  /** Reference labels of the same dims; enables contours and metrics. */
  readonly reference?: Volume
  /** Writes `<outputBase>.mha` and `<outputBase>.nii.gz` when set. */
  readonly outputBase?: string
  /** Writes overlay PNGs into this folder when set. */
  readonly overlayDir?: string
  readonly overlay?: Partial<Omit<OverlayOptions, "scheme">>
  readonly inference?: Partial<InferenceOptions>
  readonly absentClassRule?: MetricsOptions["absentClassRule"]
}

export interface PredictVolumeResult {
  readonly caseId: string
  readonly vendor: string
  readonly scheme: LabelScheme
  readonly labels: Volume<Uint8Array>
  readonly scores: SliceScores
  readonly files?: LabelVolumePaths
  readonly overlays: ReadonlyArray<WrittenOverlay>
  /** Present when a reference was given. */
  readonly evaluation?: VolumeEvaluation
}

export class PredictOptionsError extends Data.TaggedError("PredictOptionsError")<{
  readonly caseId: string
  readonly field: string
  readonly expected: string
  readonly actual: string
}> {
  override get message(): string {
    return `predict ${this.caseId}: ${this.field} is ${this.actual}, expected ${this.expected}`
  }
}

const schemeOf = (classCount: number, caseId: string): LabelScheme => {
  if (classCount === 4) return "retouch"
  if (classCount === 2) return "binary"
  throw new PredictOptionsError({
    caseId,
    field: "model output classes",
    expected: "4 (RETOUCH: background, IRF, SRF, PED) or 2 (background, fluid)",
    actual: String(classCount)
  })
}

const resolvePredictor = async (options: PredictVolumeOptions): Promise<Predictor> => {
  if (options.predictor !== undefined && options.modelDir !== undefined) {
    throw new PredictOptionsError({
      caseId: options.caseId,
      field: "model",
      expected: "either modelDir or predictor",
      actual: "both"
    })
  }
  if (options.predictor !== undefined) return options.predictor
  if (options.modelDir === undefined) {
    throw new PredictOptionsError({
      caseId: options.caseId,
      field: "model",
      expected: "modelDir (a trained model folder) or predictor",
      actual: "neither"
    })
  }
  await tf.ready()
  const model = await loadModel(options.modelDir)
  return predictorFromModel(model, options.inputSize)
}

/** Predicts labels for one volume, then writes the files and overlays that were requested. */
export const predictVolume = async (options: PredictVolumeOptions): Promise<PredictVolumeResult> => {
  const predictor = await resolvePredictor(options)
  const scheme = schemeOf(predictor.classCount, options.caseId)
  const { labels, scores } = await inferVolume(options.volume, predictor, options.inference)
  const reference =
    options.reference !== undefined && scheme === "binary" && options.reference.dtype === "uint8"
      ? toBinaryFluid(options.reference as Volume<Uint8Array>)
      : options.reference

  const files = options.outputBase === undefined ? undefined : await writeLabelVolume(labels, options.outputBase)
  const overlays =
    options.overlayDir === undefined
      ? []
      : await writeOverlays(
          { image: options.volume, prediction: labels, reference },
          options.overlayDir,
          options.caseId,
          { ...options.overlay, scheme }
        )
  const evaluation =
    reference === undefined
      ? undefined
      : evaluateVolume(
          { caseId: options.caseId, vendor: options.vendor, reference, prediction: labels, scores },
          { scheme, absentClassRule: options.absentClassRule ?? "skip" }
        )

  return { caseId: options.caseId, vendor: options.vendor, scheme, labels, scores, files, overlays, evaluation }
}
