/**
 * Tagged errors raised by the volume readers, writers and dataset discovery.
 *
 * One class per failure reason. Every class carries the file (or folder) it concerns and the
 * offending value, and builds its message from those fields, ending with what to do next.
 * Readers throw these from their promises, so Effect code can catch them by `_tag`.
 */
import * as Data from "effect/Data"

/** The file or folder does not exist or cannot be read. */
export class VolumeFileNotFoundError extends Data.TaggedError("VolumeFileNotFoundError")<{
  readonly path: string
  readonly referencedBy?: string
  readonly cause?: unknown
}> {
  override get message(): string {
    const from = this.referencedBy === undefined ? "" : ` (referenced by ${this.referencedBy})`
    return `${this.path}: file not found${from}; check the path and that the file was copied completely`
  }
}

/** The data contains fewer bytes than the header's size and element type require. */
export class VolumeTruncatedError extends Data.TaggedError("VolumeTruncatedError")<{
  readonly path: string
  readonly expectedBytes: number
  readonly actualBytes: number
  readonly detail: string
}> {
  override get message(): string {
    return (
      `${this.path}: data is truncated: expected ${this.expectedBytes} bytes (${this.detail}) ` +
      `but found ${this.actualBytes}; re-export or re-copy the file, or fix DimSize/ElementType in the header`
    )
  }
}

/** The data contains more bytes than the header's size and element type allow. */
export class VolumeOversizedError extends Data.TaggedError("VolumeOversizedError")<{
  readonly path: string
  readonly expectedBytes: number
  readonly actualBytes: number
  readonly detail: string
}> {
  override get message(): string {
    return (
      `${this.path}: data is larger than the header says: expected ${this.expectedBytes} bytes ` +
      `(${this.detail}) but found ${this.actualBytes}; fix DimSize/ElementType, or set HeaderSize ` +
      `if the data file starts with a header of its own`
    )
  }
}

/** A header key that the format requires is absent. */
export class HeaderKeyMissingError extends Data.TaggedError("HeaderKeyMissingError")<{
  readonly path: string
  readonly key: string
  readonly expected: string
}> {
  override get message(): string {
    return `${this.path}: header key ${this.key} is missing; add a line "${this.key} = ${this.expected}"`
  }
}

/** A header key has a value that cannot be parsed or is out of range. */
export class HeaderValueInvalidError extends Data.TaggedError("HeaderValueInvalidError")<{
  readonly path: string
  readonly key: string
  readonly actual: string
  readonly expected: string
}> {
  override get message(): string {
    return `${this.path}: header key ${this.key} has invalid value "${this.actual}"; expected ${this.expected}`
  }
}

/** The element type or datatype code is not one of the supported voxel types. */
export class UnsupportedElementTypeError extends Data.TaggedError("UnsupportedElementTypeError")<{
  readonly path: string
  readonly actual: string
  readonly supported: readonly string[]
}> {
  override get message(): string {
    return (
      `${this.path}: unsupported element type ${this.actual}; supported: ${this.supported.join(", ")}. ` +
      `Convert the volume to one of these types (for example with SimpleITK or nibabel)`
    )
  }
}

/** A file that must be gzip (a `.gz` name) does not start with the gzip magic bytes. */
export class NotGzipError extends Data.TaggedError("NotGzipError")<{
  readonly path: string
  readonly actualMagic: string
}> {
  override get message(): string {
    return (
      `${this.path}: file name ends in .gz but the file is not gzip (first bytes ${this.actualMagic}, ` +
      `expected 1f 8b); rename it without .gz if it is uncompressed, or re-copy it`
    )
  }
}

/** zlib or gzip data failed to decompress. */
export class DecompressionFailedError extends Data.TaggedError("DecompressionFailedError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.path}: decompression failed (${this.reason}); the file is damaged or truncated, re-copy it`
  }
}

/** A NIfTI header that nifti-reader-js cannot parse or that has impossible values. */
export class NiftiHeaderInvalidError extends Data.TaggedError("NiftiHeaderInvalidError")<{
  readonly path: string
  readonly field: string
  readonly actual: string
  readonly expected: string
}> {
  override get message(): string {
    return `${this.path}: invalid NIfTI header field ${this.field} = ${this.actual}; expected ${this.expected}`
  }
}

/** A folder that should contain image files or cases contains none. */
export class EmptyFolderError extends Data.TaggedError("EmptyFolderError")<{
  readonly path: string
  readonly expected: string
}> {
  override get message(): string {
    return `${this.path}: folder contains no ${this.expected}; point to the folder that contains them`
  }
}

/** An RGB(A) B-scan whose channels differ, so it is not a gray image. */
export class ImageNotGrayError extends Data.TaggedError("ImageNotGrayError")<{
  readonly path: string
  readonly x: number
  readonly y: number
  readonly actual: readonly number[]
}> {
  override get message(): string {
    return (
      `${this.path}: colour image with unequal channels at x=${this.x}, y=${this.y} ` +
      `(values ${this.actual.join(", ")}); B-scans must be gray, export them as grayscale`
    )
  }
}

/** An image that cannot be decoded, or uses a layout the reader does not support. */
export class ImageDecodeError extends Data.TaggedError("ImageDecodeError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.path}: cannot decode image (${this.reason}); re-export it as 8- or 16-bit gray PNG or TIFF`
  }
}

/** Images of one volume, or a mask and its image, whose sizes or bit depths differ. */
export class ImageSizeMismatchError extends Data.TaggedError("ImageSizeMismatchError")<{
  readonly path: string
  readonly expected: string
  readonly actual: string
  readonly reference: string
}> {
  override get message(): string {
    return (
      `${this.path}: image is ${this.actual} but ${this.reference} is ${this.expected}; ` +
      `every B-scan and mask of a volume must have the same size and bit depth`
    )
  }
}

/** A reference (label) volume whose size differs from its OCT volume. */
export class ReferenceSizeMismatchError extends Data.TaggedError("ReferenceSizeMismatchError")<{
  readonly path: string
  readonly octPath: string
  readonly expected: readonly number[]
  readonly actual: readonly number[]
}> {
  override get message(): string {
    return (
      `${this.path}: reference size ${this.actual.join(" x ")} differs from OCT volume ${this.octPath} ` +
      `size ${this.expected.join(" x ")} (x, y, z); the reference must have the OCT volume's size, ` +
      `check that both files belong to the same case`
    )
  }
}

/** Label values that the label scheme does not allow. */
export class LabelValueOutOfSchemeError extends Data.TaggedError("LabelValueOutOfSchemeError")<{
  readonly path: string
  readonly scheme: string
  readonly allowed: readonly number[]
  /** Each invalid value with the number of voxels that carry it. */
  readonly invalid: ReadonlyArray<{ readonly value: number; readonly voxels: number }>
  readonly fix: string
}> {
  override get message(): string {
    const found = this.invalid.map((entry) => `${entry.value} (${entry.voxels} voxels)`).join(", ")
    return (
      `${this.path}: label values ${found} are outside the ${this.scheme} scheme ` +
      `(allowed ${this.allowed.join(", ")}); ${this.fix}`
    )
  }
}

/** A label slice in which some voxels are marked unlabelled (255) and others are not. */
export class LabelSlicePartlyUnlabelledError extends Data.TaggedError("LabelSlicePartlyUnlabelledError")<{
  readonly path: string
  readonly z: number
  readonly unlabelledVoxels: number
  readonly sliceVoxels: number
}> {
  override get message(): string {
    return (
      `${this.path}: slice z=${this.z} has ${this.unlabelledVoxels} of ${this.sliceVoxels} voxels set to 255 ` +
      `(unlabelled); 255 marks a whole slice without reference, so set all of its voxels to 255 or none ` +
      `(a mask coded 0/255 must be read with the 0/255 mask encoding)`
    )
  }
}

/** A sidecar file (octflow.json) that is missing a field or has an invalid one. */
export class SidecarInvalidError extends Data.TaggedError("SidecarInvalidError")<{
  readonly path: string
  readonly field: string
  readonly actual: string
  readonly expected: string
}> {
  override get message(): string {
    return `${this.path}: sidecar field ${this.field} is invalid (${this.actual}); expected ${this.expected}`
  }
}

/** A file whose format cannot be determined from its name. */
export class UnsupportedFormatError extends Data.TaggedError("UnsupportedFormatError")<{
  readonly path: string
  readonly supported: readonly string[]
}> {
  override get message(): string {
    return `${this.path}: unsupported volume format; supported: ${this.supported.join(", ")}`
  }
}

/** A dataset folder whose layout discovery cannot read. */
export class DatasetLayoutError extends Data.TaggedError("DatasetLayoutError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return (
      `${this.path}: not a dataset folder: ${this.reason}. Expected <Vendor>/<CASE>/oct.mhd ` +
      `(or oct.mha, oct.nii, oct.nii.gz, or a B-scan folder with octflow.json), ` +
      `with vendor folders named Cirrus, Spectralis, Topcon or RETOUCH-TrainingSet-<Vendor>`
    )
  }
}

/** A vendor folder name that is not Cirrus, Spectralis or Topcon, with no override for the case. */
export class VendorUnknownError extends Data.TaggedError("VendorUnknownError")<{
  readonly path: string
  readonly caseKey: string
  readonly actual: string
}> {
  override get message(): string {
    return (
      `${this.path}: unknown vendor "${this.actual}" for case ${this.caseKey}; name the folder Cirrus, ` +
      `Spectralis or Topcon, or set the vendor, e.g. -p preprocess.vendor.${this.caseKey}=Topcon`
    )
  }
}

/** A volume whose element type or geometry does not match its vendor. */
export class VendorMismatchError extends Data.TaggedError("VendorMismatchError")<{
  readonly path: string
  readonly caseKey: string
  readonly vendor: string
  readonly expected: string
  readonly actual: string
}> {
  override get message(): string {
    return (
      `${this.path}: case ${this.caseKey} is in a ${this.vendor} folder but the volume is ${this.actual}, ` +
      `while ${this.vendor} volumes are ${this.expected}; set the right vendor with ` +
      `-p preprocess.vendor.${this.caseKey}=<Cirrus|Spectralis|Topcon>, or turn off the geometry check ` +
      `with -p preprocess.strictGeometry=false`
    )
  }
}
