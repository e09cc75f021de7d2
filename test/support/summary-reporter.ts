/**
 * A vitest reporter that ends the run with one plain line,
 * `Tests: N passed, N failed, N skipped`, which CI systems that read closing lines
 * recognise whatever the test runner. Modules that fail to load count as failures.
 */
import type { Reporter, TestModule } from "vitest/node"

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    let passed = 0
    let failed = unhandledErrors.length
    let skipped = 0
    for (const testModule of testModules) {
      if (testModule.state() === "failed" && [...testModule.children.allTests()].length === 0) {
        failed += 1
      }
      for (const testCase of testModule.children.allTests()) {
        const state = testCase.result().state
        if (state === "passed") passed += 1
        else if (state === "failed") failed += 1
        else skipped += 1
      }
    }
    process.stdout.write(`\nTests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`)
  }
}
