/**
 * Command line entry for writing a phantom dataset, e.g. for benchmarks at full size:
 *   npx tsx src/phantom/cli.ts OUT --cases 112 --scale 1 --seed 1
 * Cases are spread over Cirrus, Spectralis and Topcon in turn. Progress goes to stderr.
 */
import { parseArgs } from "node:util"
import { roundRobinCases, writePhantomDataset } from "./dataset.ts"

const usage = "usage: npx tsx src/phantom/cli.ts OUT [--cases N (default 3)] [--scale S in (0, 1], default 1] " +
  "[--seed N (default 1)] [--compress]"

const parsePositive = (name: string, text: string, integer: boolean): number => {
  const value = Number(text)
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    process.stderr.write(`invalid --${name} ${JSON.stringify(text)}: expected a positive ${integer ? "integer" : "number"}\n${usage}\n`)
    process.exit(2)
  }
  return value
}

const main = async (): Promise<void> => {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      cases: { type: "string", default: "3" },
      scale: { type: "string", default: "1" },
      seed: { type: "string", default: "1" },
      compress: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false }
    }
  })
  if (values.help === true || positionals.length !== 1) {
    process.stderr.write(`${usage}\n`)
    process.exit(values.help === true ? 0 : 2)
  }
  const count = parsePositive("cases", values.cases as string, true)
  const scale = parsePositive("scale", values.scale as string, false)
  if (scale > 1) {
    process.stderr.write(`invalid --scale ${scale}: expected at most 1\n${usage}\n`)
    process.exit(2)
  }
  const seed = Number(values.seed)
  if (!Number.isInteger(seed)) {
    process.stderr.write(`invalid --seed ${JSON.stringify(values.seed)}: expected an integer\n${usage}\n`)
    process.exit(2)
  }
  const started = Date.now()
  await writePhantomDataset(positionals[0], {
    cases: roundRobinCases(count),
    seed,
    scale,
    compress: values.compress === true,
    onProgress: (done, total, key) => process.stderr.write(`phantom: wrote ${key} (${done}/${total})\n`)
  })
  process.stderr.write(`phantom: ${count} cases in ${((Date.now() - started) / 1000).toFixed(1)} s under ${positionals[0]}\n`)
}

await main()
