import CVirtqueueSystem
import Glibc
import SystemPackage
import Testing
import VirtqueueVhostUser

extension VhostUserTests {
    /// The transport over a real socketpair, with descriptors passed by SCM_RIGHTS.
    @Suite struct Socket {
        @Test func memoryTableWithMemfdsCrossesTheSocket() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            let first = try makeMemfd(size: 8192)
            let second = try makeMemfd(size: 4096)
            defer {
                try? first.close()
                try? second.close()
            }
            let firstTarget = try #require(linkTarget(first.rawValue))
            let table = VhostUserMemoryTable(
                regions: [
                    VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 8192, userAddress: 0x10_0000, mmapOffset: 0),
                    VhostUserMemoryRegion(
                        guestPhysicalAddress: 0x10_0000,
                        size: 4096,
                        userAddress: 0x20_0000,
                        mmapOffset: 0
                    ),
                ],
                fileDescriptors: [
                    VhostUserFileDescriptor(borrowing: first), VhostUserFileDescriptor(borrowing: second),
                ]
            )
            try frontEnd.send(try VhostUserMessage.setMemoryTable(table).encode(needsReply: true))
            do {
                let request = try backEnd.receiveRequest(limits: .test, idleTimeout: .seconds(5))
                #expect(request.needsReply)
                guard case .setMemoryTable(let received) = request.message else {
                    Issue.record("not setMemoryTable")
                    return
                }
                #expect(received.regions == table.regions)
                let fd = try #require(received.fileDescriptors[0].fileDescriptor)
                #expect(linkTarget(fd.rawValue) == firstTarget)
                #expect(openCopies(of: firstTarget) == 2)
                // The received copy is close-on-exec (MSG_CMSG_CLOEXEC).
                #expect(fcntl(fd.rawValue, F_GETFD) & FD_CLOEXEC != 0)
            }
            #expect(openCopies(of: firstTarget) == 1)
        }

        @Test func kickEventfdCrossesTheSocketAndWorks() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            let kick = try makeEventfd()
            defer { try? kick.close() }
            let message = VhostUserMessage.setVringKick(
                VhostUserVringFile(index: 1, fileDescriptor: .init(borrowing: kick))
            )
            try frontEnd.send(try message.encode())
            let request = try backEnd.receiveRequest(limits: .test, idleTimeout: .seconds(5))
            guard case .setVringKick(let file) = request.message, let owner = file.fileDescriptor else {
                Issue.record("not a kick with an fd: \(request.message)")
                return
            }
            #expect(file.index == 1)
            let received = try #require(owner.take())
            defer { try? received.close() }
            #expect(vq_eventfd_signal(received.rawValue) == 0)
            #expect(vq_eventfd_drain(kick.rawValue) == 1)
        }

        @Test func replyWithInflightMemfdCrossesTheSocket() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            let area = try makeMemfd(size: 8192)
            defer { try? area.close() }
            let target = try #require(linkTarget(area.rawValue))
            try frontEnd.send(
                try VhostUserMessage.getInflightFileDescriptor(
                    VhostUserInflightDescription(queueCount: 1, queueSize: 128)
                )
                .encode()
            )
            let request = try backEnd.receiveRequest(limits: .test, idleTimeout: .seconds(5))
            guard case .getInflightFileDescriptor(let wanted) = request.message else {
                Issue.record("not getInflightFileDescriptor")
                return
            }
            let answer = VhostUserInflightDescription(
                mmapSize: 8192,
                queueCount: wanted.queueCount,
                queueSize: wanted.queueSize
            )
            try backEnd.send(
                try VhostUserReply.inflight(answer, VhostUserFileDescriptor(borrowing: area))
                    .encode(answering: request.header.request)
            )
            let frame = try frontEnd.receive(expectingReply: true, limits: .test, idleTimeout: .seconds(5))
            guard
                case .inflight(let description, let fd) = try frame.decodeReply(
                    to: .getInflightFileDescriptor,
                    limits: .test
                )
            else {
                Issue.record("not inflight")
                return
            }
            #expect(description == answer)
            #expect(fd.fileDescriptor.flatMap { linkTarget($0.rawValue) } == target)
        }

        @Test func messageSentOneByteAtATimeIsReassembled() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            let bytes = try VhostUserMessage.setVringAddress(
                VhostUserVringAddress(index: 1, descriptor: 0x1000, used: 0x3000, available: 0x2000)
            ).encode().bytes
            for byte in bytes { try sendRaw(frontEnd, [byte]) }
            let request = try backEnd.receiveRequest(limits: .test, idleTimeout: .seconds(5))
            guard case .setVringAddress(let address) = request.message else {
                Issue.record("not setVringAddress")
                return
            }
            #expect(address.available == 0x2000)
        }

        @Test func endOfStreamBetweenMessagesIsPeerClosed() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            try frontEnd.send(try VhostUserMessage.getFeatures.encode())
            shutdownWrite(frontEnd)
            _ = try backEnd.receiveRequest(limits: .test, idleTimeout: .seconds(5))
            do {
                _ = try backEnd.receive(idleTimeout: .seconds(5))
                Issue.record("read past the end")
            } catch {
                #expect(error.code == .peerClosed)
            }
        }

        @Test(arguments: [5, 12, 15])
        func endOfStreamMidMessageIsATruncatedMessage(_ cut: Int) throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            let target = try #require(linkTarget(memfd.rawValue))
            let bytes = raw(.setVringKick, le(UInt64(1)))
            try sendRaw(frontEnd, Array(bytes.prefix(cut)), fds: [memfd.rawValue])
            shutdownWrite(frontEnd)
            do {
                _ = try backEnd.receive(idleTimeout: .seconds(5))
                Issue.record("accepted a truncated message")
            } catch {
                #expect(error.code == .truncatedMessage)
                #expect(error.message.contains("\(cut) bytes"))
            }
            #expect(openCopies(of: target) == 1)
        }

        @Test func tooManyDescriptorsAreClosedAndTheStreamStaysInStep() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            let target = try #require(linkTarget(memfd.rawValue))
            try sendRaw(frontEnd, raw(.getFeatures), fds: [CInt](repeating: memfd.rawValue, count: 9))
            try frontEnd.send(try VhostUserMessage.getQueueNum.encode())
            do {
                _ = try backEnd.receive(idleTimeout: .seconds(5))
                Issue.record("accepted 9 descriptors")
            } catch {
                #expect(error.code == .tooManyFileDescriptors)
                #expect(error.message.contains("9"))
            }
            #expect(openCopies(of: target) == 1)
            let next = try backEnd.receiveRequest(limits: .test, idleTimeout: .seconds(5))
            #expect(next.message.request == .getQueueNum)
        }

        @Test func descriptorsBeyondTheControlBufferAreTruncatedByTheKernelAndClosed() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            let target = try #require(linkTarget(memfd.rawValue))
            // 16 is the most the sending shim passes at once; two sends of 16 with the message
            // split in two reach the receiver as 32 descriptors for one message.
            let bytes = raw(.setFeatures, le(UInt64(0)))
            try sendRaw(frontEnd, Array(bytes.prefix(6)), fds: [CInt](repeating: memfd.rawValue, count: 16))
            try sendRaw(frontEnd, Array(bytes.dropFirst(6)), fds: [CInt](repeating: memfd.rawValue, count: 16))
            do {
                _ = try backEnd.receive(idleTimeout: .seconds(5))
                Issue.record("accepted 32 descriptors")
            } catch {
                #expect(error.code == .tooManyFileDescriptors)
            }
            #expect(openCopies(of: target) == 1)
        }

        @Test func payloadBoundIsCheckedBeforeReadingThePayload() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            try sendRaw(frontEnd, le(UInt32(5), UInt32(1), UInt32(1 << 30)))
            do {
                _ = try backEnd.receive(idleTimeout: .seconds(5), messageTimeout: .seconds(5))
                Issue.record("accepted a 1 GiB payload")
            } catch {
                #expect(error.code == .payloadTooLarge)
            }
        }

        @Test func peerStallingMidMessageTimesOut() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            let memfd = try makeMemfd()
            defer { try? memfd.close() }
            let target = try #require(linkTarget(memfd.rawValue))
            try sendRaw(frontEnd, raw(.setVringKick, size: 8), fds: [memfd.rawValue])
            let start = ContinuousClock.now
            do {
                _ = try backEnd.receive(idleTimeout: nil, messageTimeout: .milliseconds(200))
                Issue.record("a stalled message was accepted")
            } catch {
                #expect(error.code == .timedOut)
            }
            #expect(ContinuousClock.now - start < .seconds(3))
            #expect(openCopies(of: target) == 1)
        }

        @Test func idleTimeoutEndsAWaitForAMessage() throws {
            let (frontEnd, backEnd) = try VhostUserSocket.makePair()
            defer { withExtendedLifetime(frontEnd) {} }
            do {
                _ = try backEnd.receive(idleTimeout: .milliseconds(50))
                Issue.record("received from a silent peer")
            } catch {
                #expect(error.code == .timedOut)
            }
        }

        @Test func sendingToAClosedPeerIsPeerClosed() throws {
            var pair: (VhostUserSocket, VhostUserSocket)? = try VhostUserSocket.makePair()
            let frontEnd = try #require(pair?.0)
            pair = nil
            do {
                try frontEnd.send(try VhostUserMessage.getFeatures.encode())
                Issue.record("sent to a closed peer")
            } catch {
                #expect(error.code == .peerClosed)
            }
        }

        @Test func placeholderDescriptorsCannotBeSent() throws {
            let (frontEnd, _) = try VhostUserSocket.makePair()
            let message = try VhostUserMessage.setLogFileDescriptor(.placeholder()).encode()
            do {
                try frontEnd.send(message)
                Issue.record("sent a placeholder")
            } catch {
                #expect(error.code == .invalidArgument)
            }
        }
    }
}
