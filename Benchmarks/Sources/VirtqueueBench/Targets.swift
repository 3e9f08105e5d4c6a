import Foundation

/// The targets of issue 7, each met, missed or pending, with the figures behind it.
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

    // 1. In-process cycle.
    let cycle = Workload.cycle(segments: 1, payload: 64)
    do {
        let ours = ns(cycle, .virtqueueHeap)
        let ring = ns(cycle, .cRing)
        let virtqueue = ns(cycle, .cVirtqueue)
        let ratio = ours.flatMap { o in ring.map { o / $0 } }
        targets.append(
            Report.Target(
                target: "in-process 1-segment cycle no slower than the C ring's (validation on)",
                status: status(ratio.map { $0 <= 1.0 }),
                measured:
                    "virtqueue heap \(text(ours, "ns")), C ring \(text(ring, "ns")), ratio \(formatRatio(ratio)); "
                    + "hand-written C virtqueue \(text(virtqueue, "ns")) (\(formatRatio(ours.flatMap { o in virtqueue.map { o / $0 } })))"
            )
        )
    }

    // 2. Cross-process 64 B batch 32.
    let small = Workload.throughput(size: 64, batch: 32)
    do {
        let ours = rate(small, .virtqueueSharedMemory)
        let ring = rate(small, .cRing)
        let virtqueue = rate(small, .cVirtqueue)
        let pipe = rate(small, .pipe)
        let vsPipe = ours.flatMap { o in pipe.map { o / $0 } }
        let vsRing = ours.flatMap { o in ring.map { o / $0 } }
        let vsVirtqueue = ours.flatMap { o in virtqueue.map { o / $0 } }
        let met = vsPipe.flatMap { p in vsRing.map { p >= 20 && $0 >= 0.8 } }
        targets.append(
            Report.Target(
                target: "cross-process 64 B batch 32: ≥ 20× the pipe's messages/s and ≥ 0.8× the C ring's",
                status: status(met),
                measured:
                    "virtqueue shm \(text(ours, "msg/s")) (\(formatRatio(vsPipe)) pipe, \(formatRatio(vsRing)) C ring, "
                    + "\(formatRatio(vsVirtqueue)) C virtqueue); C ring \(text(ring, "msg/s")), "
                    + "C virtqueue \(text(virtqueue, "msg/s")), pipe \(text(pipe, "msg/s"))"
            )
        )
    }

    // 3. Busy-poll round trip.
    let busy = Workload.roundTrip(size: 64, mode: .busyPoll)
    do {
        let ours = ns(busy, .virtqueueSharedMemory)
        let ring = ns(busy, .cRing)
        let ratio = ours.flatMap { o in ring.map { o / $0 } }
        targets.append(
            Report.Target(
                target: "busy-poll 64 B round trip ≤ 1.25× the C ring's",
                status: status(ratio.map { $0 <= 1.25 }),
                measured: "virtqueue shm \(text(ours, "ns")) (\(formatRatio(ratio))); C ring \(text(ring, "ns"))"
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
                target: "4 KiB zero-copy (batch 32): ≥ 4× the pipe's bytes/s",
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
                target: "round trip at 1 MiB ≤ 1.2× the round trip at 64 B (zero-copy keeps it flat)",
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
                target: "≤ 0.01 kicks per message under load (64 B, batch 32)",
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
                target: "sandbox ≥ 0.95× shared memory (64 B, batch 32)",
                status: status(ratio.map { $0 >= 0.95 }),
                measured: "sandbox \(text(sandbox, "msg/s")), shm \(text(shm, "msg/s")), ratio \(formatRatio(ratio))"
            )
        )
    }

    // 7. Mallocs on the hot path.
    do {
        let rows = [cycle, Workload.cycle(segments: 3, payload: 64)].compactMap { table.find($0, .virtqueueHeap) }
        let counts = rows.compactMap(\.mallocCount)
        let counted = !rows.isEmpty && counts.count == rows.count
        let operations = rows.map { "\($0.workload): \($0.mallocCount.map(String.init) ?? "not counted") mallocs" }
        targets.append(
            Report.Target(
                target: "0 mallocs per operation on the hot path",
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
