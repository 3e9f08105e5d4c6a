import Foundation

/// The targets of issues 15 and 7, each met, missed or pending, with the figures behind it.
/// Issue 15's wall-clock targets replace issue 7's for the cross-process stream (now against the
/// C virtqueue) and the busy-poll round trip (issue 7's 1.25× is now the stretch); issue 7's other
/// targets must not regress.
/// Issue 15's instruction targets are counted by scripts/instructions.sh, not here: the
/// in-process line gives the same ratios in time, for information.
///
/// A target whose rows were not measured (filtered out, or failed) is pending; the baseline
/// figures it would be judged against are shown.
func evaluateTargets(_ table: ResultTable) -> [Report.Target] {
    var targets: [Report.Target] = []
    func ns(_ workload: Workload, _ transport: Transport) -> Double? {
        table.find(workload, transport)?.nanosecondsPerOperation
    }
    func rate(_ workload: Workload, _ transport: Transport) -> Double? {
        table.find(workload, transport)?.messagesPerSecond
    }
    func text(_ value: Double?, _ unit: String) -> String {
        value.map { formatNumber($0) + " " + unit } ?? "not measured"
    }
    func status(_ met: Bool?) -> String {
        guard let met else { return "pending" }
        return met ? "met" : "missed"
    }
    func divide(_ ours: Double?, _ theirs: Double?) -> Double? {
        ours.flatMap { o in theirs.map { o / $0 } }
    }
    func stretch(_ met: Bool?) -> String {
        guard let met else { return "" }
        return met ? "; stretch met" : "; stretch missed"
    }

    // 1. In-process cycles against the C virtqueue, in time (the target proper is in instructions).
    let cycle = Workload.cycle(segments: 1, payload: 64)
    let cycle3 = Workload.cycle(segments: 3, payload: 64)
    do {
        func line(_ workload: Workload, _ label: String) -> String {
            let ours = ns(workload, .virtqueueHeap)
            let minimal = ns(workload, .cVirtqueue)
            let full = ns(workload, .cVirtqueueFull)
            return "\(label): virtqueue heap \(text(ours, "ns")), C virtqueue \(text(minimal, "ns")) "
                + "(\(formatRatio(divide(ours, minimal)))), with full checks \(text(full, "ns")) "
                + "(\(formatRatio(divide(ours, full))))"
        }
        let ring = ns(cycle, .cRing)
        targets.append(
            Report.Target(
                target: "issue 15: in-process cycles ≤ 1.5× the C virtqueue's, counted in instructions "
                    + "(scripts/instructions.sh one three cvq cvq3); here in time, for information",
                status: "info",
                measured: line(cycle, "1 segment") + "; " + line(cycle3, "3 segments")
                    + "; C ring 1 segment \(text(ring, "ns")) (\(formatRatio(divide(ns(cycle, .virtqueueHeap), ring))))"
            )
        )
    }

    // 2. Cross-process 64 B batch 32 against the C virtqueue.
    let small = Workload.throughput(size: 64, batch: 32)
    do {
        let ours = rate(small, .virtqueueSharedMemory)
        let ring = rate(small, .cRing)
        let virtqueue = rate(small, .cVirtqueue)
        let pipe = rate(small, .pipe)
        let vsVirtqueue = divide(ours, virtqueue)
        targets.append(
            Report.Target(
                target: "issue 15: cross-process 64 B batch 32 ≥ 0.5× the C virtqueue's messages/s (stretch 0.8×)",
                status: status(vsVirtqueue.map { $0 >= 0.5 }),
                measured:
                    "virtqueue shm \(text(ours, "msg/s")), C virtqueue \(text(virtqueue, "msg/s")): "
                    + "\(formatRatio(vsVirtqueue))\(stretch(vsVirtqueue.map { $0 >= 0.8 })); "
                    + "C ring \(text(ring, "msg/s")) (\(formatRatio(divide(ours, ring)))), "
                    + "pipe \(text(pipe, "msg/s")) (\(formatRatio(divide(ours, pipe))))"
            )
        )
    }

    // 3. Busy-poll round trip.
    let busy = Workload.roundTrip(size: 64, mode: .busyPoll)
    do {
        let ours = ns(busy, .virtqueueSharedMemory)
        let ring = ns(busy, .cRing)
        let ratio = divide(ours, ring)
        targets.append(
            Report.Target(
                target: "issue 15: busy-poll 64 B round trip ≤ 2× the C ring's (stretch 1.25×)",
                status: status(ratio.map { $0 <= 2 }),
                measured: "virtqueue shm \(text(ours, "ns")), C ring \(text(ring, "ns")): "
                    + "\(formatRatio(ratio))\(stretch(ratio.map { $0 <= 1.25 }))"
            )
        )
    }

    // 4. 4 KiB zero-copy against the pipe, and a flat round trip.
    let page = Workload.throughput(size: 4096, batch: 32)
    do {
        let ours = table.find(page, .virtqueueSharedMemory)?.bytesPerSecond
        let ring = table.find(page, .cRing)?.bytesPerSecond
        let pipe = table.find(page, .pipe)?.bytesPerSecond
        let ratio = ours.flatMap { o in pipe.map { o / $0 } }
        targets.append(
            Report.Target(
                target: "issue 7: 4 KiB zero-copy (batch 32): ≥ 4× the pipe's bytes/s",
                status: status(ratio.map { $0 >= 4 }),
                measured:
                    "virtqueue shm \(text(ours, "B/s")) (\(formatRatio(ratio))); C ring \(text(ring, "B/s")) (\(formatRatio(ring.flatMap { r in pipe.map { r / $0 } })) pipe), pipe \(text(pipe, "B/s"))"
            )
        )
        let large = Workload.roundTrip(size: 1 << 20, mode: .busyPoll)
        let ours1M = ns(large, .virtqueueSharedMemory)
        let ours64 = ns(busy, .virtqueueSharedMemory)
        let flat = ours1M.flatMap { l in ours64.map { l / $0 } }
        let ring1M = ns(large, .cRing)
        let ring64 = ns(busy, .cRing)
        let ringFlat = ring1M.flatMap { l in ring64.map { l / $0 } }
        let pipe1M = ns(large.baselineWorkload(for: .pipe), .pipe)
        let pipe64 = ns(busy.baselineWorkload(for: .pipe), .pipe)
        targets.append(
            Report.Target(
                target: "issue 7: round trip at 1 MiB ≤ 1.2× the round trip at 64 B (zero-copy keeps it flat)",
                status: status(flat.map { $0 <= 1.2 }),
                measured:
                    "virtqueue shm \(formatRatio(flat)); C ring \(text(ring1M, "ns")) vs \(text(ring64, "ns")) (\(formatRatio(ringFlat))); pipe \(text(pipe1M, "ns")) vs \(text(pipe64, "ns")) (\(formatRatio(pipe1M.flatMap { l in pipe64.map { l / $0 } })))"
            )
        )
    }

    // 5. Kicks under load.
    do {
        let ours = table.find(small, .virtqueueSharedMemory)?.kicksPerMessage
        let ring = table.find(small, .cRing)?.kicksPerMessage
        targets.append(
            Report.Target(
                target: "issue 7: ≤ 0.01 kicks per message under load (64 B, batch 32)",
                status: status(ours.map { $0 <= 0.01 }),
                measured: "virtqueue shm \(text(ours, "kicks/msg")); C ring \(text(ring, "kicks/msg"))"
            )
        )
    }

    // 6. Sandbox against shared memory.
    do {
        let sandbox = rate(small, .virtqueueSandbox)
        let shm = rate(small, .virtqueueSharedMemory)
        let ratio = sandbox.flatMap { s in shm.map { s / $0 } }
        targets.append(
            Report.Target(
                target: "issue 7: sandbox ≥ 0.95× shared memory (64 B, batch 32)",
                status: status(ratio.map { $0 >= 0.95 }),
                measured: "sandbox \(text(sandbox, "msg/s")), shm \(text(shm, "msg/s")), ratio \(formatRatio(ratio))"
            )
        )
    }

    // 7. Mallocs on the hot path.
    do {
        let rows = [cycle, cycle3].compactMap { table.find($0, .virtqueueHeap) }
        let counts = rows.compactMap(\.mallocCount)
        let counted = !rows.isEmpty && counts.count == rows.count
        let operations = rows.map { "\($0.workload): \($0.mallocCount.map(String.init) ?? "not counted") mallocs" }
        targets.append(
            Report.Target(
                target: "issue 7: 0 mallocs per operation on the hot path",
                status: counted ? status(counts.allSatisfy { $0 == 0 }) : "pending",
                measured: operations.joined(separator: "; ")
                    + " (in one counted run of the timed length)"
                    + crossProcessMallocs(table)
            )
        )
    }
    return targets
}

/// The driver process's mallocs per run in the cross-process and cross-thread Swift rows: they
/// come from launching the device, so they do not grow with the run's length.
func crossProcessMallocs(_ table: ResultTable) -> String {
    let transports: [Transport] = [.virtqueueSharedMemory, .virtqueueSandbox, .virtqueueThreads]
    let parts = transports.compactMap { transport -> String? in
        let counts = table.results.filter { $0.transport == transport && $0.status == "measured" }
            .compactMap(\.mallocCount)
        guard let low = counts.min(), let high = counts.max() else { return nil }
        return "\(transport.rawValue) \(low == high ? "\(low)" : "\(low)–\(high)") per run"
    }
    guard !parts.isEmpty else { return "" }
    return "; driver side across threads and processes, launching the device included: "
        + parts.joined(separator: ", ") + ", whatever the run's length"
}
