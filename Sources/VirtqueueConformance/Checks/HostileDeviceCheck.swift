import Virtqueue

/// ``ConformanceCheck/hostileDevice``: the driver under test; a hostile device plants each
/// driver-side violation of `docs/trust-model.md` through the backend's device end.
enum HostileDeviceCheck {
    static var queueSize: Int { HostileDeviceRule.queueSize }

    /// The rules, from the one table both this check and the core's own tests use (those of the
    /// run's ring format).
    typealias Rule = HostileDeviceRule

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        let layout = try context.makeLayout(queueSize: queueSize, dataAreaSize: 8 * 256, features: .all)
        let format = context.ringFormat
        for rule in Rule.cases(for: format) {
            try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                try backend.withQueueEnds(layout: layout, Visitor(layout: layout, rule: rule))
            }
        }
        let summary =
            "\(Rule.cases(for: format).count) \(format) hostile used rings planted through the device's end"
        guard layout.features.contains(.inOrder) else {
            return summary + "; each broke the driver, which took back every buffer"
        }
        return try runInOrder(backend, layout: layout, format: format, summary: summary)
    }

    /// Under IN_ORDER, after the usual table's rules (which hold in order too): the in-order
    /// table's rules of the format (``HostileInOrderDeviceRule``).
    static func runInOrder(
        _ backend: some ConformanceBackend,
        layout: RegionLayout,
        format: RingFormat,
        summary: String
    ) throws -> String {
        let rules = HostileInOrderDeviceRule.cases(for: format)
        for rule in rules {
            try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                try backend.withQueueEnds(layout: layout, InOrderVisitor(layout: layout, rule: rule))
            }
        }
        return summary
            + " and \(rules.count) in-order ones, under IN_ORDER; each broke the driver, which took back every buffer"
    }

    struct InOrderVisitor: QueueEndsVisitor {
        let layout: RegionLayout
        let rule: HostileInOrderDeviceRule

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            try ends.initialize(layout)
            let code = rule.code
            var driver = try attachDriver(ends.driver.region, notifier: ends.driver.notifier, bufferSize: 256)
            let ring = HostileRingWriter(region: ends.device.region, layout: layout)
            try rule.submitChains(to: &driver)
            rule.plant(ring)
            var accounted = 0
            for expected in rule.goodTakes {
                guard let used = try driver.takeUsed() else {
                    throw CheckFailure(
                        "rule \(rule): the driver did not take the valid batch planted before the bad one"
                    )
                }
                try expect(
                    used.id == expected.id && used.writtenByteCount == expected.written,
                    "rule \(rule): the driver took chain \(used.id) with \(used.writtenByteCount) bytes; expected \(expected.id) with \(expected.written)"
                )
                try driver.free(used)
                accounted += 1
            }
            _ = try HostileDeviceCheck.takeViolation(&driver, rule: "\(rule)", code: code)
            try HostileDeviceCheck.expectEveryChainBack(
                &driver,
                rule: "\(rule)",
                code: code,
                accounted: accounted,
                chains: HostileInOrderDeviceRule.chainCount,
                queueSize: HostileInOrderDeviceRule.queueSize
            )
        }
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout
        let rule: Rule

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            try ends.initialize(layout)
            let code = rule.code
            var driver = try attachDriver(ends.driver.region, notifier: ends.driver.notifier, bufferSize: 256)
            let ring = HostileRingWriter(region: ends.device.region, layout: layout)
            var first = driver.makeChain()
            try driver.appendReadable(to: &first, copying: [1, 2, 3])
            let firstID = try driver.submit(first)
            var second = driver.makeChain()
            try driver.appendReadable(to: &second, copying: [4, 5, 6])
            try driver.appendWritable(to: &second, capacity: 64)
            let secondID = try driver.submit(second)
            try expect(
                firstID == 0 && secondID == 1,
                "rule \(rule): the driver gave its first chains ids \(firstID) and \(secondID); the planted ring expects 0 and 1"
            )

            rule.plant(ring)
            var accounted = 0
            for _ in 0..<rule.goodTakesBefore {
                guard let used = try driver.takeUsed() else {
                    throw CheckFailure(
                        "rule \(rule): the driver did not see the valid used element planted before the bad one"
                    )
                }
                try driver.free(used)
                accounted += 1
            }
            _ = try HostileDeviceCheck.takeViolation(&driver, rule: "\(rule)", code: code)
            let later = try expectError(.queueBroken, "rule \(rule): taking again from the broken driver") {
                _ = try driver.takeUsed()
            }
            try expect(
                later.cause == code,
                "rule \(rule): the broken queue names cause \(String(describing: later.cause)), not \(code)"
            )
            _ = try expectError(.queueBroken, "rule \(rule): waiting on the broken driver") { try driver.waitForUsed() }
            var chain = driver.makeChain()
            _ = try expectError(.queueBroken, "rule \(rule): building a chain on the broken driver") {
                try driver.appendWritable(to: &chain)
            }
            try driver.discard(chain)

            try HostileDeviceCheck.expectEveryChainBack(
                &driver,
                rule: "\(rule)",
                code: code,
                accounted: accounted,
                chains: 2,
                queueSize: HostileDeviceCheck.queueSize
            )
        }
    }

    /// Takes the planted used element: the driver must report `code`, as a peer violation, and
    /// be broken by it.
    static func takeViolation<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>,
        rule: String,
        code: VirtqueueError.Code
    ) throws -> VirtqueueError {
        let error = try expectError(code, "rule \(rule): taking the planted used element") {
            _ = try driver.takeUsed()
        }
        try expect(error.isPeerViolation, "rule \(rule): \(error) is not marked as a peer violation")
        try expect(driver.isBroken, "rule \(rule): the driver is not broken after \(error)")
        return error
    }

    /// After the violation, every chain still in flight comes back abandoned with `code` and no
    /// bytes written; with the `accounted` ones taken before, all `chains` submitted came back,
    /// and every buffer and all `queueSize` descriptors are free.
    static func expectEveryChainBack<Region: GuestMemory & ~Copyable, Notify: Notifier>(
        _ driver: inout DriverQueue<Region, Notify>,
        rule: String,
        code: VirtqueueError.Code,
        accounted: Int,
        chains: Int,
        queueSize: Int
    ) throws {
        var accounted = accounted
        while let abandoned = driver.takeAbandoned() {
            try expect(
                abandoned.status == .abandoned(code) && abandoned.writtenByteCount == 0,
                "rule \(rule): chain \(abandoned.id) came back \(abandoned.status) with \(abandoned.writtenByteCount) bytes; expected abandoned(\(code)) with 0"
            )
            try driver.free(abandoned)
            accounted += 1
        }
        try expect(accounted == chains, "rule \(rule): \(accounted) of \(chains) submitted chains came back")
        try expect(
            driver.inFlightCount == 0 && driver.freeBufferCount == driver.bufferCount
                && driver.freeDescriptorCount == queueSize,
            "rule \(rule): \(driver.inFlightCount) chains in flight, \(driver.freeBufferCount) of \(driver.bufferCount) buffers and \(driver.freeDescriptorCount) of \(queueSize) descriptors free after taking everything back"
        )
    }
}
