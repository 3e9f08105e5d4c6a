import CVirtqueueSystem
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueVhostUser

extension VhostUserTests {
    /// The back-end role against a front-end of our own: guest memory in two memfd regions with a
    /// gap, rings placed by the front-end, a `DriverQueue` on the front-end's own mappings.
    @Suite struct Backend {
        @Test func requestsOnBothQueuesComeBackUpperCased() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.startRing(0)
            try frontEnd.startRing(1)
            var first = try frontEnd.makeDriver(0)
            var second = try frontEnd.makeDriver(1)
            var sent = 0
            for batch in 0..<5 {
                let texts = (0..<16).map { "queue zero, batch \(batch), request \($0)" }
                #expect(try exchange(&first, texts) == texts.map { $0.uppercased() })
                let others = (0..<7).map { "q1 \(batch)/\($0): mixed Case" }
                #expect(try exchange(&second, others) == others.map { $0.uppercased() })
                sent += texts.count
            }
            #expect(first.inFlightCount == 0 && second.inFlightCount == 0)
            // The rings' cursors say how many requests crossed: 80 on queue 0, 35 on queue 1.
            #expect(try frontEnd.stopRing(0) == UInt32(sent))
            #expect(try frontEnd.stopRing(1) == 35)
            frontEnd.hangUp()
            let end = thread.join()
            #expect(end != nil)
            #expect(end.flatMap { $0 } == nil)
            #expect(log.errorCodes.isEmpty, "\(log.all)")
            #expect(log.all.contains { $0.message.hasPrefix("started") && $0.queue == 1 })
        }

        @Test func getVringBaseStopsTheRingAndASecondBaseAndKickResumeIt() throws {
            let backend = try VhostUserBackend<Shout>()
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.startRing(0)
            var driver = try frontEnd.makeDriver(0)
            let before = (0..<10).map { "before stop \($0)" }
            #expect(try exchange(&driver, before) == before.map { $0.uppercased() })

            let base = try frontEnd.stopRing(0)
            #expect(base == 10)

            // Requests made available while the ring is stopped wait for the next start.
            var order: [UInt16: Int] = [:]
            let waiting = ["made available", "while the ring", "was stopped"]
            for (index, text) in waiting.enumerated() {
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, copying: Array(text.utf8))
                try driver.appendWritable(to: &chain, capacity: 64)
                order[try driver.submit(chain)] = index
            }
            try driver.notifyIfNeeded()
            usleep(100_000)
            try expectNothingUsed(&driver, "a stopped ring served a request")
            // Stopped again, the ring reports the same base.
            #expect(try frontEnd.stopRing(0) == 10)

            try frontEnd.expectSuccess(.setVringBase(VhostUserVringState(index: 0, num: base)))
            try frontEnd.expectSuccess(
                .setVringKick(VhostUserVringFile(index: 0, fileDescriptor: .init(borrowing: frontEnd.kicks[0])))
            )
            #expect(try collect(&driver, order: order) == waiting.map { $0.uppercased() })
            let after = (0..<10).map { "after resume \($0)" }
            #expect(try exchange(&driver, after) == after.map { $0.uppercased() })
            // Nothing lost, nothing repeated: every request completed once, and the ring's index
            // counts each exactly once.
            #expect(driver.inFlightCount == 0)
            #expect(try frontEnd.stopRing(0) == 23)
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        @Test func aRingWaitsForEnableAndDisableStopsIt() throws {
            let backend = try VhostUserBackend<Shout>()
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.startRing(0)
            var driver = try frontEnd.makeDriver(0)
            #expect(try exchange(&driver, ["one"]) == ["ONE"])
            try frontEnd.expectSuccess(.setVringEnable(VhostUserVringState(index: 0, num: 0)))
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, copying: Array("two".utf8))
            try driver.appendWritable(to: &chain, capacity: 64)
            let id = try driver.submit(chain)
            try driver.notifyIfNeeded()
            usleep(100_000)
            try expectNothingUsed(&driver, "a disabled ring served a request")
            try frontEnd.expectSuccess(.setVringEnable(VhostUserVringState(index: 0, num: 1)))
            #expect(try collect(&driver, order: [id: 0]) == ["TWO"])
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        @Test func configSpaceIsReadAndOnlyItsWritableBytesAreWritten() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            guard
                case .config(let read) = try frontEnd.get(
                    .getConfig(VhostUserConfigSpace(offset: 4, bytes: .init(repeating: 0, count: 8)))
                )
            else {
                Issue.record("no config reply")
                return
            }
            #expect(read.offset == 4 && read.bytes == Array(4..<12))
            try frontEnd.expectSuccess(.setConfig(VhostUserConfigSpace(offset: 10, bytes: [0xAA, 0xBB])))
            #expect(try frontEnd.ack(.setConfig(VhostUserConfigSpace(offset: 6, bytes: [1, 2, 3]))) != 0)
            #expect(log.first(.invalidConfigAccess) != nil)
            guard
                case .config(let after) = try frontEnd.get(
                    .getConfig(VhostUserConfigSpace(offset: 0, bytes: .init(repeating: 0, count: 16)))
                )
            else {
                Issue.record("no config reply")
                return
            }
            #expect(after.bytes == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xAA, 0xBB, 12, 13, 14, 15])
            #expect(try frontEnd.getU64(.getMaxMemorySlots) == 32)
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        @Test func memoryRegionsAddedOneByOneServeRingsToo() throws {
            let backend = try VhostUserBackend<Shout>()
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate(sendMemoryTable: false)
            for index in frontEnd.memory.regions.indices {
                try frontEnd.expectSuccess(
                    .addMemoryRegion(
                        frontEnd.memory.description(index),
                        VhostUserFileDescriptor(borrowing: frontEnd.memory.regions[index].fileDescriptor)
                    )
                )
            }
            try frontEnd.startRing(0)
            var driver = try frontEnd.makeDriver(0)
            #expect(try exchange(&driver, ["added", "regions"]) == ["ADDED", "REGIONS"])
            #expect(try frontEnd.stopRing(0) == 2)
            try frontEnd.expectSuccess(.removeMemoryRegion(frontEnd.memory.description(1)))
            #expect(try frontEnd.ack(.removeMemoryRegion(frontEnd.memory.description(1))) != 0)
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }
    }

    /// `VhostUserMemory` on its own: mapping, translation, adding and removing regions.
    @Suite struct Memory {
        @Test func mapsEachRegionAtItsGuestPhysicalAddressFromAPageUnalignedOffset() throws {
            let frontEnd = try FrontEndMemory([
                (guestPhysical: 0, size: 0x1_0000, mmapOffset: 0),
                (guestPhysical: 0x10_0000, size: 0x4_0000, mmapOffset: 0x1800),
            ])
            let memory = try VhostUserMemory(table: frontEnd.table)
            #expect(memory.isSealedAgainstShrinking)
            #expect(try memory.validatedMappings() == [0..<0x1_0000, 0x10_0000..<0x14_0000])
            frontEnd.regions[1].bytes.storeBytes(of: 0xFEED_F00D_1234_5678, toByteOffset: 0x100, as: UInt64.self)
            let seen = try memory.withBytes(at: 0x10_0100, count: 8) { $0.load(as: UInt64.self) }
            #expect(seen == 0xFEED_F00D_1234_5678)
            let user = frontEnd.description(1).userAddress
            #expect(try memory.guestPhysicalAddress(ofUserAddress: user + 0x40, count: 16, what: "x") == 0x10_0040)
            #expect(throws: VhostUserError.self) {
                _ = try memory.guestPhysicalAddress(ofUserAddress: user + 0x4_0000 - 8, count: 16, what: "x")
            }
            #expect(throws: VhostUserError.self) {
                _ = try memory.guestPhysicalAddress(ofUserAddress: 0x1000, count: 1, what: "x")
            }
        }

        @Test func addingAnOverlappingRegionOrRemovingAnUnknownOneIsRefused() throws {
            let frontEnd = try FrontEndMemory([(guestPhysical: 0, size: 0x1_0000, mmapOffset: 0)])
            let memory = try VhostUserMemory(table: frontEnd.table)
            var overlapping = frontEnd.description(0)
            overlapping.userAddress &+= 0x100_0000
            overlapping.guestPhysicalAddress = 0x8000
            do {
                _ = try memory.adding(overlapping, fileDescriptor: .init(borrowing: frontEnd.regions[0].fileDescriptor))
                Issue.record("an overlapping region was added")
            } catch {
                #expect(error.code == .overlappingRegions)
            }
            overlapping.guestPhysicalAddress = 0x2_0000
            let bigger = try memory.adding(
                overlapping,
                fileDescriptor: .init(borrowing: frontEnd.regions[0].fileDescriptor)
            )
            #expect(bigger.regions.count == 2 && memory.regions.count == 1)
            // Both views see the same file.
            frontEnd.regions[0].bytes.storeBytes(of: 0x77, toByteOffset: 5, as: UInt8.self)
            #expect(try bigger.withBytes(at: 0x2_0005, count: 1) { $0[0] } == 0x77)
            #expect(try bigger.removing(overlapping).regions == memory.regions)
            do {
                _ = try memory.removing(overlapping)
                Issue.record("an unknown region was removed")
            } catch {
                #expect(error.code == .invalidValue)
            }
        }
    }
}

extension VhostUserTests.Memory {
    @Test func aTableBuiltByHandIsCheckedLikeADecodedOne() throws {
        let frontEnd = try FrontEndMemory([(guestPhysical: 0x1000, size: 0x1_0000, mmapOffset: 0)])
        var table = frontEnd.table
        table.regions[0].size = 0
        do {
            _ = try VhostUserMemory(table: table)
            Issue.record("a region of size 0 was mapped")
        } catch {
            #expect(error.code == .invalidRegion)
        }
        table.regions[0].size = 0x1_0000
        table.regions[0].mmapOffset = UInt64.max - 0x100
        do {
            _ = try VhostUserMemory(table: table)
            Issue.record("a region at offset 2^64 - 0x101 was mapped")
        } catch {
            #expect(error.code == .invalidRegion)
        }
    }
}
