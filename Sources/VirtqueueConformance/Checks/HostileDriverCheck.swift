import Virtqueue

/// ``ConformanceCheck/hostileDriver``: the device under test; a hostile driver plants each
/// device-side violation of `docs/trust-model.md` through the backend's driver end.
enum HostileDriverCheck {
    static let queueSize = 8
    static let flagNext: UInt16 = 1
    static let flagWrite: UInt16 = 2
    static let flagIndirect: UInt16 = 4

    /// One device-side rule, and how a hostile driver breaks it.
    enum Rule: String, CaseIterable {
        case availableIndexJump
        case headOutOfRange
        case nextOutOfRange
        case descriptorLoop
        case descriptorSelfLoop
        case chainLongerThanQueueThroughIndirectTable
        case chainLongerThanQueueMixingDirectAndIndirect
        case addressPlusLengthOverflows
        case bufferOutsideTheRegion
        case bufferRunningPastTheRegionEnd
        case bufferOverTheRings
        case writableBeforeReadable
        case writableBeforeReadableInIndirectTable
        case nestedIndirectTable
        case indirectLengthNotMultipleOf16
        case indirectLengthZero
        case indirectTableOutsideTheRegion
        case indirectTableAddressOverflows
        case indirectTogetherWithNext
        case indirectNotNegotiated
        case loopInsideIndirectTable
        case nextOutsideIndirectTable
        case headMadeAvailableTwice

        var code: VirtqueueError.Code {
            switch self {
            case .availableIndexJump: .availableIndexJump
            case .headOutOfRange: .headOutOfRange
            case .nextOutOfRange, .nextOutsideIndirectTable: .nextOutOfRange
            case .descriptorLoop, .descriptorSelfLoop, .loopInsideIndirectTable: .descriptorLoop
            case .chainLongerThanQueueThroughIndirectTable, .chainLongerThanQueueMixingDirectAndIndirect:
                .peerChainTooLong
            case .addressPlusLengthOverflows, .bufferOutsideTheRegion, .bufferRunningPastTheRegionEnd,
                .bufferOverTheRings:
                .bufferOutOfRange
            case .writableBeforeReadable, .writableBeforeReadableInIndirectTable: .writableBeforeReadable
            case .nestedIndirectTable: .nestedIndirect
            case .indirectLengthNotMultipleOf16, .indirectLengthZero: .indirectLengthInvalid
            case .indirectTableOutsideTheRegion, .indirectTableAddressOverflows: .indirectOutOfRange
            case .indirectTogetherWithNext: .indirectWithNext
            case .indirectNotNegotiated: .indirectNotNegotiated
            case .headMadeAvailableTwice: .headAlreadyInFlight
            }
        }

        var features: Features { self == .indirectNotNegotiated ? [.eventIndex] : .all }

        /// Requests the device takes, correctly, before the violation (and holds).
        var requestsBefore: Int { self == .headMadeAvailableTwice ? 1 : 0 }

        func plant<Region: GuestMemory & ~Copyable>(_ ring: borrowing HostileRingWriter<Region>) {
            let size = HostileDriverCheck.queueSize
            let next = HostileDriverCheck.flagNext
            let write = HostileDriverCheck.flagWrite
            let indirect = HostileDriverCheck.flagIndirect
            let table = Int(ring.data(1024))
            switch self {
            case .availableIndexJump:
                ring.descriptor(0, address: ring.data(0), length: 16)
                ring.availableIndex = UInt16(size + 1)
                return
            case .headOutOfRange:
                ring.makeAvailable(head: UInt16(size), slot: 0)
                ring.availableIndex = 1
                return
            case .nextOutOfRange:
                ring.descriptor(0, address: ring.data(0), length: 16, flags: next, next: UInt16(size))
            case .descriptorLoop:
                ring.descriptor(0, address: ring.data(0), length: 16, flags: next, next: 1)
                ring.descriptor(1, address: ring.data(16), length: 16, flags: next, next: 0)
            case .descriptorSelfLoop:
                ring.descriptor(3, address: ring.data(0), length: 16, flags: next, next: 3)
                ring.makeAvailable(head: 3, slot: 0)
                ring.availableIndex = 1
                return
            case .chainLongerThanQueueThroughIndirectTable:
                let count = size + 1
                for entry in 0..<count {
                    let last = entry == count - 1
                    ring.descriptor(
                        at: table + 16 * entry,
                        address: ring.data(16 * entry),
                        length: 16,
                        flags: last ? 0 : next,
                        next: last ? 0 : UInt16(entry + 1)
                    )
                }
                ring.descriptor(0, address: ring.data(1024), length: UInt32(16 * count), flags: indirect)
            case .chainLongerThanQueueMixingDirectAndIndirect:
                for index in 0..<4 {
                    ring.descriptor(
                        index,
                        address: ring.data(16 * index),
                        length: 16,
                        flags: next,
                        next: UInt16(index + 1)
                    )
                }
                let count = size - 3
                for entry in 0..<count {
                    let last = entry == count - 1
                    ring.descriptor(
                        at: table + 16 * entry,
                        address: ring.data(512),
                        length: 8,
                        flags: last ? 0 : next,
                        next: last ? 0 : UInt16(entry + 1)
                    )
                }
                ring.descriptor(4, address: ring.data(1024), length: UInt32(16 * count), flags: indirect)
            case .addressPlusLengthOverflows:
                ring.descriptor(0, address: UInt64.max - 8, length: 64)
            case .bufferOutsideTheRegion:
                ring.descriptor(0, address: UInt64(ring.layout.regionSize + 64), length: 16)
            case .bufferRunningPastTheRegionEnd:
                ring.descriptor(0, address: UInt64(ring.layout.regionSize - 8), length: 16, flags: write)
            case .bufferOverTheRings:
                ring.descriptor(0, address: UInt64(ring.queue.usedRingOffset), length: 16, flags: write)
            case .writableBeforeReadable:
                ring.descriptor(0, address: ring.data(0), length: 16, flags: write | next, next: 1)
                ring.descriptor(1, address: ring.data(16), length: 16)
            case .writableBeforeReadableInIndirectTable:
                ring.descriptor(at: table, address: ring.data(0), length: 16, flags: write | next, next: 1)
                ring.descriptor(at: table + 16, address: ring.data(16), length: 16)
                ring.descriptor(0, address: ring.data(1024), length: 32, flags: indirect)
            case .nestedIndirectTable:
                ring.descriptor(at: table, address: ring.data(2048), length: 16, flags: indirect)
                ring.descriptor(0, address: ring.data(1024), length: 16, flags: indirect)
            case .indirectLengthNotMultipleOf16:
                ring.descriptor(0, address: ring.data(1024), length: 24, flags: indirect)
            case .indirectLengthZero:
                ring.descriptor(0, address: ring.data(1024), length: 0, flags: indirect)
            case .indirectTableOutsideTheRegion:
                ring.descriptor(0, address: UInt64(ring.layout.regionSize - 16), length: 64, flags: indirect)
            case .indirectTableAddressOverflows:
                ring.descriptor(0, address: UInt64.max - 15, length: 32, flags: indirect)
            case .indirectTogetherWithNext:
                ring.descriptor(at: table, address: ring.data(0), length: 16)
                ring.descriptor(0, address: ring.data(1024), length: 16, flags: indirect | next, next: 1)
                ring.descriptor(1, address: ring.data(16), length: 16)
            case .indirectNotNegotiated:
                ring.descriptor(at: table, address: ring.data(0), length: 16)
                ring.descriptor(0, address: ring.data(1024), length: 16, flags: indirect)
            case .loopInsideIndirectTable:
                ring.descriptor(at: table, address: ring.data(0), length: 16, flags: next, next: 1)
                ring.descriptor(at: table + 16, address: ring.data(16), length: 16, flags: next, next: 0)
                ring.descriptor(0, address: ring.data(1024), length: 32, flags: indirect)
            case .nextOutsideIndirectTable:
                ring.descriptor(at: table, address: ring.data(0), length: 16, flags: next, next: 2)
                ring.descriptor(at: table + 16, address: ring.data(16), length: 16)
                ring.descriptor(0, address: ring.data(1024), length: 32, flags: indirect)
            case .headMadeAvailableTwice:
                ring.descriptor(0, address: ring.data(0), length: 16)
                ring.makeAvailable(head: 0, slot: 0)
                ring.makeAvailable(head: 0, slot: 1)
                ring.availableIndex = 2
                return
            }
            // Most rules plant a bad chain at head 0 and make it available.
            ring.makeAvailable(head: 0, slot: 0)
            ring.availableIndex = 1
        }
    }

    static func run(_ backend: some ConformanceBackend, _ context: CheckContext) throws -> String {
        for rule in Rule.allCases {
            let layout = try makeLayout(queueSize: queueSize, dataAreaSize: 4096, features: rule.features)
            try attempt("withQueueEnds(layout:_:), or a queue call inside it,") {
                try backend.withQueueEnds(layout: layout, Visitor(layout: layout, rule: rule))
            }
        }
        return "\(Rule.allCases.count) hostile chains planted through the driver's end; each broke the device"
    }

    struct Visitor: QueueEndsVisitor {
        let layout: RegionLayout
        let rule: Rule

        func visit<Region: GuestMemory & ~Copyable, Notify: Notifier>(
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
