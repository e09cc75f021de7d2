/**
 * Tagged errors of the preprocess and roi kernels. Each class is one failure reason. Its
 * fields carry the offending value and what was expected, and the message is built from
 * them. The kernels do no I/O, so `argument` or `parameter` names the argument at fault.
 */
import * as Data from "effect/Data"

/** A volume's element type or values cannot be mapped to 8-bit intensities. */
export class UnsupportedIntensityError extends Data.TaggedError("UnsupportedIntensityError")<{
  readonly dtype: string
  readonly expected: string
  readonly actual: string
}> {
  override get message(): string {
    return (
      `cannot convert ${this.dtype} intensities to 0..255: expected ${this.expected}, ` +
      `found ${this.actual}. Rescale the volume to uint8 or uint16 before preprocessing`
    )
  }
}

/** An array's length or a size argument does not match the stated image geometry. */
export class InvalidShapeError extends Data.TaggedError("InvalidShapeError")<{
  readonly argument: string
  readonly expected: string
  readonly actual: string
}> {
  override get message(): string {
    return (
      `invalid ${this.argument}: expected ${this.expected}, got ${this.actual}. ` +
      "Pass arrays whose lengths match the width, height and slice count"
    )
  }
}

/** A numeric parameter lies outside its valid range. */
export class InvalidParameterError extends Data.TaggedError("InvalidParameterError")<{
  readonly parameter: string
  readonly expected: string
  readonly actual: string
}> {
  override get message(): string {
    return `invalid parameter ${this.parameter}: expected ${this.expected}, got ${this.actual}. Set it within that range`
  }
}

/** Checks that `length` equals `width * height` (times `slices`) and that sizes are positive integers. */
export const checkGeometry = (
  argument: string,
  length: number,
  width: number,
  height: number,
  slices = 1
): void => {
  for (const [name, size] of [
    ["width", width],
    ["height", height],
    ["slices", slices]
  ] as const) {
    if (!Number.isInteger(size) || size < 1) {
      throw new InvalidShapeError({ argument: name, expected: "a positive integer", actual: String(size) })
    }
  }
  const expected = width * height * slices
  if (length !== expected) {
    throw new InvalidShapeError({
      argument,
      expected: `${expected} elements (${width} x ${height} x ${slices})`,
      actual: `${length} elements`
    })
  }
}
