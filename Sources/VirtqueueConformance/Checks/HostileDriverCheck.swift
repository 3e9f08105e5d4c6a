import Virtqueue

/// ``ConformanceCheck/hostileDriver``: the device under test; a hostile driver plants each
/// device-side violation of `docs/trust-model.md` through the backend's driver end.
enum HostileDriverCheck {
    static var queueSize: Int { HostileDriverRule.queueSize }

    /// The rules, from the one table both this check and the core's own tests use (those of the
    /// run's ring format).
    typealias Rule = HostileDriverRule

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        for rule in Rule.cases(for: context.ringFormat) {
            let layout = try context.makeLayout(queueSize: queueSize, dataAreaSize: 4096, features: rule.features)
            try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                try backend.withQueueEnds(layout: layout, Visitor(layout: layout, rule: rule))
            }
        }
        return
            "\(Rule.cases(for: context.ringFormat).count) \(context.ringFormat) hostile chains planted through the driver's end; each broke the device"
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout
        let rule: Rule

        func visit<Region: GuestMemory & ~Copyable & Sendable, Notify: Notifier>(
            _ ends: consuming QueueEnds<Region, Notify>
        ) throws {
            try ends.initialize(layout)
            let code = rule.code
            var device = try attachDevice(
                ends.device.region,
                notifier: ends.device.notifier,
                supportedFeatures: layout.features
            )
            let ring = HostileRingWriter(region: ends.driver.region, layout: layout)
            rule.plant(ring)
            var held: DeviceRequest?
            if rule.requestsBefore > 0 {
                guard let request = try device.nextRequest() else {
                    throw CheckFailure(
                        "rule \(rule): the device did not see the valid chain planted before the bad one"
                    )
                }
                held = consume request
            }
            let error = try expectError(code, "rule \(rule): taking the planted chain") { _ = try device.nextRequest() }
            try expect(error.isPeerViolation, "rule \(rule): \(error) is not marked as a peer violation")
            try expect(
                device.isBroken && device.brokenReason?.code == code,
                "rule \(rule): the device's broken reason is \(String(describing: device.brokenReason)), not \(code)"
            )
            let later = try expectError(.queueBroken, "rule \(rule): taking again from the broken device") {
                _ = try device.nextRequest()
            }
            try expect(
                later.cause == code,
                "rule \(rule): the broken queue names cause \(String(describing: later.cause)), not \(code)"
            )
            _ = try expectError(.queueBroken, "rule \(rule): waiting on the broken device") {
                try device.waitForRequests()
            }
            _ = try expectError(.queueBroken, "rule \(rule): notifying from the broken device") {
                try device.notifyIfNeeded()
            }
            if let request = held.take() {
                var completed = false
                do throws(VirtqueueError) {
                    try device.complete(request, written: 0)
                    completed = true
                } catch {
                    try expect(
                        error.code == .queueBroken,
                        "rule \(rule): completing a held request on the broken device threw \(error), not queueBroken"
                    )
                }
                try expect(!completed, "rule \(rule): the broken device completed a held request")
            }
            try expect(
                device.takenCount == 0,
                "rule \(rule): the broken device still holds \(device.takenCount) requests"
            )
        }
    }
}
