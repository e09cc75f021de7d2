import { Effect, Schema } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { canonicalJson, compareCodeUnits, parseOverride, resolveParams } from "../../src/runtime/params.ts"
import * as Stage from "../../src/runtime/stage.ts"
import { buildDag, downstreamOf, selectStages, toDot, toMermaid } from "../../src/runtime/workflow.ts"
import { declaredStage, workflowOf } from "./helpers.ts"

const errorTag = (fn: () => unknown): string => {
  try {
    fn()
  } catch (error) {
    return (error as { _tag: string })._tag
  }
  return "(no error)"
}

describe("buildDag", () => {
  it("orders by inputs, not list order", () => {
    const dag = buildDag(workflowOf([
      declaredStage("c", { x: Stage.output("b", "out") }),
      declaredStage("b", { x: Stage.output("a", "out") }),
      declaredStage("a", { x: Stage.source("data") })
    ]))
    expect(dag.order).toEqual(["a", "b", "c"])
  })

  it("resolves forEach to the root source", () => {
    const dag = buildDag(workflowOf([
      declaredStage("a", { x: Stage.source("data") }, { forEach: "data" }),
      declaredStage("b", { x: Stage.output("a", "out") }, { forEach: "a" })
    ]))
    expect(dag.nodes.get("b")!.itemSource).toBe("data")
  })

  it.each([
    ["cycle", "DagCycle", [
      declaredStage("a", { x: Stage.output("b", "out") }),
      declaredStage("b", { x: Stage.output("a", "out") })
    ]],
    ["missing stage", "MissingProducer", [declaredStage("a", { x: Stage.output("nobody", "out") })]],
    ["missing port", "MissingProducer", [
      declaredStage("a", {}),
      declaredStage("b", { x: Stage.output("a", "nothing") })
    ]],
    ["missing source", "MissingProducer", [declaredStage("a", { x: Stage.source("nope") })]],
    ["two producers", "DuplicateProducer", [declaredStage("a", {}), declaredStage("a", {})]],
    ["outputMap of whole", "InvalidStage", [
      declaredStage("a", {}),
      declaredStage("b", { x: Stage.outputMap("a", "out") })
    ]],
    ["output across items", "InvalidStage", [
      declaredStage("a", {}, { forEach: "data" }),
      declaredStage("b", { x: Stage.output("a", "out") })
    ]],
    ["forEach unknown", "InvalidStage", [declaredStage("a", {}, { forEach: "ghost" })]]
  ])("rejects %s", (_, tag, stages) => {
    expect(errorTag(() => buildDag(workflowOf(stages)))).toBe(tag)
  })

  it("names the cycle in the message", () => {
    const workflow = workflowOf([
      declaredStage("a", { x: Stage.output("b", "out") }),
      declaredStage("b", { x: Stage.output("a", "out") })
    ])
    expect(() => buildDag(workflow)).toThrow(/a -> b -> a|b -> a -> b/)
  })

  it("orders random DAGs topologically", () => {
    // Stage i may read any stage j < i; the list is then shuffled.
    const arbitraryDag = fc.integer({ min: 1, max: 8 }).chain((n) =>
      fc.tuple(
        fc.array(fc.array(fc.boolean(), { minLength: n, maxLength: n }), { minLength: n, maxLength: n }),
        fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n })
      ))
    fc.assert(fc.property(arbitraryDag, ([edges, permutation]) => {
      const stages = permutation.map((i) => {
        const inputs: Record<string, Stage.InputSpec> = {}
        for (let j = 0; j < i; j++) if (edges[i]![j]) inputs[`in${j}`] = Stage.output(`s${j}`, "out")
        return declaredStage(`s${i}`, inputs)
      })
      const order = buildDag(workflowOf(stages)).order
      const position = new Map(order.map((name, k) => [name, k]))
      return stages.every((s) => Object.values(s.inputs).every((spec) =>
        spec.kind !== "output" || position.get(spec.stage)! < position.get(s.name)!))
    }))
  })

  it("selects targets with their upstream", () => {
    const dag = buildDag(workflowOf([
      declaredStage("a", {}),
      declaredStage("b", { x: Stage.output("a", "out") }),
      declaredStage("c", {})
    ]))
    expect(selectStages(dag, ["b"])).toEqual(["a", "b"])
    expect([...downstreamOf(dag, "a")]).toEqual(["a", "b"])
  })

  it("renders Mermaid and DOT edges", () => {
    const dag = buildDag(workflowOf([declaredStage("a", { x: Stage.source("data") }), declaredStage("b", { x: Stage.output("a", "out") })]))
    expect(toMermaid(dag)).toContain("a --> b")
    expect(toMermaid(dag)).toContain("src_data --> a")
    expect(toDot(dag)).toContain(`"a" -> "b";`)
  })
})

const withParams = declaredStage("train", {}, {
  params: Schema.Struct({
    epochs: Schema.Int.pipe(Schema.check(Schema.isGreaterThan(0)), Schema.withDecodingDefaultKey(Effect.succeed(10))),
    rate: Schema.Number.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0.001))),
    vendor: Schema.Record(Schema.String, Schema.String).pipe(
      Schema.withDecodingDefaultKey(Effect.succeed<Readonly<Record<string, string>>>({}))
    )
  })
})

describe("resolveParams", () => {
  const workflow = workflowOf([withParams], { cpu: { train: { epochs: 2 } }, paper: { train: { epochs: 300 } } })

  it("uses defaults and the cpu profile", () => {
    expect(resolveParams(workflow, {}).encoded.get("train")).toEqual({ epochs: 2, rate: 0.001, vendor: {} })
  })

  it("applies profile, then file, then -p", () => {
    const params = resolveParams(workflow, { profile: "paper", overrides: ["train.epochs=5"] })
    expect(params.encoded.get("train")).toEqual({ epochs: 5, rate: 0.001, vendor: {} })
    expect(params.origins.get("train.epochs")).toBe("-p train.epochs=5")
  })

  it("names stage, key, value and origin", () => {
    const run = () => resolveParams(workflow, { overrides: ["train.epochs=-3"] })
    expect(errorTag(run)).toBe("InvalidParam")
    expect(run).toThrow(/-3 for train\.epochs \(from -p train\.epochs=-3\)/)
  })

  it("sets record entries one by one", () => {
    const params = resolveParams(workflow, {
      overrides: ["train.vendor.Nidek/CASE1=Topcon", 'train.vendor.CASE2="Cirrus"']
    })
    expect(params.encoded.get("train")).toMatchObject({ vendor: { "Nidek/CASE1": "Topcon", CASE2: "Cirrus" } })
  })

  it("states the schema message alone", () => {
    const run = () => resolveParams(workflow, { overrides: ["train.rate=abc"] })
    expect(run).toThrow(/Expected number/)
    expect(run).not.toThrow(/Cause\(/)
  })

  it("rejects an undeclared key", () => {
    expect(errorTag(() => resolveParams(workflow, { overrides: ["train.epoch=3"] }))).toBe("UnknownParam")
  })

  it("rejects an unknown profile", () => {
    expect(errorTag(() => resolveParams(workflow, { profile: "gpu" }))).toBe("UnknownName")
  })

  it.each([
    ["a.b=3", 3],
    ["a.b=true", true],
    ["a.b=hello", "hello"],
    ["a.b=[1,2]", [1, 2]],
    ["a.b=x=y", "x=y"]
  ])("parses override %s", (text, value) => {
    expect(parseOverride(text).value).toEqual(value)
  })
})

describe("canonicalJson", () => {
  it("sorts keys and normalises -0", () => {
    expect(canonicalJson({ b: 1, a: [-0, 1.5] })).toBe(`{"a":[0,1.5],"b":1}`)
  })

  it("ignores key order", () => {
    fc.assert(fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (record) => {
      const reversed = Object.fromEntries(Object.entries(record).reverse())
      return canonicalJson(record) === canonicalJson(reversed)
    }))
  })

  it("equals the plain definition", () => {
    // Sorted entries joined with commas. An object built from sorted entries would not do,
    // because JavaScript lists integer-like keys such as "0" before all others.
    const reference = (value: unknown): string => {
      if (Array.isArray(value)) return `[${value.map(reference).join(",")}]`
      if (typeof value !== "object" || value === null) return JSON.stringify(value)
      const entries = Object.entries(value).sort(([a], [b]) => compareCodeUnits(a, b))
      return `{${entries.map(([key, member]) => `${JSON.stringify(key)}:${reference(member)}`).join(",")}}`
    }
    fc.assert(fc.property(fc.jsonValue(), (value) => {
      expect(canonicalJson(value)).toBe(reference(value))
    }))
  })

  it("leaves out undefined members", () => {
    expect(canonicalJson({ b: undefined, a: 1, c: { d: undefined } })).toBe(`{"a":1,"c":{}}`)
  })

  it("rejects NaN", () => {
    expect(() => canonicalJson({ a: Number.NaN })).toThrow(/non-finite/)
  })
})
