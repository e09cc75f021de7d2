/**
 * The thread count that OCTFLOW_THREADS and --threads give, checked where it is read. This
 * module imports nothing, so the CLI can check --threads before loading any stage.
 */

/** Largest thread count accepted, because each thread keeps its own copy of the model. */
export const maxThreads = 256

export class InvalidThreadsError extends Error {
  readonly _tag = "InvalidThreadsError"
  constructor(readonly value: string) {
    super(
      `OCTFLOW_THREADS (or --threads) is "${value}"; expected an integer from 1 to ${maxThreads} ` +
        "(threads for training and inference), or unset for one per core"
    )
  }
}

/** Parses a thread count, or throws InvalidThreadsError naming the value. */
export const parseThreads = (value: string): number => {
  const threads = Number(value)
  if (value.trim() === "" || !Number.isInteger(threads) || threads < 1 || threads > maxThreads) throw new InvalidThreadsError(value)
  return threads
}
