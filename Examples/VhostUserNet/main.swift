import ArgumentParser
import Glibc
import Synchronization
import SystemPackage
import VirtioNet
import Virtqueue
import VirtqueueVhostUser

/// virtio-net over vhost-user, both roles: `loopback` serves a loopback device on a socket (our
/// back-end: what DPDK's virtio-user connects to), `ping` drives a forwarding back-end (our
/// front-end: testpmd's net_vhost in macswap mode) and reports packets per second.
struct VhostUserNet: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "virtio-net over vhost-user: a loopback back-end and a ping front-end (docs/vhost-user.md).",
        subcommands: [Loopback.self, Ping.self]
    )

    struct Loopback: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve a virtio-net loopback device: every transmitted frame comes back on the receive queue."
        )

        @Option(help: "The vhost-user socket to listen on.")
        var socket: String

        @Option(help: "Stop after this many seconds (default: serve until killed).")
        var seconds: Double?

        func run() throws {
            let listener = try VhostUserListener(path: FilePath(socket))
            let backend = try VhostUserBackend<NetLoopbackDevice>()
            let end = seconds.map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) }
            print("serving a virtio-net loopback on \(socket)")
            while end.map({ ContinuousClock.now < $0 }) ?? true {
                guard let connection = try listener.accept(timeout: .milliseconds(200)) else { continue }
                try? backend.serve(connection: connection)
                let loops = NetLoopbackDevice.loops.withLock { $0 }
                if let loop = loops.last {
                    print(
                        "connection ended: \(loop.transmitted.load(ordering: .relaxed)) frames taken, "
                            + "\(loop.delivered.load(ordering: .relaxed)) delivered, "
                            + "\(loop.malformed.load(ordering: .relaxed)) malformed, "
                            + "\(loop.dropped.load(ordering: .relaxed)) dropped"
                    )
                }
            }
        }
    }

    struct Ping: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Send numbered frames through a forwarding vhost-user-net back-end and check each that comes back."
        )

        @Option(help: "The back-end's vhost-user socket.")
        var socket: String

        @Option(help: "Frames to send.")
        var frames = 1_000_000

        @Option(help: "Frames between sending and receiving at most.")
        var window = 128

        @Flag(help: "Use packed rings (VIRTIO_F_RING_PACKED; the back-end must offer it).")
        var packed = false

        @Flag(help: "Ask for VIRTIO_F_IN_ORDER (acked if the back-end offers it).")
        var inOrder = false

        func run() throws {
            let result = try VirtioNet.ping(
                socket: FilePath(socket),
                frames: frames,
                window: window,
                format: packed ? .packed : .split,
                inOrder: inOrder
            )
            let (seconds, attoseconds) = result.duration.components
            let elapsed = Double(seconds) + Double(attoseconds) / 1e18
            print(
                "sent \(result.sent), received \(result.received), mismatches \(result.mismatches), "
                    + "\(Int(Double(result.received) / elapsed)) frames/s, features \(result.features)"
            )
            if result.received != result.sent || result.mismatches != 0 { throw ExitCode.failure }
        }
    }
}

VhostUserNet.main()
