import Glibc
import SystemPackage
import Testing
import VirtqueueVhostUser

extension VhostUserTests {
    /// No descriptor the peer sends outlives the message that carried it, unless the role takes it.
    @Suite struct FileDescriptorAccounting {
        /// Decodes `bytes` with `count` real descriptors (copies of a fresh memfd) and returns how
        /// many copies are open after the decode and the message are gone.
        func copiesLeft(_ bytes: [UInt8], count: Int, keep: (VhostUserMessage) -> Void = { _ in }) throws -> Int {
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            guard let target = linkTarget(memfd.rawValue) else { return -1 }
            do {
                let frame = try VhostUserFrame(bytes: bytes, fileDescriptors: try owners(of: memfd, count: count))
                #expect(openCopies(of: target) == count + 1)
                let decoded = try frame.decodeRequest(limits: .test)
                keep(decoded.message)
            } catch {
                // Refused: the frame and its descriptors are gone.
            }
            return openCopies(of: target) - 1
        }

        @Test func refusedMessagesCloseEveryDescriptor() throws {
            let refused: [([UInt8], Int)] = [
                (raw(.getFeatures), 1),
                (raw(.setFeatures, le(UInt64(0))), 3),
                (raw(.setVringKick, le(UInt64(0x101))), 1),
                (raw(.setVringKick, le(UInt64(0x200))), 1),
                (raw(.setVringCall, le(UInt64(7))), 1),
                (raw(.setMemoryTable, memoryTablePayload([regionBytes(0, 4096, 0), regionBytes(0, 4096, 8192)])), 2),
                (raw(.setMemoryTable, memoryTablePayload([regionBytes(0, 4096, 0)])), 2),
                (raw(.addMemoryRegion, le(UInt64(0)) + regionBytes(0, 0, 0)), 1),
                (raw(.setInflightFileDescriptor, le(UInt64(0), UInt64(0), UInt16(1), UInt16(8), UInt32(0))), 1),
                (raw(.setLogFileDescriptor), 2),
                (raw(.getFeatures, flags: 0), 2),  // a header violation
                (raw(.setFeatures, size: 9, le(UInt64(0))), 1),  // size mismatch
            ]
            for (bytes, count) in refused {
                #expect(try copiesLeft(bytes, count: count) == 0, "\(bytes.prefix(4)) with \(count) fds")
            }
        }

        @Test func unsupportedRequestsCloseTheirDescriptors() throws {
            #expect(try copiesLeft(raw(.iotlbMessage, [UInt8](repeating: 0, count: 32)), count: 2) == 0)
            #expect(try copiesLeft(raw(99), count: 1) == 0)
        }

        @Test func removeMemoryRegionClosesItsOptionalDescriptorAtOnce() throws {
            var left = -1
            let bytes = raw(.removeMemoryRegion, le(UInt64(0)) + regionBytes(0, 4096, 0))
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            let target = try #require(linkTarget(memfd.rawValue))
            let frame = try VhostUserFrame(bytes: bytes, fileDescriptors: try owners(of: memfd, count: 1))
            let decoded = try frame.decodeRequest(limits: .test)
            left = openCopies(of: target) - 1
            _ = decoded
            #expect(left == 0)
        }

        @Test func acceptedMessagesOwnTheirDescriptorsUntilDropped() throws {
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            let target = try #require(linkTarget(memfd.rawValue))
            let bytes = raw(
                .setMemoryTable,
                memoryTablePayload([regionBytes(0, 4096, 0), regionBytes(4096, 4096, 4096)])
            )
            do {
                let frame = try VhostUserFrame(bytes: bytes, fileDescriptors: try owners(of: memfd, count: 2))
                let decoded = try frame.decodeRequest(limits: .test)
                #expect(openCopies(of: target) == 3)
                guard case .setMemoryTable(let table) = decoded.message else {
                    Issue.record("not setMemoryTable")
                    return
                }
                // The role takes the first and leaves the second to the message.
                let taken = try #require(table.fileDescriptors[0].take())
                #expect(table.fileDescriptors[0].take() == nil)
                #expect(openCopies(of: target) == 3)
                try taken.close()
                #expect(openCopies(of: target) == 2)
            }
            #expect(openCopies(of: target) == 1)
        }

        @Test func borrowedDescriptorsAreNeverClosed() throws {
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            let target = try #require(linkTarget(memfd.rawValue))
            do {
                let borrowed = VhostUserFileDescriptor(borrowing: memfd)
                #expect(borrowed.take() == nil)
                borrowed.close()
                #expect(borrowed.fileDescriptor == memfd)
            }
            #expect(openCopies(of: target) == 1)
        }

        @Test func processDescriptorCountIsUnchangedAfterRefusals() throws {
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            let before = openDescriptorCount()
            for _ in 0..<50 {
                let frame = try VhostUserFrame(
                    bytes: raw(.setVringKick, le(UInt64(0x100))),
                    fileDescriptors: try owners(of: memfd, count: 3)
                )
                #expect(throws: VhostUserError.self) { try frame.decodeRequest(limits: .test) }
            }
            #expect(openDescriptorCount() == before)
        }
    }
}
