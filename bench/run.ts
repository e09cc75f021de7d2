/**
 * Runs every benchmark in bench/ (files named `*.bench.ts`), one child process each, in
 * name order. Each benchmark writes its own JSON result to bench/results/<name>.json.
 * Usage: npm run bench [-- NAME_SUBSTRING...]
 */
import { spawnSync } from "node:child_process"
import { readdirSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const benchDir = dirname(fileURLToPath(import.meta.url))
const filters = process.argv.slice(2)
const files = readdirSync(benchDir)
  .filter((name) => name.endsWith(".bench.ts"))
  .filter((name) => filters.length === 0 || filters.some((filter) => name.includes(filter)))
  .sort()

let failures = 0
for (const file of files) {
  process.stderr.write(`bench: running ${file}\n`)
  const result = spawnSync(process.execPath, ["--import", "tsx", join(benchDir, file)], {
    stdio: "inherit"
  })
  if (result.status !== 0) {
    failures += 1
    process.stderr.write(`bench: ${file} failed with exit status ${result.status}\n`)
  }
}
process.exitCode = failures === 0 ? 0 : 1
