import Foundation

/// Everything one invocation measured, as printed and as written to JSON.
struct Report: Codable {
    struct Machine: Codable {
        var cpu: String
        var cpus: Int
        var kernel: String
        var pinnedCPUs: [Int32]
        /// /proc/loadavg when the run started and when it ended: other work on the two CPUs.
        var loadAverageAtStart: String
        var loadAverageAtEnd: String
    }

    struct Configuration: Codable {
        var runs: Int
        var targetSecondsPerRun: Double
        var ringSlots: String
        var loadSpins: Int32
        var message: String
    }

    struct Ratio: Codable {
        var baseline: String
        /// Rates divided (throughput: ours ÷ baseline's messages per second) or times divided
        /// (cycles and round trips: ours ÷ baseline's nanoseconds).
        var kind: String
        var value: Double
    }

    struct Row: Codable {
        var workload: String
        var transport: String
        var status: String
        var nanosecondsPerOperation: Double?
        var messagesPerSecond: Double?
        var bytesPerSecond: Double?
        var kicksPerMessage: Double?
        var mallocsPerOperation: Double?
        var mallocCount: Int?
        var mallocNote: String?
        var runs: [Double]
        var ratios: [Ratio]
        var note: String?
    }

    struct Target: Codable {
        var target: String
        var status: String
        var measured: String
    }

    var machine: Machine
    var configuration: Configuration
    var rows: [Row]
    var targets: [Target]
}

/// Looks results up by workload and transport.
struct ResultTable {
    let results: [Result]

    func find(_ workload: Workload, _ transport: Transport) -> Result? {
        results.first { $0.workload == workload && $0.transport == transport && $0.status == "measured" }
    }

    /// `row` against `baseline` on the same workload (pipes and sockets: the blocking variant).
    func ratio(_ row: Result, to baseline: Transport) -> Double? {
        guard row.transport != baseline, let ours = row.nanosecondsPerOperation,
            let theirs = find(row.workload.baselineWorkload(for: baseline), baseline)?.nanosecondsPerOperation
        else { return nil }
        // Throughput: (1/ours) ÷ (1/theirs); times: ours ÷ theirs.
        return row.workload.ratioIsThroughput ? theirs / ours : ours / theirs
    }
}

/// The 1-, 5- and 15-minute load averages.
func loadAverage() -> String {
    let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
    return text.split(separator: " ").prefix(3).joined(separator: " ")
}

/// The load average when the process started.
let loadAverageAtStart = loadAverage()

func machine() -> Report.Machine {
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let model =
        cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
        .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) }
        ?? "unknown"
    let kernel =
        (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
        .trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
    return Report.Machine(
        cpu: model,
        cpus: ProcessInfo.processInfo.activeProcessorCount,
        kernel: kernel,
        pinnedCPUs: [CBaseline.cpus.parent, CBaseline.cpus.child],
        loadAverageAtStart: loadAverageAtStart,
        loadAverageAtEnd: loadAverage()
    )
}

func makeReport(_ results: [Result], configuration: RunConfiguration) -> Report {
    let table = ResultTable(results: results)
    let rows = results.map { result in
        Report.Row(
            workload: result.workload.description,
            transport: result.transport.rawValue,
            status: result.status,
            nanosecondsPerOperation: result.nanosecondsPerOperation,
            messagesPerSecond: result.messagesPerSecond,
            bytesPerSecond: result.bytesPerSecond,
            kicksPerMessage: result.kicksPerMessage,
            mallocsPerOperation: result.mallocsPerOperation,
            mallocCount: result.mallocCount,
            mallocNote: result.mallocNote,
            runs: result.runs,
            ratios: Transport.baselines.compactMap { baseline in
                table.ratio(result, to: baseline).map {
                    Report.Ratio(
                        baseline: baseline.rawValue,
                        kind: result.workload.ratioIsThroughput ? "messages/s ratio" : "time ratio",
                        value: $0
                    )
                }
            },
            note: result.note
        )
    }
    return Report(
        machine: machine(),
        configuration: Report.Configuration(
            runs: configuration.runs,
            targetSecondsPerRun: configuration.targetSeconds,
            ringSlots: "256 (64 for messages over 64 KiB)",
            loadSpins: loadSpins,
            message: "8-byte sequence number + payload; the consumer reads the header and the last byte"
        ),
        rows: rows,
        targets: evaluateTargets(table)
    )
}

// MARK: Formatting

func formatNumber(_ value: Double?) -> String {
    guard let value else { return "—" }
    let magnitude = abs(value)
    if magnitude >= 1e9 { return String(format: "%.2f G", value / 1e9) }
    if magnitude >= 1e6 { return String(format: "%.2f M", value / 1e6) }
    if magnitude >= 1e4 { return String(format: "%.1f k", value / 1e3) }
    if magnitude >= 100 { return String(format: "%.0f", value) }
    if magnitude >= 10 { return String(format: "%.1f", value) }
    return String(format: "%.2f", value)
}

func formatRatio(_ value: Double?) -> String {
    guard let value else { return "—" }
    return value >= 100 ? String(format: "%.0f×", value) : String(format: "%.2f×", value)
}

func formatMallocs(_ row: Report.Row) -> String {
    guard let perOperation = row.mallocsPerOperation, let count = row.mallocCount else { return "—" }
    if count == 0 { return "0" }
    return String(format: "%.2g (%d)", perOperation, count)
}

func pad(_ text: String, _ width: Int, right: Bool = true) -> String {
    let count = text.count
    if count >= width { return text }
    let padding = String(repeating: " ", count: width - count)
    return right ? padding + text : text + padding
}

/// The side-by-side table, one block per workload.
func renderTable(_ report: Report) -> String {
    var lines: [String] = []
    let headers = [
        "transport", "ns/op", "msgs/s", "bytes/s", "kicks/msg", "mallocs/op", "vs C ring", "vs C vq", "vs pipe",
        "vs socket",
        "spread",
    ]
    let widths = [24, 10, 10, 10, 10, 12, 10, 10, 10, 10, 7]
    var workload = ""
    for row in report.rows {
        if row.workload != workload {
            workload = row.workload
            let kind =
                row.ratios.first?.kind
                ?? (workload.hasPrefix("throughput") ? "messages/s ratio" : "time ratio")
            let better = kind.hasPrefix("messages") ? "higher is better" : "lower is better"
            lines.append("")
            lines.append("\(workload)   [ratios: \(kind), \(better)]")
            lines.append(
                zip(headers, widths).enumerated().map { pad($1.0, $1.1, right: $0 != 0) }.joined(separator: " ")
            )
        }
        if row.status != "measured" {
            lines.append(pad(row.transport, widths[0], right: false) + " " + (row.note ?? row.status))
            continue
        }
        func ratio(_ baseline: Transport) -> String {
            formatRatio(row.ratios.first { $0.baseline == baseline.rawValue }?.value)
        }
        let spread: String = {
            guard let median = row.nanosecondsPerOperation, let low = row.runs.min(), let high = row.runs.max(),
                median > 0
            else { return "—" }
            return String(format: "%.0f%%", (high - low) / median * 100)
        }()
        let cells = [
            row.transport,
            formatNumber(row.nanosecondsPerOperation),
            formatNumber(row.messagesPerSecond),
            formatNumber(row.bytesPerSecond),
            row.workload.contains("in-process") ? "—" : formatNumber(row.kicksPerMessage),
            formatMallocs(row),
            ratio(.cRing),
            ratio(.cVirtqueue),
            ratio(.pipe),
            ratio(.socketpair),
            spread,
        ]
        lines.append(zip(cells, widths).enumerated().map { pad($1.0, $1.1, right: $0 != 0) }.joined(separator: " "))
    }
    lines.append("")
    lines.append("Targets (issues 15 and 7)")
    for target in report.targets {
        lines.append("  [\(target.status)] \(target.target): \(target.measured)")
    }
    return lines.joined(separator: "\n")
}

/// The same table as Markdown, one table per workload group, for docs/performance.md.
func renderMarkdown(_ report: Report) -> String {
    var lines: [String] = []
    var workload = ""
    for row in report.rows {
        if row.workload != workload {
            workload = row.workload
            let throughput = workload.hasPrefix("throughput")
            lines.append("")
            lines.append(
                "**\(workload)** — ratios: \(throughput ? "messages/s ÷ baseline's (higher is better)" : "ns ÷ baseline's (lower is better)")"
            )
            lines.append("")
            lines.append(
                "| transport | ns/op | msgs/s | bytes/s | kicks/msg | mallocs/op | vs C ring | vs C vq | vs pipe | vs socket |"
            )
            lines.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        }
        if row.status != "measured" {
            lines.append("| \(row.transport) | \(row.note ?? row.status) | | | | | | | | |")
            continue
        }
        func ratio(_ baseline: Transport) -> String {
            formatRatio(row.ratios.first { $0.baseline == baseline.rawValue }?.value)
        }
        let cells = [
            row.transport,
            formatNumber(row.nanosecondsPerOperation),
            formatNumber(row.messagesPerSecond),
            formatNumber(row.bytesPerSecond),
            row.workload.contains("in-process") ? "—" : formatNumber(row.kicksPerMessage),
            formatMallocs(row),
            ratio(.cRing),
            ratio(.cVirtqueue),
            ratio(.pipe),
            ratio(.socketpair),
        ]
        lines.append("| " + cells.joined(separator: " | ") + " |")
    }
    lines.append("")
    lines.append("| target | status | measured |")
    lines.append("|---|---|---|")
    for target in report.targets {
        lines.append("| \(target.target) | **\(target.status)** | \(target.measured) |")
    }
    return lines.joined(separator: "\n")
}
