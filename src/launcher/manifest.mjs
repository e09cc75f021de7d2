// @ts-check
/**
 * The build manifest, `dist/<build id>/manifest.json`, which build.mjs writes and the
 * launcher and src/runtime/bundle.ts read.
 */

/** Version of the manifest's layout; the launcher rebuilds when it differs. */
export const manifestFormat = 1

/**
 * @typedef {object} Manifest
 * @property {number} format
 * @property {string} id
 * @property {string} root absolute path of the repository
 * @property {string} builtAt ISO time
 * @property {string} esbuild esbuild version
 * @property {Record<string, string>} inputs identity of each input, by path relative to `root`
 * @property {Record<string, { sha256: string, racy: boolean }>} sources each project source's
 *   SHA-256, and whether its identity was too recent to trust alone
 * @property {Record<string, number>} outputs size in bytes of each output, by path relative to the build folder
 */
