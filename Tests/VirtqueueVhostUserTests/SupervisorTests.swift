import Foundation
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueSandbox
import VirtqueueVhostUser

extension VhostUserTests {
    /// The supervised back-end as a process (`VhostUserBlock`, no QEMU): a connection that breaks
    /// the protocol ends its worker, and the supervisor serves the next connection with a new,
    /// confined one.
    @Suite(.serialized) struct Supervisor {
        static let limits = VhostUserLimits(queueCount: 1, configSpaceSize: 60)

        @Test func theWorkerPolicyForbidsNewProcessesAndSurvivesItsArgumentEncoding() throws {
            let policy = SandboxPolicy.vhostUserWorker(deviceCalls: ["pread64"])
            #expect(SandboxPolicy(argumentEncoding: policy.argumentEncoding) == policy)
            let names = Set(policy.rules.map(\.systemCall))
            for forbidden in ["open", "openat", "socket", "connect", "execve", "fork", "vfork", "ptrace"] {
                #expect(!names.contains(forbidden), "\(forbidden)")
            }
            #expect(policy.rules.contains(.init("clone", .withFlags(argument: 0, mask: 0x1_0000))))
            #expect(policy.rules.contains(.init("clone3", .failsWith(errno: ENOSYS))))
        }

        @Test(arguments: ["sandbox", "shm"])
        func aConnectionThatBreaksTheProtocolEndsItsWorkerAndTheNextIsServed(_ isolation: String) throws {
            let scratch = try GuestScratch(prefix: "vqtest-supervisor")
            defer { scratch.remove() }
            let image = try GuestImage.create(at: scratch.path("disk.img"), mebibytes: 4)
            let socketPath = scratch.path("blk.sock")
            let backEnd = try GuestBackEnd(
                [
                    VhostUserBlockGuestTests.executable, "--socket", socketPath, "--image", image.path,
                    "--isolation", isolation,
                ],
                socketPath: socketPath
            )
            defer { backEnd.stop() }

            // 1. A header with version 2: a framing violation; the worker closes the connection.
            let hostile = try VhostUserSocket.connect(to: FilePath(socketPath))
            try sendRaw(hostile, raw(.getFeatures, flags: 2))
            #expect(throws: VhostUserError.self) {
                _ = try hostile.receive(expectingReply: true, limits: Self.limits, idleTimeout: .seconds(30))
            }

            // 2. An honest connection: features, protocol features, the config space's capacity.
            let honest = try VhostUserSocket.connect(to: FilePath(socketPath))
            func get(_ message: VhostUserMessage) throws -> VhostUserReply {
                try honest.send(try message.encode())
                let frame = try honest.receive(expectingReply: true, limits: Self.limits, idleTimeout: .seconds(30))
                return try frame.decodeReply(to: message.request, limits: Self.limits)
            }
            guard case .u64(let features) = try get(.getFeatures) else { throw VhostUserError(.unexpectedReply, "") }
            #expect(features & (1 << 30) != 0, "VHOST_USER_F_PROTOCOL_FEATURES")
            #expect(features & (1 << 9) != 0, "VIRTIO_BLK_F_FLUSH")
            #expect(features & (1 << 32) != 0, "VERSION_1")
            guard case .u64(let protocolBits) = try get(.getProtocolFeatures) else {
                throw VhostUserError(.unexpectedReply, "")
            }
            let offered = VhostUserProtocolFeatures(rawValue: protocolBits)
            #expect(offered.contains(.inflightSharedMemory) && offered.contains(.config))
            try honest.send(try VhostUserMessage.setProtocolFeatures([.config, .replyAck]).encode())
            guard
                case .config(let config) = try get(
                    .getConfig(VhostUserConfigSpace(offset: 0, bytes: .init(repeating: 0, count: 60)))
                )
            else {
                throw VhostUserError(.unexpectedReply, "")
            }
            let capacity = config.bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            #expect(capacity == UInt64(image.sectors))
            _ = shutdown(honest.fileDescriptor.rawValue, CInt(SHUT_RDWR))

            // The supervisor saw both end: the first with the connection-failed code, the second cleanly.
            let deadline = ContinuousClock.now + .seconds(30)
            while backEnd.log.components(separatedBy: "connection ended").count < 3, ContinuousClock.now < deadline {
                usleep(50_000)
            }
            let log = backEnd.log
            #expect(log.contains("exited with code 3"), "\(log)")
            #expect(log.contains("exited with code 0"), "\(log)")
            if isolation == "sandbox" {
                #expect(
                    log.components(separatedBy: "is confined (seccomp filter, policy verified)").count == 3,
                    "\(log)"
                )
            }
        }
    }
}
