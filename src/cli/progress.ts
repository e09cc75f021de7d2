/**
 * Terminal progress for `full` and `run`. On a TTY it draws one bar per started stage
 * (tasks done / total, rate, ETA), redrawn at most every 100 ms. Otherwise it prints a
 * plain line per failed task, per log line, per whole stage that ran, and per tenth of a
 * per-item stage's tasks. Both go to stderr, and the
 * closing summary goes to stdout.
 */
import type { RunEvent, RunSummary } from "../runtime/executor.ts"
import { formatMs, formatSummaryTable } from "./summary-table.mjs"

interface StageProgress {
  readonly total: number
  done: number
  ran: number
  cached: number
  failed: number
  started: number | null
}

export class ProgressReporter {
  private readonly stages = new Map<string, StageProgress>()
  private drawnLines = 0
  private lastDraw = 0
  /** Last tenth of its total that each task's plain progress line reported, by stage/item. */
  private readonly taskTenths = new Map<string, number>()

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly isTty: boolean = process.stderr.isTTY === true
  ) {}

  readonly report = (event: RunEvent): void => {
    switch (event.type) {
      case "lock-wait":
        this.line(event.pid === 0
          ? "waiting: the workspace lock file is empty; it is taken over once it is 5 s old"
          : `waiting: workspace is in use by process ${event.pid} on ${event.host}`)
        return
      case "lock-takeover":
        this.line(`taking over the lock left by process ${event.pid}, which is no longer running`)
        return
      case "database-wait":
        this.line(`waiting up to ${event.waitMs / 1000} s for a read command to close the database`)
        return
      case "plan":
        this.line(`run ${event.runId}: ${event.stages.map((s) => `${s.stage} (${s.tasks})`).join(", ")}`)
        for (const s of event.stages) this.stages.set(s.stage, { total: s.tasks, done: 0, ran: 0, cached: 0, failed: 0, started: null })
        return
      case "task-start": {
        const stage = this.stages.get(event.stage)!
        stage.started ??= Date.now()
        this.redraw(false)
        return
      }
      case "task-end": {
        const stage = this.stages.get(event.stage)!
        stage.done++
        if (event.action === "ran") stage.ran++
        if (event.action === "cached") stage.cached++
        if (event.action === "failed") stage.failed++
        if (!this.isTty && event.action === "ran" && event.item === null) this.line(`${event.stage} ran in ${formatMs(event.ms)}`)
        if (!this.isTty && event.item !== null) this.plainProgress(event.stage, stage)
        if (event.action === "failed") this.line(`${event.stage} ${event.item ?? ""} failed: ${event.error ?? ""}`)
        this.redraw(stage.done === stage.total)
        return
      }
      case "progress":
        if (!this.isTty && event.info !== undefined && this.isNewTenth(event)) {
          this.line(`${event.stage} ${event.item ?? ""} ${event.done}/${event.total} ${event.info}`)
        }
        return
      case "log": {
        const annotations = event.annotations === undefined ? "" : ` ${JSON.stringify(event.annotations)}`
        this.line(`[${event.level}] ${event.stage}${event.item === null ? "" : `/${event.item}`}: ${event.message}${annotations}`)
        return
      }
    }
  }

  /** True when a task's reported progress has reached another tenth of its total since the last line. */
  private isNewTenth(event: { readonly stage: string; readonly item: string | null; readonly done: number; readonly total: number }) {
    const key = `${event.stage}/${event.item ?? ""}`
    const tenth = event.total > 0 ? Math.floor((event.done * 10) / event.total) : 10
    if (this.taskTenths.get(key) === tenth) return false
    this.taskTenths.set(key, tenth)
    return true
  }

  /** Print a per-item stage's counts each time another tenth of its tasks has ended. */
  private plainProgress(name: string, stage: StageProgress) {
    const tenth = Math.floor((stage.done * 10) / stage.total)
    const previous = Math.floor(((stage.done - 1) * 10) / stage.total)
    if (tenth === previous) return
    this.line(`${name}: ${stage.done}/${stage.total} done (ran ${stage.ran}, skipped ${stage.cached}, failed ${stage.failed})`)
  }

  private line(text: string) {
    this.clear()
    this.stream.write(text + "\n")
    this.redraw(true)
  }

  private clear() {
    if (!this.isTty || this.drawnLines === 0) return
    this.stream.write(`\x1b[${this.drawnLines}A\x1b[J`)
    this.drawnLines = 0
  }

  private redraw(force: boolean) {
    if (!this.isTty) return
    const now = Date.now()
    if (!force && now - this.lastDraw < 100) return
    this.lastDraw = now
    this.clear()
    const lines: Array<string> = []
    for (const [name, s] of this.stages) {
      if (s.started === null && s.done === 0) continue
      const width = 24
      const filled = Math.round((s.done / Math.max(1, s.total)) * width)
      const elapsed = (now - (s.started ?? now)) / 1000
      const rate = s.ran > 0 && elapsed > 0 ? s.ran / elapsed : 0
      const remaining = s.total - s.done
      const eta = rate > 0 && remaining > 0 ? ` ETA ${formatMs((remaining / rate) * 1000)}` : ""
      const rateText = rate > 0 ? ` ${rate.toFixed(1)}/s` : ""
      lines.push(`${name.padEnd(16)} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${s.done}/${s.total}${rateText}${eta}`)
    }
    if (lines.length > 0) this.stream.write(lines.join("\n") + "\n")
    this.drawnLines = lines.length
  }

  finish() {
    this.redraw(true)
  }
}

/** Format the closing summary: per stage, tasks that ran, were skipped (cached), failed or were blocked. */
export function formatSummary(summary: RunSummary, elapsedMs: number): string {
  return formatSummaryTable(summary.runId, summary.status, summary.stages, elapsedMs)
}
