/**
 * Vitest global setup: builds the CLI bundle once before the test files start, so the
 * tests that run the CLI in parallel do not each wait for the same rebuild.
 */
import { ensureBundle, repositoryRoot } from "../../src/launcher/launch.mjs"

export default async function setup(): Promise<void> {
  await ensureBundle(repositoryRoot)
}
