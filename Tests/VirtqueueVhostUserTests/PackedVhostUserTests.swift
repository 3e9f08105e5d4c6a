import Glibc
import Testing
import Virtqueue
import VirtqueueVhostUser

extension VhostUserTests {
    /// SET_VRING_BASE / GET_VRING_BASE's number in each ring format (`VhostUserVringBase`), against
    /// the bytes QEMU 7.2 and DPDK 22.11 send, and each bad value a front-end can plant.
    @Suite struct VringBase {
        @Test func aSplitBaseIsTheNextAvailableIndexAndAboveSixteenBitsIsRefused() throws {
            #expect(VhostUserVringBase.encode(QueueCursor(nextAvailable: 300, nextUsed: 298), format: .split) == 300)
            let cursor = try VhostUserVringBase.decode(65535, format: .split, size: 256, context: "SET_VRING_BASE")
            #expect(cursor.nextAvailable == 65535)
            let error = #expect(throws: VhostUserError.self) {
                try VhostUserVringBase.decode(65536, format: .split, size: 256, context: "SET_VRING_BASE: queue 0")
            }
            #expect(error?.code == .invalidValue)
            #expect(error?.message.contains("base 65536 is above 65535") == true, "\(String(describing: error))")
        }

        /// QEMU's `virtio_queue_packed_get_last_avail_idx`: the available position (index, wrap
        /// counter in bit 15) in bits 0–15, the used one in bits 16–31; a fresh ring is 0x80008000.
        @Test func aPackedBaseCarriesBothPositionsAsQEMUSendsThem() throws {
            #expect(VhostUserVringBase.encode(.packedStart, format: .packed) == 0x8000_8000)
            let lap = PackedRingPosition(index: 5, wrapCounter: false).cursorValue
            let cursor = QueueCursor(nextAvailable: lap, nextUsed: lap)
            #expect(VhostUserVringBase.encode(cursor, format: .packed) == 0x0005_0005)
            #expect(try VhostUserVringBase.decode(0x8000_8000, format: .packed, size: 256, context: "") == .packedStart)
            #expect(try VhostUserVringBase.decode(0x0005_0005, format: .packed, size: 256, context: "") == cursor)
            // DPDK 22.11's virtio-user sends only bits 0–15 (used = available).
            #expect(try VhostUserVringBase.decode(0x8000, format: .packed, size: 256, context: "") == .packedStart)
            #expect(try VhostUserVringBase.decode(0x0005, format: .packed, size: 256, context: "") == cursor)
        }

        @Test(
            "every position of a ring, any size, on either lap, comes back as it was encoded",
            arguments: [1, 3, 257, 32768]
        )
        func packedPositionsRoundTrip(_ size: Int) throws {
            for index in Set([0, 1, size / 2, size - 1]) where index < size {
                for wrap in [false, true] {
                    let position = PackedRingPosition(index: UInt16(index), wrapCounter: wrap).cursorValue
                    let cursor = QueueCursor(nextAvailable: position, nextUsed: position)
                    let num = VhostUserVringBase.encode(cursor, format: .packed)
                    #expect(try VhostUserVringBase.decode(num, format: .packed, size: size, context: "") == cursor)
                }
            }
        }

        /// A bad packed base, the queue size, and what the error must name.
        struct BadBase: Sendable, CustomTestStringConvertible {
            var num: UInt32
            var size: Int
            var named: String
            var testDescription: String { "base 0x\(String(num, radix: 16)), size \(size)" }
        }

        @Test(
            "a packed base the ring cannot have is refused, naming the value",
            arguments: [
                // The available index at the queue size (bits 0–14 = 256 of 256).
                BadBase(num: 0x8100, size: 256, named: "available position at 256 (wrap 1)"),
                BadBase(num: 0x0100_0100, size: 256, named: "available position at 256 (wrap 0)"),
                // The largest index, in a ring one smaller.
                BadBase(num: 0xFFFF, size: 32767, named: "32767 (wrap 1), not below the queue size 32767"),
                // The used position elsewhere than the available one: buffers in flight that no
                // packed inflight record can give back.
                BadBase(num: 0x8001_8000, size: 256, named: "used position at 1 (wrap 1)"),
                BadBase(
                    num: 0x8000_0000,
                    size: 256,
                    named: "used position at 0 (wrap 1) and the available one at 0 (wrap 0)"
                ),
            ]
        )
        func aBadPackedBaseIsRefused(_ bad: BadBase) throws {
            let error = #expect(throws: VhostUserError.self) {
                try VhostUserVringBase.decode(
                    bad.num,
                    format: .packed,
                    size: bad.size,
                    context: "SET_VRING_BASE: queue 0"
                )
            }
            #expect(error?.code == .invalidValue)
            #expect(error?.message.contains(bad.named) == true, "\(String(describing: error))")
            #expect(error?.message.contains("SET_VRING_BASE: queue 0") == true)
        }
    }
}

extension VhostUserTests.HostileFrontEnd {
    /// SET_VRING_NUM's power-of-two rule is the split ring's only: refused there, accepted for a
    /// packed ring (its size need not be a power of two).
    @Test(arguments: RingFormats.running)
    func aQueueSizeThatIsNotAPowerOfTwoIsRefusedOnlyForTheSplitRing(_ format: RingFormat) throws {
        let log = LogCollector()
        let backend = try VhostUserBackend<Shout>(log: log.sink)
        let (frontEnd, thread) = try connect(backend)
        try frontEnd.negotiate(format: format)
        let status = try frontEnd.ack(.setVringNum(VhostUserVringState(index: 0, num: 100)))
        if format == .split {
            #expect(status != 0)
            let record = try #require(log.first(.invalidValue))
            #expect(record.error?.message.contains("queue size 100 is not a power of two") == true, "\(record)")
        } else {
            #expect(status == 0)
        }
        try frontEnd.expectSuccess(.setVringNum(VhostUserVringState(index: 0, num: 64)))
        try expectSurvives(frontEnd, thread, backend)
    }

    /// Over the wire, with RING_PACKED negotiated: each bad base is refused with a failed
    /// REPLY_ACK and a typed error naming it; the good one starts the ring, and GET_VRING_BASE
    /// answers both positions where the driver stands.
    @Test(
        .enabled(
            if: RingFormats.running.contains(.packed),
            "the ring core does not run the packed ring yet (branch packed-core)"
        )
    )
    func aPackedBaseTheRingCannotHaveIsRefusedOverTheWire() throws {
        let log = LogCollector()
        let backend = try VhostUserBackend<Shout>(log: log.sink)
        let (frontEnd, thread) = try connect(backend)
        try frontEnd.negotiate(format: .packed)
        try frontEnd.expectSuccess(.setVringNum(VhostUserVringState(index: 0, num: UInt32(TestFrontEnd.queueSize))))
        for bad: UInt32 in [0x8040, 0x8001_8000] {
            #expect(try frontEnd.ack(.setVringBase(VhostUserVringState(index: 0, num: bad))) != 0)
        }
        let errors = log.all.compactMap(\.error).filter { $0.code == .invalidValue }
        #expect(errors.count == 2)
        #expect(errors.first?.message.contains("available position at 64 (wrap 1)") == true, "\(errors)")
        #expect(errors.last?.message.contains("used position at 1 (wrap 1)") == true, "\(errors)")
        try frontEnd.startRing(0)
        var driver = try frontEnd.makeDriver(0)
        // 100 requests of two descriptors in batches of 20: the 64 descriptors wrap three times.
        for batch in 0..<5 {
            let texts = (0..<20).map { "packed request \(batch * 20 + $0)" }
            #expect(try exchange(&driver, texts) == texts.map { $0.uppercased() })
        }
        let stopped = try frontEnd.stopRing(0)
        #expect(stopped == VhostUserVringBase.encode(driver.cursor, format: .packed), "0x\(String(stopped, radix: 16))")
        #expect(log.all.contains { $0.message.contains("started: packed ring, size 64") })
        try expectSurvives(frontEnd, thread, backend)
    }

    /// The packed ring runs without inflight tracking: the area QEMU asked for is left untouched,
    /// and the ring serves. A later connection that only hands the kept area back
    /// (SET_INFLIGHT_FD without GET_INFLIGHT_FD: a reconnect after the back-end went away) cannot
    /// resume a packed ring, and its start is refused, naming why.
    @Test(
        .enabled(
            if: RingFormats.running.contains(.packed),
            "the ring core does not run the packed ring yet (branch packed-core)"
        )
    )
    func aPackedRingLeavesTheInflightAreaUntouchedAndIsNotResumedFromIt() throws {
        let log = LogCollector()
        let backend = try VhostUserBackend<Shout>(log: log.sink)
        let (first, firstThread) = try connect(backend)
        try first.negotiate(inflight: true, format: .packed)
        let area = try VhostUserTests.Inflight.openArea(first)
        try first.expectSuccess(.setInflightFileDescriptor(area.description, area.owner))
        try first.startRing(0)
        var driver = try first.makeDriver(0)
        let texts = (0..<10).map { "packed, no journal \($0)" }
        #expect(try exchange(&driver, texts) == texts.map { $0.uppercased() })
        #expect(area.u16(queue: 0, at: 8) == 0, "the record's version: never claimed")
        #expect((0..<TestFrontEnd.queueSize).allSatisfy { area.flag(queue: 0, head: UInt16($0)) == 0 })
        #expect(log.all.contains { $0.message.contains("runs without inflight tracking") })
        first.hangUp()
        #expect(firstThread.join().flatMap { $0 } == nil)

        let (frontEnd, thread) = try reconnect(backend, reusing: first)
        try frontEnd.negotiate(inflight: true, format: .packed)
        try frontEnd.expectSuccess(.setInflightFileDescriptor(area.description, area.owner))
        try startRingExpectingRefusal(frontEnd)
        let record = try #require(log.first(.invalidInflightArea))
        #expect(record.error?.message.contains("a packed ring cannot be resumed") == true, "\(record)")
        try expectSurvives(frontEnd, thread, backend)
    }
}
