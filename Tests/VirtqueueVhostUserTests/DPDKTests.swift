import Foundation
import Glibc
import Synchronization
import SystemPackage
import Testing
import VirtioNet
import Virtqueue
import VirtqueueVhostUser

/// DPDK's `dpdk-testpmd` (Debian's `dpdk-dev` package), when installed.
enum DPDKPeer {
    static let package = "dpdk-dev"

    static var testpmd: String? { GuestPeers.executable("dpdk-testpmd") }

    /// Whether to run: yes if testpmd is installed; if it is not, a failure in CI
    /// (`VIRTQUEUE_REQUIRE_PEERS=1`) and a skip elsewhere.
    static var shouldRun: Bool { testpmd != nil || GuestPeers.required }

    static var skipComment: Comment { "dpdk-testpmd is not installed: apt-get install \(package)" }

    /// A running testpmd, in its own process group, reading its standard input from a FIFO we
    /// hold open: testpmd forwards until its input ends, then prints its statistics and exits.
    struct Running {
        let process: GuestProcess
        let input: CInt

        /// Ends testpmd's input and waits (up to 20 s) for it to print its statistics and exit.
        func finish() {
            _ = close(input)
            _ = process.wait(timeout: .seconds(20))
            process.stop(grace: .seconds(1))
        }
    }

    /// testpmd without hugepages on CPU 1, its output line-buffered into `log`.
    static func start(_ name: String, vdev: String, options: [String], log: String, fifo: String) throws -> Running {
        guard let testpmd else {
            throw GuestHarnessError("dpdk-testpmd is not installed: apt-get install \(package)")
        }
        guard mkfifo(fifo, 0o600) == 0 else { throw GuestHarnessError("mkfifo \(fifo): errno \(errno)") }
        // O_RDWR: the open does not wait for a reader, and testpmd sees end of file only when we close it.
        let input = open(fifo, O_RDWR | O_CLOEXEC)
        guard input >= 0 else { throw GuestHarnessError("open \(fifo): errno \(errno)") }
        let command =
            [
                "exec", "stdbuf", "-oL", testpmd, "--no-huge", "-m", "256", "--no-pci", "--file-prefix=\(name)",
                "--lcores", "'(0,1)@1'", "--vdev", "'\(vdev)'", "--", "--total-num-mbufs=8192", "--stats-period", "0",
            ] + options + ["<", fifo]
        do {
            let process = try GuestProcess(
                ["/bin/sh", "-c", command.joined(separator: " ")],
                stdoutPath: log,
                stderrPath: log
            )
            return Running(process: process, input: input)
        } catch {
            _ = close(input)
            throw error
        }
    }
}

extension VhostUserTests {
    /// Real DPDK peers: our front-end sends virtio-net frames to testpmd's vhost-user port and gets
    /// every one back, MACs swapped, by content and count; testpmd's virtio-user port drives our
    /// back-end. Each runs on every ring variant the core runs (``RingVariants``): split and
    /// packed, with and without VIRTIO_F_IN_ORDER, which the test checks was negotiated.
    @Suite(
        "DPDK testpmd",
        .serialized,
        .enabled(if: DPDKPeer.shouldRun, DPDKPeer.skipComment),
        .timeLimit(.minutes(5))
    )
    struct DPDKTests {
        @Test(
            "our front-end ↔ testpmd's net_vhost (macswap): every frame comes back, swapped, once",
            arguments: RingVariants.running
        )
        func frontEndToTestpmdMacswap(_ variant: RingVariant) throws {
            let scratch = try GuestScratch(prefix: "vqtest-dpdk")
            defer { scratch.remove() }
            let socket = scratch.path("vhost.sock")
            let testpmd = try DPDKPeer.start(
                "vqtest\(getpid())",
                vdev: "net_vhost0,iface=\(socket),queues=1",
                options: ["--forward-mode=macswap", "--auto-start"],
                log: scratch.path("testpmd.log"),
                fifo: scratch.path("testpmd.input")
            )
            defer { testpmd.finish() }
            // The socket exists once bound; testpmd listens once its port started and it forwards.
            let deadline = ContinuousClock.now + .seconds(60)
            while !guestReadText(scratch.path("testpmd.log")).contains("Press enter to exit"),
                testpmd.process.isRunning, ContinuousClock.now < deadline
            {
                usleep(20_000)
            }
            #expect(GuestBackEnd.isSocket(socket), "\(guestReadText(scratch.path("testpmd.log")))")

            let result = try VirtioNet.ping(
                socket: FilePath(socket),
                frames: 20_000,
                format: variant.format,
                inOrder: variant.inOrder
            )
            let log = guestReadText(scratch.path("testpmd.log"))
            // testpmd's vhost port offers IN_ORDER; we ack it exactly when the variant asks.
            #expect(result.features.contains(.inOrder) == variant.inOrder, "acked \(result.features)")
            #expect(result.features.contains(.ringPacked) == (variant.format == .packed))
            #expect(result.sent == 20_000)
            #expect(result.received == result.sent, "testpmd log:\n\(log)")
            #expect(result.mismatches == 0)
            print(
                "front-end ↔ testpmd macswap (\(variant.testDescription)): \(result.received) frames of \(VirtioNet.frameSize) B in \(result.duration)"
            )
        }

        /// testpmd's forward statistics for port 0 at exit: RX-packets and TX-packets.
        static func portStatistics(_ log: String) -> (received: Int, sent: Int)? {
            guard let block = log.range(of: "Forward statistics for port 0") else { return nil }
            let text = log[block.upperBound...]
            func number(after label: String) -> Int? {
                guard let range = text.range(of: label) else { return nil }
                return Int(text[range.upperBound...].drop { $0 == " " }.prefix { $0.isNumber })
            }
            guard let received = number(after: "RX-packets:"), let sent = number(after: "TX-packets:") else {
                return nil
            }
            return (received, sent)
        }

        /// Our back-end, serving `NetLoopbackDevice` on a listening socket, one connection at a time.
        final class LoopbackBackEnd: Sendable {
            let listener: VhostUserListener
            let done = Atomic<Bool>(false)
            let finished = Mutex<Bool>(false)
            /// The back-end's log lines.
            let lines = Mutex<[String]>([])

            init(socket: String) throws {
                listener = try VhostUserListener(path: FilePath(socket))
                let backend = try VhostUserBackend<NetLoopbackDevice>(log: { [self] record in
                    lines.withLock { $0.append("\(record)") }
                })
                let thread = Thread { [self] in
                    while !done.load(ordering: .relaxed) {
                        guard let connection = try? listener.accept(timeout: .milliseconds(100)) else { continue }
                        try? backend.serve(connection: connection)
                    }
                    finished.withLock { $0 = true }
                }
                thread.start()
            }

            func stop() {
                done.store(true, ordering: .relaxed)
                let deadline = ContinuousClock.now + .seconds(10)
                while !finished.withLock({ $0 }), ContinuousClock.now < deadline { usleep(10_000) }
            }
        }

        /// testpmd's virtio-user port driving our loopback device on rings of `variant`
        /// (`packed_vq=1` for the packed ring, `in_order=1` or `0`: testpmd's default is 1);
        /// requires testpmd's statistics and our loop, checks that both rings started in the
        /// variant testpmd asked for (`expectStarted`), and returns the statistics, the loop's
        /// counters, and testpmd's log then our back-end's.
        static func virtioUserRun(
            forwardMode: String,
            seconds: Double,
            variant: RingVariant
        ) throws -> (counts: (received: Int, sent: Int), ours: NetLoopbackDevice.Loop, log: String) {
            let scratch = try GuestScratch(prefix: "vqtest-dpdk")
            defer { scratch.remove() }
            let socket = scratch.path("loop.sock")
            let before = NetLoopbackDevice.loops.withLock { $0.count }
            let backEnd = try LoopbackBackEnd(socket: socket)
            defer { backEnd.stop() }
            let testpmd = try DPDKPeer.start(
                "vqtest\(getpid())u",
                vdev: "net_virtio_user0,path=\(socket),queues=1,queue_size=256"
                    + (variant.format == .packed ? ",packed_vq=1" : "") + ",in_order=\(variant.inOrder ? 1 : 0)",
                options: ["--forward-mode=\(forwardMode)", "--tx-first", "--auto-start"],
                log: scratch.path("testpmd.log"),
                fifo: scratch.path("testpmd.input")
            )
            // testpmd checks the link (up to 9 s) before it forwards; then the run lasts `seconds`.
            let forwarding = ContinuousClock.now + .seconds(60)
            while !guestReadText(scratch.path("testpmd.log")).contains("Press enter to exit"),
                testpmd.process.isRunning, ContinuousClock.now < forwarding
            {
                usleep(50_000)
            }
            usleep(UInt32(seconds * 1_000_000))
            testpmd.finish()
            let log = guestReadText(scratch.path("testpmd.log"))
            let loop = NetLoopbackDevice.loops.withLock { $0.count > before ? $0.last : nil }
            let lines = backEnd.lines.withLock { $0 }
            let both = log + "\nour back-end:\n" + lines.joined(separator: "\n")
            let counts = try #require(portStatistics(log), "no statistics in testpmd's log:\n\(both)")
            let ours = try #require(loop, "testpmd never started our device's rings:\n\(both)")
            // Both rings ran in the variant testpmd asked for (packed_vq, in_order).
            expectStarted(lines.filter { $0.contains("started: ") }, variant, log: both)
            return (counts, ours, both)
        }

        /// Both rings started in `variant`'s format, size 256, with IN_ORDER (bit 35) acked
        /// exactly when `variant` asks for it.
        static func expectStarted(_ started: [String], _ variant: RingVariant, log: String) {
            #expect(started.count >= 2, "\(log)")
            for line in started {
                #expect(line.contains("started: \(variant.format) ring, size 256"), "\(line)")
                #expect(line.contains("IN_ORDER") == variant.inOrder, "\(line)")
                #expect(line.contains("RING_PACKED") == (variant.format == .packed), "\(line)")
            }
        }

        @Test(
            "testpmd's virtio-user ↔ our back-end (rxonly): the first burst crosses both ways, every frame checked",
            arguments: RingVariants.running
        )
        func virtioUserToOurLoopbackExactly(_ variant: RingVariant) throws {
            let (counts, ours, log) = try Self.virtioUserRun(forwardMode: "rxonly", seconds: 4, variant: variant)
            #expect(counts.sent > 0, "\(log)")
            #expect(ours.malformed.load(ordering: .relaxed) == 0)
            #expect(ours.dropped.load(ordering: .relaxed) == 0)
            #expect(ours.transmitted.load(ordering: .relaxed) == counts.sent, "\(log)")
            #expect(ours.delivered.load(ordering: .relaxed) == counts.sent)
            #expect(counts.received == counts.sent, "\(log)")
        }

        @Test(
            "testpmd's virtio-user ↔ our back-end (io loop): frames circulate, every one checked",
            arguments: RingVariants.running
        )
        func virtioUserToOurLoopbackCirculating(_ variant: RingVariant) throws {
            let (counts, ours, log) = try Self.virtioUserRun(forwardMode: "io", seconds: 4, variant: variant)
            let transmitted = ours.transmitted.load(ordering: .relaxed)
            let delivered = ours.delivered.load(ordering: .relaxed)
            #expect(ours.malformed.load(ordering: .relaxed) == 0)
            #expect(transmitted > 1000, "\(log)")
            // At the moment testpmd stopped, at most a ring's worth was between its counters and ours.
            #expect(abs(counts.sent - transmitted) <= 512, "testpmd sent \(counts.sent), we took \(transmitted)")
            #expect(abs(counts.received - delivered) <= 512, "testpmd got \(counts.received), we gave \(delivered)")
            print(
                "testpmd virtio-user ↔ our loopback (io, 4 s, \(variant.testDescription)): \(counts.received) frames received by testpmd, \(transmitted) taken by us"
            )
        }
    }
}
