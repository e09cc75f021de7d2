/**
 * Saves and loads tfjs models and named tensors as plain files, with no tfjs-node.
 *
 * A model folder contains `model.json` (the standard tfjs layers-model format: topology plus
 * a weights manifest pointing at `weights.bin`) and `weights.bin` (little-endian float32
 * values in manifest order), so `tf.loadLayersModel` in a browser reads it unchanged.
 * Named tensors (optimizer state) use the same pair of files under another base name.
 */
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises"
import { join } from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import * as tfl from "@tensorflow/tfjs-layers"
import * as Data from "effect/Data"

/** A tensor with the name an optimizer or weight manifest gives it. */
export interface NamedTensor {
  readonly name: string
  readonly tensor: tf.Tensor
}

export const modelJsonName = "model.json"
export const weightsBinName = "weights.bin"

export class ModelFileNotFoundError extends Data.TaggedError("ModelFileNotFoundError")<{
  readonly path: string
  readonly cause: unknown
}> {
  override get message() {
    return `Model file not found: ${this.path}. Point to a folder written by the trainer (it holds ${modelJsonName} and ${weightsBinName}).`
  }
}

export class ModelFormatError extends Data.TaggedError("ModelFormatError")<{
  readonly path: string
  readonly expected: string
  readonly actual: string
}> {
  override get message() {
    return `Invalid model file ${this.path}: expected ${this.expected}, got ${this.actual}. Re-export the model or delete the folder and train again.`
  }
}

async function readOrFail(path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (cause) {
    throw new ModelFileNotFoundError({ path, cause })
  }
}

function toArrayBuffer(buffer: Buffer): ArrayBuffer {
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer
}

function concatenateWeightData(data: tf.io.WeightData | undefined): ArrayBuffer {
  if (data === undefined) return new ArrayBuffer(0)
  return Array.isArray(data) ? tf.io.concatenateArrayBuffers(data) : data
}

/** Writes `contents` to `path` through a temporary file and a rename, so readers never see half a file. */
export async function writeFileAtomic(path: string, contents: string | Uint8Array): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}`
  await writeFile(temporary, contents)
  await rename(temporary, path)
}

/** Creates an IOHandler that reads and writes `model.json` and `weights.bin` in `dir`. */
export function fileSystemHandler(dir: string): tf.io.IOHandler {
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      await mkdir(dir, { recursive: true })
      const weights = new Uint8Array(concatenateWeightData(artifacts.weightData))
      const modelJson = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format ?? "layers-model",
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        weightsManifest: [{ paths: [`./${weightsBinName}`], weights: artifacts.weightSpecs ?? [] }]
      }
      await writeFileAtomic(join(dir, weightsBinName), weights)
      await writeFileAtomic(join(dir, modelJsonName), JSON.stringify(modelJson))
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) }
    },

    async load(): Promise<tf.io.ModelArtifacts> {
      const jsonPath = join(dir, modelJsonName)
      const parsed = JSON.parse((await readOrFail(jsonPath)).toString("utf8")) as tf.io.ModelJSON
      if (parsed.modelTopology === undefined || !Array.isArray(parsed.weightsManifest)) {
        throw new ModelFormatError({ path: jsonPath, expected: "modelTopology and weightsManifest", actual: Object.keys(parsed).join(", ") })
      }
      const specs: Array<tf.io.WeightsManifestEntry> = []
      const buffers: Array<ArrayBuffer> = []
      for (const group of parsed.weightsManifest) {
        specs.push(...group.weights)
        for (const relative of group.paths) buffers.push(toArrayBuffer(await readOrFail(join(dir, relative))))
      }
      return {
        modelTopology: parsed.modelTopology,
        format: parsed.format,
        generatedBy: parsed.generatedBy,
        convertedBy: parsed.convertedBy,
        weightSpecs: specs,
        weightData: tf.io.concatenateArrayBuffers(buffers)
      }
    }
  }
}

/** Saves a layers model (weights include batch-norm moving statistics) to `dir`. */
export async function saveModel(model: tfl.LayersModel, dir: string): Promise<void> {
  await model.save(fileSystemHandler(dir))
}

/** Loads a model saved by `saveModel` (or any tfjs layers model folder) for inference. */
export async function loadModel(dir: string): Promise<tfl.LayersModel> {
  return tfl.loadLayersModel(fileSystemHandler(dir))
}

/** Writes named tensors to `<dir>/<baseName>.json` (specs) and `<dir>/<baseName>.bin` (values). */
export async function saveNamedTensors(dir: string, baseName: string, tensors: ReadonlyArray<NamedTensor>): Promise<void> {
  await mkdir(dir, { recursive: true })
  const { data, specs } = await tf.io.encodeWeights([...tensors])
  await writeFileAtomic(join(dir, `${baseName}.bin`), new Uint8Array(concatenateWeightData(data)))
  await writeFileAtomic(join(dir, `${baseName}.json`), JSON.stringify(specs))
}

/** Reads tensors written by `saveNamedTensors`, in their saved order. */
export async function loadNamedTensors(dir: string, baseName: string): Promise<Array<NamedTensor>> {
  const specPath = join(dir, `${baseName}.json`)
  const specs = JSON.parse((await readOrFail(specPath)).toString("utf8")) as Array<tf.io.WeightsManifestEntry>
  if (!Array.isArray(specs)) throw new ModelFormatError({ path: specPath, expected: "an array of weight specs", actual: typeof specs })
  const data = toArrayBuffer(await readOrFail(join(dir, `${baseName}.bin`)))
  const map = tf.io.decodeWeights(data, specs)
  return specs.map((spec) => ({ name: spec.name, tensor: map[spec.name]! }))
}

/** Replaces folder `to` with folder `from` (rename when possible). */
export async function replaceDir(from: string, to: string): Promise<void> {
  await rm(to, { recursive: true, force: true })
  await rename(from, to)
}
