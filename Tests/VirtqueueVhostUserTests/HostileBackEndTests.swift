import Foundation
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueVhostUser

extension VhostUserTests {
    /// A hostile back-end against our front-end: each bad reply is a typed error naming the value,
    /// nothing traps, and no descriptor is left behind.
    @Suite(.serialized) struct HostileBackEnd {
        /// A scripted back-end on a thread: for each request the front-end sends, `answer` returns
        /// the raw bytes to send back (none: no reply), or `nil` to hang up.
        final class ScriptedBackEnd: @unchecked Sendable {
            let done = DispatchSemaphore(value: 0)

            init(_ socket: VhostUserSocket, answer: @escaping @Sendable (VhostUserRequest) -> [UInt8]?) {
                let thread = Thread { [self] in
                    defer { done.signal() }
                    while let frame = try? socket.receive(
                        limits: VhostUserLimits(queueCount: 256),
                        idleTimeout: .seconds(10)
                    ) {
                        guard let bytes = answer(frame.header.request) else { break }
                        if !bytes.isEmpty { try? sendRaw(socket, bytes) }
                    }
                    _ = shutdown(socket.fileDescriptor.rawValue, CInt(SHUT_RDWR))
                }
                thread.start()
            }
        }

        /// Version 1 with the REPLY flag.
        static let replyFlags: UInt32 = 0x5

        /// An honest answer for the opening sequence: VERSION_1 and protocol features offered,
        /// REPLY_ACK and CONFIG, one queue, every ack a success.
        static func honest(_ request: VhostUserRequest) -> [UInt8] {
            switch request {
            case .getFeatures: raw(request, flags: replyFlags, le(UInt64(1 << 32 | 1 << 30)))
            case .getProtocolFeatures: raw(request, flags: replyFlags, le(UInt64(1 << 3 | 1 << 9 | 1 << 0)))
            case .getQueueNum: raw(request, flags: replyFlags, le(UInt64(1)))
            case .setOwner, .setProtocolFeatures: []
            default: raw(request, flags: replyFlags, le(UInt64(0)))
            }
        }

        /// Runs the opening sequence (and a GET_CONFIG of 8 bytes) against a back-end answering
        /// with `answer`, and returns the error the front-end threw.
        static func failure(_ answer: @escaping @Sendable (VhostUserRequest) -> [UInt8]?) throws -> VhostUserError? {
            let (ours, theirs) = try VhostUserSocket.makePair()
            let backEnd = ScriptedBackEnd(theirs, answer: answer)
            let frontEnd = VhostUserFrontEnd(socket: ours, replyTimeout: .seconds(5))
            defer {
                frontEnd.close()
                _ = backEnd.done.wait(timeout: .now() + 10)
            }
            do {
                try frontEnd.negotiate(wanted: .all)
                _ = try frontEnd.config(count: 8)
                return nil
            } catch {
                return error
            }
        }

        struct Case: CustomTestStringConvertible, Sendable {
            var name: String
            var code: VhostUserError.Code
            var named: String
            var answer: @Sendable (VhostUserRequest) -> [UInt8]?
            var testDescription: String { name }
        }

        static let cases: [Case] = [
            Case(name: "GET_FEATURES answered with 4 bytes", code: .invalidPayloadSize, named: "4") { request in
                request == .getFeatures ? raw(request, flags: replyFlags, le(UInt32(1))) : honest(request)
            },
            Case(name: "no VERSION_1 offered", code: .featureNotOffered, named: "VERSION_1") { request in
                request == .getFeatures ? raw(request, flags: replyFlags, le(UInt64(1 << 30))) : honest(request)
            },
            Case(name: "a reply to another request", code: .unexpectedReply, named: "GET_QUEUE_NUM") { request in
                request == .getProtocolFeatures
                    ? raw(.getQueueNum, flags: replyFlags, le(UInt64(1))) : honest(request)
            },
            Case(name: "a queue count of 1000", code: .invalidValue, named: "1000") { request in
                request == .getQueueNum ? raw(request, flags: replyFlags, le(UInt64(1000))) : honest(request)
            },
            Case(name: "SET_FEATURES refused by REPLY_ACK", code: .refusedByPeer, named: "status 1") { request in
                request == .setFeatures ? raw(request, flags: replyFlags, le(UInt64(1))) : honest(request)
            },
            Case(name: "a config larger than asked", code: .invalidConfigAccess, named: "answered 16") { request in
                request == .getConfig
                    ? raw(
                        request,
                        flags: replyFlags,
                        le(UInt32(0), UInt32(16), UInt32(0)) + [UInt8](repeating: 7, count: 16)
                    )
                    : honest(request)
            },
            Case(name: "a reply without the REPLY flag", code: .invalidFlags, named: "flags") { request in
                request == .getFeatures ? raw(request, flags: 1, le(UInt64(1 << 32))) : honest(request)
            },
            Case(name: "hanging up mid-setup", code: .peerClosed, named: "") { request in
                request == .getProtocolFeatures ? nil : honest(request)
            },
        ]

        @Test(arguments: cases)
        func aBadReplyIsATypedErrorNamingTheValue(_ hostile: Case) throws {
            usleep(20_000)  // the previous case's back-end thread lets go of its socket
            let before = openDescriptorCount()
            let error = try #require(try Self.failure(hostile.answer), "the front-end accepted \(hostile.name)")
            #expect(error.code == hostile.code, "\(error)")
            #expect(hostile.named.isEmpty || error.message.contains(hostile.named), "\(error)")
            // The scripted back-end's socket closes on its own thread, just after it signals.
            let deadline = ContinuousClock.now + .seconds(5)
            while openDescriptorCount() != before, ContinuousClock.now < deadline { usleep(1000) }
            #expect(openDescriptorCount() == before, "descriptors left behind")
        }

        @Test func aPackedRingNeedsRingPackedOffered() throws {
            let (ours, theirs) = try VhostUserSocket.makePair()
            let backEnd = ScriptedBackEnd(theirs) { Self.honest($0) }
            let frontEnd = VhostUserFrontEnd(socket: ours)
            let error = #expect(throws: VhostUserError.self) {
                try frontEnd.negotiate(wanted: .version1, ringFormat: .packed)
            }
            #expect(error?.code == .featureNotOffered && error?.message.contains("RING_PACKED") == true)
            frontEnd.close()
            _ = backEnd.done.wait(timeout: .now() + 10)
        }

        /// GET_VRING_BASE's reply for a packed ring of 64 is peer input: a position at or above the
        /// size, or a used position that is neither the available one nor 0, is refused by name.
        @Test(
            arguments: [
                (UInt32(0x8040), "available position at 64 (wrap 1)"),
                (UInt32(0x8003_8005), "used position at 3 (wrap 1)"),
            ]
        )
        func aBadPackedBaseInTheReplyIsRefused(_ base: UInt32, _ named: String) throws {
            let (ours, theirs) = try VhostUserSocket.makePair()
            let backEnd = ScriptedBackEnd(theirs) { request in
                switch request {
                case .getFeatures: raw(request, flags: Self.replyFlags, le(UInt64(1 << 32 | 1 << 30 | 1 << 34)))
                case .getVringBase: raw(request, flags: Self.replyFlags, le(UInt32(0), base))
                default: Self.honest(request)
                }
            }
            let frontEnd = VhostUserFrontEnd(socket: ours)
            defer {
                frontEnd.close()
                _ = backEnd.done.wait(timeout: .now() + 10)
            }
            #expect(try frontEnd.negotiate(wanted: .version1, ringFormat: .packed).contains(.ringPacked))
            let memory = try VhostUserFrontEndMemory(regions: [.init(guestPhysicalAddress: 0, size: 0x1_0000)])
            try frontEnd.setMemoryTable(memory)
            let placement = QueuePlacement(
                format: .packed,
                size: 64,
                descriptorArea: 0,
                driverArea: 0x1000,
                deviceArea: 0x2000
            )
            _ = try frontEnd.startRing(0, placement: placement, memory: memory)
            let error = #expect(throws: VhostUserError.self) { try frontEnd.stopRing(0) }
            #expect(error?.code == .invalidValue)
            #expect(error?.message.contains(named) == true, "\(String(describing: error))")
        }

        @Test func featuresTheBackEndOffersButWeDidNotAskForAreNotAcked() throws {
            let (ours, theirs) = try VhostUserSocket.makePair()
            let backEnd = ScriptedBackEnd(theirs) { request in
                switch request {
                case .getFeatures:
                    raw(request, flags: Self.replyFlags, le(UInt64(1 << 32 | 1 << 30 | 1 << 34 | 1 << 5)))
                default: Self.honest(request)
                }
            }
            let frontEnd = VhostUserFrontEnd(socket: ours)
            let features = try frontEnd.negotiate(wanted: .version1)
            #expect(features == .version1, "acked \(features) though RING_PACKED and bit 5 were not asked for")
            frontEnd.close()
            _ = backEnd.done.wait(timeout: .now() + 10)
        }
    }
}
