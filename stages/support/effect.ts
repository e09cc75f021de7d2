/**
 * Adapters from promise and throwing code to Effect: a rejection or a throw becomes the
 * effect's typed failure (not a defect), so the runtime reports it as the item's error.
 */
import * as Effect from "effect/Effect"

export const attemptPromise = <A>(run: () => Promise<A>): Effect.Effect<A, unknown> =>
  Effect.tryPromise({ try: run, catch: (cause) => cause })

export const attempt = <A>(run: () => A): Effect.Effect<A, unknown> => Effect.try({ try: run, catch: (cause) => cause })
