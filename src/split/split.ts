/**
 * Case-level train/test split, stratified by vendor, with optional k folds on the training
 * side. Slices of one eye never land on both sides because whole cases are assigned.
 *
 * Order within a vendor is a seeded permutation: cases are sorted by SHA-256 of
 * `${seed}:${key}`, so the split is the same on every platform, and adding a case moves at
 * most that case and the ones ranked after it.
 */
import { createHash } from "node:crypto"

export interface SplitCase {
  readonly key: string
  readonly vendor: string
}

export interface SplitOptions {
  /** Fraction of each vendor's cases that goes to the test set, in [0, 1). */
  readonly testFraction: number
  /** Number of cross-validation folds over the training cases; 1 means no folds. */
  readonly folds: number
  readonly seed: number
}

export interface Split {
  readonly test: readonly string[]
  readonly train: readonly string[]
  /** `folds[k]` lists the training cases of fold k; every training case is in exactly one. */
  readonly folds: readonly (readonly string[])[]
}

export class InvalidSplitOptions extends Error {
  readonly _tag = "InvalidSplitOptions"
  constructor(
    readonly option: string,
    readonly value: unknown,
    readonly expected: string
  ) {
    super(`invalid split option ${option}=${JSON.stringify(value)}: expected ${expected}`)
  }
}

const rank = (seed: number, key: string): string =>
  createHash("sha256").update(`${seed}:${key}`).digest("hex")

const seededOrder = (keys: readonly string[], seed: number): string[] =>
  [...keys].sort((a, b) => {
    const byRank = rank(seed, a).localeCompare(rank(seed, b))
    return byRank !== 0 ? byRank : a.localeCompare(b)
  })

/**
 * Splits cases by vendor: each vendor gives `round(n * testFraction)` cases to the test set.
 * When that gives no test case at all but there are at least two cases, the first case of
 * the largest vendor goes to the test set, so a small dataset is still evaluated.
 */
export const splitCases = (cases: readonly SplitCase[], options: SplitOptions): Split => {
  if (!(options.testFraction >= 0 && options.testFraction < 1)) {
    throw new InvalidSplitOptions("testFraction", options.testFraction, "a number in [0, 1)")
  }
  if (!Number.isInteger(options.folds) || options.folds < 1) {
    throw new InvalidSplitOptions("folds", options.folds, "an integer >= 1")
  }
  const keys = new Set<string>()
  for (const item of cases) {
    if (keys.has(item.key)) throw new InvalidSplitOptions("cases", item.key, "unique case keys")
    keys.add(item.key)
  }

  const byVendor = new Map<string, string[]>()
  for (const item of cases) {
    const group = byVendor.get(item.vendor) ?? []
    group.push(item.key)
    byVendor.set(item.vendor, group)
  }
  const vendors = [...byVendor.keys()].sort()

  const test: string[] = []
  const trainByVendor = new Map<string, string[]>()
  for (const vendor of vendors) {
    const ordered = seededOrder(byVendor.get(vendor)!, options.seed)
    const testCount = Math.round(ordered.length * options.testFraction)
    test.push(...ordered.slice(0, testCount))
    trainByVendor.set(vendor, ordered.slice(testCount))
  }

  if (test.length === 0 && cases.length >= 2 && options.testFraction > 0) {
    const largest = [...vendors].sort(
      (a, b) => trainByVendor.get(b)!.length - trainByVendor.get(a)!.length || a.localeCompare(b)
    )[0]
    test.push(trainByVendor.get(largest)!.shift()!)
  }

  // Deal each vendor's training cases round-robin over the folds, continuing the deal from
  // one vendor to the next, so folds stay balanced in size and in vendor mix.
  const foldCount = Math.max(1, options.folds)
  const folds: string[][] = Array.from({ length: foldCount }, () => [])
  let next = 0
  for (const vendor of vendors) {
    for (const key of trainByVendor.get(vendor)!) {
      folds[next % foldCount].push(key)
      next += 1
    }
  }
  const train = folds.flat()
  return {
    test: [...test].sort(),
    train: [...train].sort(),
    folds: folds.map((fold) => [...fold].sort())
  }
}

/** Indices of the folds that contain training cases, which `validationSplit` accepts. */
export const usableFolds = (split: Split): number[] =>
  split.folds.flatMap((members, index) => (members.length > 0 ? [index] : []))

/**
 * Picks the validation cases of fold `fold` and the cases left for fitting. With fewer than
 * two training cases there is nothing to hold out, so validation is empty. Otherwise `fold`
 * must be one of `usableFolds`, else it throws InvalidSplitOptions.
 */
export const validationSplit = (
  split: Split,
  fold: number
): { readonly fit: readonly string[]; readonly validation: readonly string[] } => {
  const usable = usableFolds(split)
  if (split.train.length < 2 || usable.length < 2) {
    return { fit: split.train, validation: [] }
  }
  if (!usable.includes(fold)) {
    throw new InvalidSplitOptions("validationFold", fold, `one of the folds that contain training cases (${usable.join(", ")})`)
  }
  const validation = split.folds[fold]!
  return { fit: split.train.filter((key) => !validation.includes(key)), validation }
}
