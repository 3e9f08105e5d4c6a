import CVirtqueueSystem
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueVhostUser

extension VhostUserTests {
    /// A hostile front-end: each class of bad message is refused as designed (a failed
    /// REPLY_ACK, or the connection closed), logged with a typed error naming the value; the
    /// back-end keeps serving, and a following honest session on a new connection works.
    @Suite struct HostileFrontEnd {
        /// Checks the session still answers, hangs up, expects a clean end, then an honest session.
        func expectSurvives(
            _ frontEnd: TestFrontEnd,
            _ thread: BackendThread,
            _ backend: VhostUserBackend<Shout>,
            sourceLocation: SourceLocation = #_sourceLocation
        ) throws {
            #expect(try frontEnd.getU64(.getQueueNum) == 2, sourceLocation: sourceLocation)
            frontEnd.hangUp()
            let end = thread.join()
            #expect(end != nil, "the back-end did not end", sourceLocation: sourceLocation)
            #expect(end.flatMap { $0 } == nil, sourceLocation: sourceLocation)
            try expectHonestSessionWorks(backend, sourceLocation: sourceLocation)
        }

        @Test func overlappingRegionsAreRefused() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate(sendMemoryTable: false)
            var table = frontEnd.memory.table
            table.regions[1].guestPhysicalAddress = 0xF000  // inside region 0's 0..<0x10000
            #expect(try frontEnd.ack(.setMemoryTable(table)) != 0)
            let record = try #require(log.first(.overlappingRegions))
            #expect(record.level == .warning && record.error?.message.contains("0xf000") == true)
            // One at a time, the same overlap is refused too.
            try frontEnd.expectSuccess(
                .addMemoryRegion(
                    frontEnd.memory.description(0),
                    .init(borrowing: frontEnd.memory.regions[0].fileDescriptor)
                )
            )
            var second = frontEnd.memory.description(1)
            second.guestPhysicalAddress = 0xF000
            #expect(
                try frontEnd.ack(.addMemoryRegion(second, .init(borrowing: frontEnd.memory.regions[1].fileDescriptor)))
                    != 0
            )
            #expect(log.errorCodes.filter { $0 == .overlappingRegions }.count == 2)
            try expectSurvives(frontEnd, thread, backend)
        }

        @Test func aRegionPastTheEndOfItsFileIsRefused() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate(sendMemoryTable: false)
            var table = frontEnd.memory.table
            table.regions[1].mmapOffset += 0x1000  // the file holds 0x1800 + 0x40000 bytes
            #expect(try frontEnd.ack(.setMemoryTable(table)) != 0)
            let record = try #require(log.first(.regionBeyondFile))
            #expect(record.error?.message.contains("mmap offset 0x2800 + size 0x40000") == true, "\(record)")
            // A descriptor that is not a regular file (an eventfd) is refused the same way.
            table = frontEnd.memory.table
            table.fileDescriptors[0] = VhostUserFileDescriptor(borrowing: frontEnd.kicks[0])
            #expect(try frontEnd.ack(.setMemoryTable(table)) != 0)
            #expect(log.errorCodes.filter { $0 == .regionBeyondFile }.count == 2)
            try expectSurvives(frontEnd, thread, backend)
        }

        @Test func aRingAddressOutsideEveryRegionIsRefused() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.expectSuccess(.setVringNum(VhostUserVringState(index: 0, num: 64)))
            let placement = frontEnd.placement(0)
            let good = VhostUserVringAddress(
                index: 0,
                descriptor: frontEnd.memory.userAddress(of: placement.descriptorArea),
                used: frontEnd.memory.userAddress(of: placement.deviceArea),
                available: frontEnd.memory.userAddress(of: placement.driverArea)
            )
            var outside = good
            outside.used = 0x1000  // no region's user range
            #expect(try frontEnd.ack(.setVringAddress(outside)) != 0)
            let record = try #require(log.first(.unmappedRingAddress))
            #expect(record.error?.message.contains("used ring at user address 0x1000") == true, "\(record)")
            // A descriptor table that starts inside region 0 and runs past its end.
            var straddling = good
            straddling.descriptor = frontEnd.memory.userAddress(of: 0x1_0000 - 0x200)
            #expect(try frontEnd.ack(.setVringAddress(straddling)) != 0)
            #expect(log.errorCodes.filter { $0 == .unmappedRingAddress }.count == 2)
            // Rings in the gap between the regions can be named only by guest-physical address, which
            // SET_VRING_ADDR does not carry; the good addresses are accepted.
            try frontEnd.expectSuccess(.setVringAddress(good))
            try expectSurvives(frontEnd, thread, backend)
        }

        @Test func aMemoryTableWhileARingRunsIsRefusedAndTheRingGoesOn() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.startRing(0)
            var driver = try frontEnd.makeDriver(0)
            #expect(try exchange(&driver, ["first"]) == ["FIRST"])
            #expect(try frontEnd.ack(.setMemoryTable(frontEnd.memory.table)) != 0)
            #expect(try frontEnd.ack(.removeMemoryRegion(frontEnd.memory.description(1))) != 0)
            #expect(try frontEnd.ack(.setVringNum(VhostUserVringState(index: 0, num: 32))) != 0)
            #expect(log.errorCodes.filter { $0 == .invalidState }.count == 3)
            let record = try #require(log.first(.invalidState))
            #expect(record.error?.message.contains("SET_MEM_TABLE while queue 0 runs") == true, "\(record)")
            #expect(try exchange(&driver, ["still", "served"]) == ["STILL", "SERVED"])
            // Stopped, the ring's memory may change.
            #expect(try frontEnd.stopRing(0) == 3)
            try frontEnd.expectSuccess(.setMemoryTable(frontEnd.memory.table))
            try expectSurvives(frontEnd, thread, backend)
        }

        @Test func aQueueIndexOutOfRangeIsRefusedAndOnGetVringBaseClosesTheConnection() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            var (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            #expect(try frontEnd.ack(.setVringNum(VhostUserVringState(index: 2, num: 64))) != 0)
            #expect(try frontEnd.ack(.setVringEnable(VhostUserVringState(index: 200, num: 1))) != 0)
            #expect(log.errorCodes.filter { $0 == .queueIndexOutOfRange }.count == 2)
            let record = try #require(log.first(.queueIndexOutOfRange))
            #expect(record.error?.message.contains("queue index 2") == true, "\(record)")
            try expectSurvives(frontEnd, thread, backend)

            // GET_VRING_BASE has a reply of its own that cannot say "failed": the connection closes.
            (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.socket.send(try VhostUserMessage.getVringBase(VhostUserVringState(index: 0, num: 0)).encode())
            _ = try frontEnd.socket.receive(expectingReply: true, limits: .shout, idleTimeout: .seconds(5))
            var bytes = try VhostUserMessage.getVringBase(VhostUserVringState(index: 0, num: 0)).encode().bytes
            bytes[12] = 9  // queue index 9
            try sendRaw(frontEnd.socket, bytes)
            let end = try #require(thread.join())
            #expect(end?.code == .queueIndexOutOfRange)
            try expectHonestSessionWorks(backend)
        }

        @Test func featuresNotOfferedAreRefused() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            #expect(try frontEnd.ack(.setFeatures(frontEnd.acked | Features.accessPlatform.rawValue)) != 0)
            let record = try #require(log.first(.featureNotOffered))
            #expect(record.error?.message.contains("ACCESS_PLATFORM") == true, "\(record)")
            #expect(try frontEnd.ack(.setFeatures(frontEnd.acked | 1 << 5)) != 0)
            #expect(try frontEnd.ack(.setProtocolFeatures([.replyAck, .status])) != 0)
            #expect(log.errorCodes.filter { $0 == .featureNotOffered }.count == 3)
            // Without VERSION_1 the ring core refuses to start the ring: the kick is refused.
            try frontEnd.expectSuccess(.setFeatures(VhostUserProtocolFeatures.virtioFeatureBit))
            try frontEnd.expectSuccess(.setVringNum(VhostUserVringState(index: 0, num: 64)))
            try frontEnd.expectSuccess(.setVringBase(VhostUserVringState(index: 0, num: 0)))
            let placement = frontEnd.placement(0)
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
            try frontEnd.expectSuccess(.setVringEnable(VhostUserVringState(index: 0, num: 1)))
            #expect(try frontEnd.ack(.setVringKick(VhostUserVringFile(index: 0, fileDescriptor: nil))) != 0)
            #expect(log.first(.invalidRing)?.error?.message.contains("VERSION_1") == true)
            try expectSurvives(frontEnd, thread, backend)
        }

        @Test func aFramingErrorClosesTheConnection() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.startRing(0)
            try sendRaw(frontEnd.socket, raw(VhostUserRequest.getFeatures, flags: 2))
            let end = try #require(thread.join())
            #expect(end?.code == .unsupportedVersion)
            #expect(log.first(.unsupportedVersion)?.level == .error)
            #expect(log.all.contains { $0.queue == 0 && $0.message.contains("the connection ended") })
            try expectHonestSessionWorks(backend)
        }

        @Test func unsupportedRequestsAreRefusedWithoutClosing() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            #expect(try frontEnd.ack(.setLogFileDescriptor(.init(borrowing: frontEnd.kicks[0]))) != 0)
            #expect(try frontEnd.ack(.setVringEndian(VhostUserVringState(index: 0, num: 1))) != 0)
            #expect(try frontEnd.ack(.unsupported(VhostUserRequest(rawValue: 99))) != 0)
            #expect(log.errorCodes.filter { $0 == .requestNotSupported }.count == 3)
            try expectSurvives(frontEnd, thread, backend)
        }
    }
}
