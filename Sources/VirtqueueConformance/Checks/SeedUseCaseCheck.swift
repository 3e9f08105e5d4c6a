import Synchronization
import Virtqueue

/// ``ConformanceCheck/seedUseCase``: seL4 libvirtqueue's eight steps, one call each.
enum SeedUseCaseCheck {
    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        var rounds = 0
        for features in [Features.all, []] {
            let layout = try context.makeLayout(queueSize: 8, dataAreaSize: 16 * 256, features: features)
            rounds += try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                try backend.withQueueEnds(layout: layout, Visitor(layout: layout, context: context))
            }
        }
        return "\(rounds) rounds of the eight steps, with and without EVENT_IDX and INDIRECT_DESC"
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout
        let context: CheckContext

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws -> Int {
            try ends.initialize(layout)
            let unblock = ends.unblocker()
            var driver = try attachDriver(ends.driver.region, notifier: ends.driver.notifier, bufferSize: 256)
            var device = try attachDevice(ends.device.region, notifier: ends.device.notifier)
            let rounds = 4
            try withWatchdog(
                context,
                hang: { "step \($0) of the seed's use case blocked in a wait: a kick was lost" },
                onFire: unblock
            ) { watchdog in
                for round in 0..<rounds {
                    // 1. The driver creates a new available entry.
                    var chain = driver.makeChain()
                    // 2. It chains buffers to it: three readable, one writable.
                    let words = ["hello, ", "seL4 ", "world \(round)"].map { Array($0.utf8) }
                    for word in words { try driver.appendReadable(to: &chain, copying: word) }
                    try driver.appendWritable(to: &chain, capacity: 64)
                    let id = try driver.submit(chain)
                    // 3. It kicks the device, which must receive the kick.
                    watchdog.report(3)
                    if try driver.notifyIfNeeded() { try device.notifier.wait() }
                    // 4. The device takes the available entry.
                    watchdog.report(4)
                    guard let request = try device.nextRequest() else {
                        throw CheckFailure("step 4, round \(round): the device found no available entry")
                    }
                    let readableCount = words.reduce(0) { $0 + $1.count }
                    try expect(
                        request.id == id,
                        "step 4: the device got entry \(request.id), the driver made \(id) available"
                    )
                    try expect(
                        request.segmentCount == 4 && request.totalByteCount == readableCount + 64,
                        "step 4: the entry has \(request.segmentCount) buffers of \(request.totalByteCount) bytes; expected 4 of \(readableCount + 64)"
                    )
                    // 5. It gathers the buffers.
                    var gathered: [[UInt8]] = []
                    try device.forEachReadable(in: request) { gathered.append(Array($0)) }
                    try expect(gathered == words, "step 5: the device gathered \(gathered), the driver wrote \(words)")
                    // 6. It moves the entry to the used ring.
                    var component = ConformanceDevice()
                    let written = try component.handle(request, on: device)
                    try device.complete(request, written: written)
                    // 7. It kicks the driver, which must receive the kick.
                    watchdog.report(7)
                    if try device.notifyIfNeeded() { try driver.notifier.wait() }
                    // 8. The driver takes the used entry, reads it and frees its buffers.
                    watchdog.report(8)
                    guard let used = try driver.takeUsed() else {
                        throw CheckFailure("step 8, round \(round): the driver found no used entry")
                    }
                    let expected = ConformanceDevice.reply(to: words.flatMap { $0 }, room: 64)
                    try expect(
                        used.id == id && used.status == .completed && used.writtenByteCount == expected.count,
                        "step 8: used entry \(used.id), \(used.status), \(used.writtenByteCount) bytes; expected \(id), completed, \(expected.count)"
                    )
                    var readable: [[UInt8]] = []
                    var reply: [UInt8] = []
                    try driver.forEachSegment(of: used) { isWritable, bytes in
                        if isWritable { reply += bytes } else { readable.append(Array(bytes)) }
                    }
                    try expect(readable == words, "step 8: the readable buffers read back as \(readable)")
                    try expect(
                        reply == expected,
                        "step 8: the device's reply reads back as \(reply), expected \(expected)"
                    )
                    try driver.free(used)
                }
            }
            try expect(
                driver.freeBufferCount == driver.bufferCount && driver.inFlightCount == 0
                    && driver.freeDescriptorCount == driver.queueSize,
                "after the last round \(driver.freeBufferCount) of \(driver.bufferCount) buffers and \(driver.freeDescriptorCount) of \(driver.queueSize) descriptors are free"
            )
            return rounds
        }
    }
}
