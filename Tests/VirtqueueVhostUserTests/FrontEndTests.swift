import Foundation
import Glibc
import SystemPackage
import Testing
import VirtioBlock
import Virtqueue
import VirtqueueVhostUser

extension VhostUserTests {
    /// The front-end role of the library (`VhostUserFrontEnd`, `VhostUserFrontEndMemory`): our
    /// `DriverQueue` drives a back-end in another program through the same API it uses at every
    /// other isolation level.
    @Suite(.serialized) struct FrontEnd {
        /// Guest memory of the front-end: the rings at 0, the buffers in a second region at 1 MiB.
        static func memory() throws -> VhostUserFrontEndMemory {
            try VhostUserFrontEndMemory(regions: [
                .init(guestPhysicalAddress: 0, size: 0x1_0000),
                .init(guestPhysicalAddress: 0x10_0000, size: 4 << 20, mmapOffset: 0x2000),
            ])
        }

        static let placement = QueuePlacement(
            size: 128,
            descriptorArea: 0,
            driverArea: 0x1000,
            deviceArea: 0x2000
        )
        static let pool: Range<UInt64> = 0x10_0000..<0x10_0000 + (4 << 20)

        /// On every ring variant: with IN_ORDER the back-end (`Shout` lists it) uses the requests in
        /// order, the in-order driver checks it, and GET_VRING_BASE reports the same base.
        @Test(arguments: RingVariants.running)
        func ourFrontEndDrivesOurBackEndThroughADriverQueue(_ variant: RingVariant) throws {
            let format = variant.format
            let backend = try VhostUserBackend<Shout>()
            let (frontEndSocket, backEndSocket) = try VhostUserSocket.makePair()
            let thread = BackendThread(backend, backEndSocket)
            let frontEnd = VhostUserFrontEnd(socket: frontEndSocket)
            let wanted = variant.inOrder ? Features.all.union(.inOrder) : .all
            let features = try frontEnd.negotiate(wanted: wanted, ringFormat: format)
            #expect(features.contains(.version1) && features.contains(.eventIndex))
            #expect(features.contains(.ringPacked) == (format == .packed))
            #expect(features.contains(.inOrder) == variant.inOrder)
            var placement = Self.placement
            placement.format = format
            placement.cursor = format == .packed ? .packedStart : .start
            #expect(frontEnd.queueCount == Shout.queueCount)
            #expect(try frontEnd.config(count: 16) == Array(0..<16))
            let memory = try Self.memory()
            try frontEnd.setMemoryTable(memory)
            let notifier = try frontEnd.startRing(1, placement: placement, memory: memory)
            var driver = try DriverQueue(
                memory: memory,
                placement: placement,
                notifier: notifier,
                features: features,
                pool: Self.pool,
                bufferSize: 4096
            )
            let texts = (0..<300).map { "front-end request \($0)" }
            for batch in stride(from: 0, to: texts.count, by: 50) {
                let slice = Array(texts[batch..<batch + 50])
                #expect(try exchange(&driver, slice) == slice.map { $0.uppercased() })
            }
            // Split: the next available index, 300; packed: the driver's position and wrap counter.
            #expect(try frontEnd.stopRing(1) == (format == .packed ? driver.cursor.nextAvailable : 300))
            frontEnd.close()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        @Test func aBackEndThatDiesEndsTheWaitWithPeerDiedAndTheChainComesBack() throws {
            let scratch = try GuestScratch(prefix: "vqtest-frontend")
            defer { scratch.remove() }
            let image = try GuestImage.create(at: scratch.path("disk.img"), mebibytes: 4)
            let socket = scratch.path("blk.sock")
            // The worker hangs in the first write; then the whole back-end is killed.
            let backEnd = try GuestBackEnd(
                [
                    VhostUserBlockGuestTests.executable, "--socket", socket, "--image", image.path,
                    "--isolation", "shm", "--stall-after-writes", "1",
                ],
                socketPath: socket
            )
            defer { backEnd.stop() }
            let frontEnd = try VhostUserFrontEnd.connect(to: FilePath(socket))
            let features = try frontEnd.negotiate(wanted: .all)
            let memory = try Self.memory()
            try frontEnd.setMemoryTable(memory)
            let notifier = try frontEnd.startRing(0, placement: Self.placement, memory: memory)
            var client = BlockClient(
                queue: try DriverQueue(
                    memory: memory,
                    placement: Self.placement,
                    notifier: notifier,
                    features: features,
                    pool: Self.pool,
                    bufferSize: 64 << 10
                )
            )
            try client.write(sector: 8, byteCount: 4096) { $0.initializeMemory(as: UInt8.self, repeating: 0x5A) }
            try client.queue.notifyIfNeeded()
            let deadline = ContinuousClock.now + .seconds(30)
            while !backEnd.log.contains("stalling"), ContinuousClock.now < deadline { usleep(20_000) }
            backEnd.process.kill(SIGKILL, group: true)
            #expect(throws: VirtqueueError.self) { try client.queue.waitForUsed() }
            client.queue.markBroken(VirtqueueError(.peerDied, "the back-end died"))
            let lost = try client.reclaimAbandoned()
            #expect(lost == [BlockOperation(kind: .write, sector: 8, byteCount: 4096)])
            #expect(client.queue.freeBufferCount == client.queue.bufferCount)
        }

        /// A back-end to run the block workload against.
        enum BlockBackEnd: String, CaseIterable, Sendable {
            case vhostUserBlock = "VhostUserBlock (sandboxed)"
            case storageDaemon = "qemu-storage-daemon"
        }

        @Test(arguments: BlockBackEnd.allCases)
        func virtioBlockOverTheFrontEnd(_ kind: BlockBackEnd) throws {
            if kind == .storageDaemon {
                guard GuestPeers.shouldRun else { return }
            }
            let scratch = try GuestScratch(prefix: "vqtest-frontend")
            defer { scratch.remove() }
            let image = try GuestImage.create(at: scratch.path("disk.img"), mebibytes: 16)
            let socket = scratch.path("blk.sock")
            let backEnd =
                switch kind {
                case .vhostUserBlock:
                    try GuestBackEnd(
                        [
                            VhostUserBlockGuestTests.executable, "--socket", socket, "--image", image.path,
                            "--isolation", "sandbox",
                        ],
                        socketPath: socket
                    )
                case .storageDaemon: try GuestBackEnd.storageDaemon(imagePath: image.path, socketPath: socket)
                }
            defer { backEnd.stop() }

            let frontEnd = try VhostUserFrontEnd.connect(to: FilePath(socket))
            let flush = Features(rawValue: 1 << 9)
            let features = try frontEnd.negotiate(wanted: Features.all.union(flush))
            #expect(features.contains(flush), "VIRTIO_BLK_F_FLUSH")
            let config = try frontEnd.config(count: 24)
            let capacity = config.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            #expect(capacity == UInt64(image.sectors))
            let memory = try Self.memory()
            try frontEnd.setMemoryTable(memory)
            let notifier = try frontEnd.startRing(0, placement: Self.placement, memory: memory)
            var client = BlockClient(
                queue: try DriverQueue(
                    memory: memory,
                    placement: Self.placement,
                    notifier: notifier,
                    features: features,
                    pool: Self.pool,
                    bufferSize: 64 << 10
                )
            )
            // Write 4 MiB at 2 MiB in 64 KiB requests, 16 in flight, flush; read it back; GET_ID.
            let start = 2 << 20
            let pattern = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 12) }
            var statuses: [BlockRequest.Status?] = []
            var readBack = [UInt8](repeating: 0, count: pattern.count)
            var serial = ""
            func drain(_ client: inout BlockClient<VhostUserFrontEndMemory, VhostUserEventNotifier>, until limit: Int)
                throws
            {
                while client.inFlightCount > limit {
                    try client.queue.waitForUsed()
                    _ = try client.reap { operation, status, data in
                        statuses.append(status)
                        if operation.kind == .read {
                            let offset = Int(operation.sector) * 512 - start
                            readBack.replaceSubrange(offset..<offset + data.count, with: data)
                        } else if operation.kind == .identify {
                            serial = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
                        }
                    }
                }
            }
            for offset in stride(from: 0, to: pattern.count, by: 64 << 10) {
                try drain(&client, until: 15)
                try client.write(sector: UInt64((start + offset) / 512), byteCount: 64 << 10) { buffer in
                    pattern[offset..<offset + (64 << 10)].withUnsafeBytes { buffer.copyMemory(from: $0) }
                }
                try client.queue.notifyIfNeeded()
            }
            try drain(&client, until: 0)
            try client.flush()
            try client.queue.notifyIfNeeded()
            try drain(&client, until: 0)
            for offset in stride(from: 0, to: pattern.count, by: 64 << 10) {
                try drain(&client, until: 15)
                try client.read(sector: UInt64((start + offset) / 512), byteCount: 64 << 10)
                try client.queue.notifyIfNeeded()
            }
            try client.identify()
            try client.queue.notifyIfNeeded()
            try drain(&client, until: 0)
            frontEnd.close()
            backEnd.stop()

            #expect(statuses.count == 64 + 1 + 64 + 1)
            #expect(statuses.allSatisfy { $0 == .ok }, "\(statuses.filter { $0 != .ok })")
            #expect(readBack == pattern)
            #expect(!serial.isEmpty)
            if kind == .vhostUserBlock { #expect(serial == "swift-virtqueue-blk") }
            // On the host: the image holds the pattern.
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: image.path))
            try handle.seek(toOffset: UInt64(start))
            let onDisk = try handle.read(upToCount: pattern.count) ?? Data()
            try handle.close()
            #expect(Array(onDisk) == pattern)
        }
    }
}
