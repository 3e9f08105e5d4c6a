import CVirtqueueSystem
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueVhostUser

extension VhostUserTests {
    /// INFLIGHT_SHMFD: the back-end records what it takes in the front-end's inflight area, and a
    /// back-end on a later connection finishes what an earlier one left in flight — once each, in
    /// the order it was taken. The area is peer memory: each bad value planted in it is refused.
    @Suite(.serialized) struct Inflight {
        static let recordSize = (16 + 16 * TestFrontEnd.queueSize + 63) & ~63

        /// A connection that negotiated INFLIGHT_SHMFD and asked for the area, as QEMU does
        /// before it starts the rings; returns the area, mapped on the front-end's side.
        static func openArea(_ frontEnd: TestFrontEnd) throws -> InflightMapping {
            let request = VhostUserInflightDescription(queueCount: 2, queueSize: UInt16(TestFrontEnd.queueSize))
            guard
                case .inflight(let description, let descriptor) = try frontEnd.get(.getInflightFileDescriptor(request))
            else { throw VhostUserError(.unexpectedReply, "no inflight reply") }
            #expect(description.mmapSize >= UInt64(2 * recordSize))
            #expect(description.queueCount == 2 && description.queueSize == UInt16(TestFrontEnd.queueSize))
            return try InflightMapping(description, descriptor)
        }

        /// Serves five requests on connection 1 and hangs up; three more are made available with no
        /// back-end to serve them, and the test marks two of them in flight, as a back-end that
        /// died while serving them would have left the area. With `inOrder`, VIRTIO_F_IN_ORDER is
        /// acked too.
        static func leaveTwoInFlight(_ backend: VhostUserBackend<Shout>, inOrder: Bool = false) throws -> Crashed {
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate(inflight: true, inOrder: inOrder)
            let area = try openArea(frontEnd)
            try frontEnd.expectSuccess(.setInflightFileDescriptor(area.description, area.owner))
            try frontEnd.startRing(0)
            var driver = try frontEnd.makeDriver(0)
            let first = (0..<5).map { "served before the crash \($0)" }
            #expect(try exchange(&driver, first) == first.map { $0.uppercased() })
            // The back-end kept the record: version 1, 64 entries, used_idx 5, nothing in flight.
            #expect(area.u16(queue: 0, at: 8) == 1)
            #expect(area.u16(queue: 0, at: 10) == UInt16(TestFrontEnd.queueSize))
            #expect(area.u16(queue: 0, at: 14) == 5)
            #expect((0..<TestFrontEnd.queueSize).allSatisfy { area.flag(queue: 0, head: UInt16($0)) == 0 })
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)

            var heads: [UInt16] = []
            for text in ["first in flight", "second in flight", "not yet taken"] {
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, copying: Array(text.utf8))
                try driver.appendWritable(to: &chain, capacity: 64)
                heads.append(try driver.submit(chain))
            }
            try driver.notifyIfNeeded()
            // The dead back-end took the first two (the second one first: counter 40 before 41).
            area.mark(queue: 0, head: heads[0], counter: 41)
            area.mark(queue: 0, head: heads[1], counter: 40)
            return Crashed(frontEnd: frontEnd, driver: driver, area: area, heads: heads)
        }

        /// What a crashed back-end left: the front-end of its connection, the driver, the area and
        /// the heads made available (two marked in flight, one not taken).
        struct Crashed: ~Copyable {
            var frontEnd: TestFrontEnd
            var driver: FrontEndDriver
            var area: InflightMapping
            var heads: [UInt16]
        }

        /// Without IN_ORDER the heads left in flight are served again in the order the dead
        /// back-end took them (its counters: the second first); under IN_ORDER (bit 35) in the
        /// order they were made available, whatever the counters say — the order the device must
        /// use them in, and the one the in-order driver checks.
        @Test(arguments: [false, true])
        func aLaterBackEndServesWhatWasLeftInFlightFirstInTheOrderTakenOnceEach(inOrder: Bool) throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let crashed = try Self.leaveTwoInFlight(backend, inOrder: inOrder)
            let (first, area, heads) = (crashed.frontEnd, crashed.area, crashed.heads)

            var driver = crashed.driver
            let (frontEnd, thread) = try reconnect(backend, reusing: first)
            try frontEnd.negotiate(inflight: true, inOrder: inOrder)
            try frontEnd.expectSuccess(.setInflightFileDescriptor(area.description, area.owner))
            // The front-end cannot know the dead back-end's base; it sends used.idx (5), as QEMU does.
            try frontEnd.startRing(0, base: 5)
            let used = try takeUsedInOrder(&driver, count: 3)
            let order = used.map(\.id)
            let replies = Dictionary(uniqueKeysWithValues: used.map { ($0.id, $0.reply) })
            #expect(order == (inOrder ? [heads[0], heads[1], heads[2]] : [heads[1], heads[0], heads[2]]))
            #expect(replies[heads[0]] == "FIRST IN FLIGHT")
            #expect(replies[heads[1]] == "SECOND IN FLIGHT")
            #expect(replies[heads[2]] == "NOT YET TAKEN")
            // Nothing repeated: the ring's index counts 8, and nothing is marked any more.
            #expect(try frontEnd.stopRing(0) == 8)
            #expect(area.u16(queue: 0, at: 14) == 8)
            #expect((0..<TestFrontEnd.queueSize).allSatisfy { area.flag(queue: 0, head: UInt16($0)) == 0 })
            #expect(log.all.contains { $0.message.hasPrefix("resuming 2 requests") })
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        @Test func aBatchPublishedButNotRecordedIsNotServedTwice() throws {
            let backend = try VhostUserBackend<Shout>()
            let crashed = try Self.leaveTwoInFlight(backend)
            let (first, area, heads) = (crashed.frontEnd, crashed.area, crashed.heads)
            // The dead back-end had also published head X (used.idx 5 in the ring) but died before
            // it cleared X's mark and wrote used_idx: the record still says 4, with X the last batch.
            area.setU16(queue: 0, at: 14, 4)
            area.setU16(queue: 0, at: 12, 63)
            area.mark(queue: 0, head: 63, counter: 1)

            var driver = crashed.driver
            let (frontEnd, thread) = try reconnect(backend, reusing: first)
            try frontEnd.negotiate(inflight: true)
            try frontEnd.expectSuccess(.setInflightFileDescriptor(area.description, area.owner))
            try frontEnd.startRing(0, base: 5)
            let order = try takeUsedInOrder(&driver, count: 3).map(\.id)
            #expect(order == [heads[1], heads[0], heads[2]])
            #expect(area.flag(queue: 0, head: 63) == 0)
            #expect(try frontEnd.stopRing(0) == 8)
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        /// A value planted in the record, and the error the ring's start is refused with.
        struct PlantedValue: CustomTestStringConvertible, Sendable {
            var name: String
            var offset: Int
            var value: UInt16
            var testDescription: String { name }
        }

        @Test(arguments: [
            PlantedValue(name: "version 7", offset: 8, value: 7),
            PlantedValue(name: "desc_num 32 for a ring of 64", offset: 10, value: 32),
            PlantedValue(name: "last_batch_head 64 with used_idx behind", offset: 12, value: 64),
            PlantedValue(name: "inflight flag 2", offset: 16, value: 2),
        ])
        func aMalformedRecordIsRefusedAndTheConnectionGoesOn(_ planted: PlantedValue) throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let crashed = try Self.leaveTwoInFlight(backend)
            let (first, area, heads) = (crashed.frontEnd, crashed.area, crashed.heads)
            let saved = area.u16(queue: 0, at: planted.offset)
            area.setU16(queue: 0, at: planted.offset, planted.value)
            if planted.offset == 12 { area.setU16(queue: 0, at: 14, 4) }

            var driver = crashed.driver
            let (frontEnd, thread) = try reconnect(backend, reusing: first)
            try frontEnd.negotiate(inflight: true)
            try frontEnd.expectSuccess(.setInflightFileDescriptor(area.description, area.owner))
            // The ring cannot start: the last of its start messages (ENABLE) is refused.
            try startRingExpectingRefusal(frontEnd)
            let refusal = log.first(.invalidInflightArea)
            #expect(refusal != nil, "\(log.all)")
            #expect(refusal?.error?.message.contains("\(planted.value)") == true)

            // Repaired, the same connection serves everything once.
            area.setU16(queue: 0, at: planted.offset, saved)
            if planted.offset == 12 { area.setU16(queue: 0, at: 14, 5) }
            try frontEnd.expectSuccess(.setVringEnable(VhostUserVringState(index: 0, num: 1)))
            let served = Set(try takeUsedInOrder(&driver, count: 3).map(\.id))
            #expect(served == Set(heads))
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        /// Under IN_ORDER the heads in flight must be the available entries from `used.idx` on: a
        /// record that marks another head (63, never made available) is refused by name, and,
        /// repaired, the same connection serves the three requests once each, in order.
        @Test func underInOrderAMarkedHeadThatIsNotAnAvailableEntryInFlightIsRefused() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let crashed = try Self.leaveTwoInFlight(backend, inOrder: true)
            let (first, area, heads) = (crashed.frontEnd, crashed.area, crashed.heads)
            area.mark(queue: 0, head: 63, counter: 42)

            var driver = crashed.driver
            let (frontEnd, thread) = try reconnect(backend, reusing: first)
            try frontEnd.negotiate(inflight: true, inOrder: true)
            try frontEnd.expectSuccess(.setInflightFileDescriptor(area.description, area.owner))
            try startRingExpectingRefusal(frontEnd)
            let refusal = log.first(.invalidInflightArea)
            #expect(refusal?.error?.message.contains("head 63 differs") == true, "\(log.all)")

            area.setU16(queue: 0, at: 16 + 16 * 63, 0)
            try frontEnd.expectSuccess(.setVringEnable(VhostUserVringState(index: 0, num: 1)))
            #expect(try takeUsedInOrder(&driver, count: 3).map(\.id) == heads)
            #expect(try frontEnd.stopRing(0) == 8)
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        @Test func anAreaTooSmallForItsQueuesIsRefused() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate(inflight: true)
            let small = try makeMemfd(size: 4096)
            let description = VhostUserInflightDescription(
                mmapSize: 1024,
                mmapOffset: 0,
                queueCount: 2,
                queueSize: UInt16(TestFrontEnd.queueSize)
            )
            #expect(try frontEnd.ack(.setInflightFileDescriptor(description, .init(owning: small))) != 0)
            #expect(log.first(.invalidInflightArea)?.error?.message.contains("1024 bytes") == true)
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }
    }
}

/// ``TestFrontEnd/startRing(_:base:)`` for a ring that cannot start: SET_VRING_NUM / BASE /
/// ADDR / CALL / KICK succeed; ENABLE, which would start the ring, is refused.
func startRingExpectingRefusal(_ frontEnd: TestFrontEnd) throws {
    let placement = frontEnd.placement(0)
    try frontEnd.expectSuccess(.setVringNum(VhostUserVringState(index: 0, num: UInt32(TestFrontEnd.queueSize))))
    try frontEnd.expectSuccess(.setVringBase(VhostUserVringState(index: 0, num: 5)))
    try frontEnd.expectSuccess(
        .setVringAddress(
            VhostUserVringAddress(
                index: 0,
                descriptor: frontEnd.memory.userAddress(of: placement.descriptorArea),
                used: frontEnd.memory.userAddress(of: placement.deviceArea),
                available: frontEnd.memory.userAddress(of: placement.driverArea)
            )
        )
    )
    try frontEnd.expectSuccess(
        .setVringCall(VhostUserVringFile(index: 0, fileDescriptor: .init(borrowing: frontEnd.calls[0])))
    )
    try frontEnd.expectSuccess(
        .setVringKick(VhostUserVringFile(index: 0, fileDescriptor: .init(borrowing: frontEnd.kicks[0])))
    )
    #expect(try frontEnd.ack(.setVringEnable(VhostUserVringState(index: 0, num: 1))) != 0)
}

/// Waits for `count` used chains and returns each one's id and reply, in the order the used ring
/// returned them; the chains are freed.
func takeUsedInOrder(_ driver: inout FrontEndDriver, count: Int) throws -> [(id: UInt16, reply: String)] {
    var used: [(id: UInt16, reply: String)] = []
    while used.count < count {
        try driver.waitForUsed()
        while let chain = try driver.takeUsed() {
            var bytes = [UInt8](repeating: 0, count: chain.writtenByteCount)
            _ = try bytes.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: chain, into: $0) }
            used.append((chain.id, String(decoding: bytes, as: UTF8.self)))
            try driver.free(chain)
        }
    }
    return used
}

/// A new connection of the same front-end (its memory and eventfds) to `backend`.
func reconnect(
    _ backend: VhostUserBackend<Shout>,
    reusing frontEnd: TestFrontEnd
) throws -> (frontEnd: TestFrontEnd, thread: BackendThread) {
    let (frontEndSocket, backEndSocket) = try VhostUserSocket.makePair()
    let thread = BackendThread(backend, backEndSocket)
    return (TestFrontEnd(socket: frontEndSocket, reusing: frontEnd), thread)
}

/// The inflight area as the front-end sees it: its own mapping of the back-end's memfd.
final class InflightMapping: @unchecked Sendable {
    let description: VhostUserInflightDescription
    /// The area's descriptor, kept open by the front-end across connections (as QEMU does).
    let owner: VhostUserFileDescriptor
    let base: UnsafeMutableRawPointer
    let length: Int
    let recordSize = VhostUserTests.Inflight.recordSize

    init(_ description: VhostUserInflightDescription, _ descriptor: VhostUserFileDescriptor) throws {
        guard let fd = descriptor.fileDescriptor else { throw Errno.badFileDescriptor }
        let length = Int(description.mmapSize)
        let pointer = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, off_t(description.mmapOffset))
        guard let pointer, Int(bitPattern: pointer) != -1 else { throw Errno(rawValue: errno) }
        self.description = description
        self.owner = descriptor
        self.base = pointer
        self.length = length
    }

    deinit { munmap(base, length) }

    func u16(queue: Int, at offset: Int) -> UInt16 {
        UInt16(littleEndian: (base + queue * recordSize).loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    func setU16(queue: Int, at offset: Int, _ value: UInt16) {
        (base + queue * recordSize).storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    func flag(queue: Int, head: UInt16) -> UInt8 {
        (base + queue * recordSize + 16 + 16 * Int(head)).load(as: UInt8.self)
    }

    /// Marks `head` in flight with `counter`, as a back-end does when it takes the chain.
    func mark(queue: Int, head: UInt16, counter: UInt64) {
        let entry = base + queue * recordSize + 16 + 16 * Int(head)
        entry.storeBytes(of: counter.littleEndian, toByteOffset: 8, as: UInt64.self)
        entry.storeBytes(of: 1, as: UInt8.self)
    }
}
