import Foundation
import Glibc
import Testing
import Virtqueue

extension VhostUserTests {
    /// Our vhost-user-blk back-end, `VhostUserBlock`, serving a real Linux kernel's virtio-blk
    /// driver under QEMU: the same workload and the same checks as the control
    /// (qemu-storage-daemon), at both isolation levels, with the device options varied, with the
    /// worker killed mid-write and resumed from the inflight area, and with a worker whose
    /// sandbox kills it for a forbidden system call.
    @Suite(
        "Linux guest against VhostUserBlock",
        .serialized,
        .enabled(if: GuestPeers.shouldRun, GuestPeers.skipComment),
        .timeLimit(.minutes(10))
    )
    struct VhostUserBlockGuestTests {
        /// The `VhostUserBlock` executable, built beside the test binary.
        static var executable: String {
            var buffer = [CChar](repeating: 0, count: 4097)
            let count = readlink("/proc/self/exe", &buffer, 4096)
            let path = String(decoding: buffer[0..<max(count, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return (path as NSString).deletingLastPathComponent + "/VhostUserBlock"
        }

        /// Starts `VhostUserBlock` on `image` with `options`.
        static func backEnd(_ image: GuestImage, socket: String, _ options: [String]) throws -> GuestBackEnd {
            try GuestBackEnd([executable, "--socket", socket, "--image", image.path] + options, socketPath: socket)
        }

        /// Boots the guest with `check` against VhostUserBlock on a fresh 64 MiB image, checks every
        /// value that crossed, and returns the result and the back-end's log.
        func check(
            _ options: [String],
            cpus: Int = 1,
            disk configure: (String) -> GuestDisk = { GuestDisk(socketPath: $0) }
        ) throws -> (result: GuestResult, log: String) {
            _ = try GuestPeers.require()
            let scratch = try GuestScratch(prefix: "vqtest-vub")
            defer { scratch.remove() }
            let image = try GuestImage.create(at: scratch.path("disk.img"), mebibytes: 64)
            let before = try image.md5()
            let backEnd = try Self.backEnd(image, socket: scratch.path("blk.sock"), options)
            defer { backEnd.stop() }

            let result = try GuestRun(workload: .check, disk: configure(backEnd.socketPath), cpus: cpus).run()
            // QEMU has exited; the worker sees the hang-up and the supervisor logs how it ended.
            let deadline = ContinuousClock.now + .seconds(30)
            while !backEnd.log.contains("connection ended"), ContinuousClock.now < deadline { usleep(50_000) }
            let log = backEnd.log
            backEnd.stop()

            #expect(result.done, "the guest did not finish: \(result.consoleTail())\nback-end:\n\(log)")
            #expect(result["marker"] == image.marker)
            #expect(result["disk_md5"] == before)
            #expect(result["sectors"] == "\(image.sectors)")
            #expect(result["logical_block_size"] == "512")
            #expect(result["serial"] == "swift-virtqueue-blk")
            let expected = try GuestPattern.md5(length: GuestImage.checkPatternLength)
            #expect(result["pattern_md5"] == expected)
            #expect(result["write_ok"] == "1")
            #expect(result["readback_md5"] == expected)
            let onDisk = try image.md5(offset: GuestImage.checkPatternOffset, length: GuestImage.checkPatternLength)
            #expect(onDisk == expected)
            #expect(result["io_errors"] == "0")
            // With several CPUs, each read a 4 MiB slice of the disk at once (scripts/guest/init.sh).
            #expect(result["cpus"] == "\(cpus)")
            if cpus > 1 {
                for cpu in 0..<cpus {
                    let slice = try image.md5(offset: cpu << 22, length: 1 << 22)
                    #expect(result["cpu_slice_md5_\(cpu)"] == slice, "the slice CPU \(cpu) read")
                }
            }
            return (result, log)
        }

        /// The requests each queue served in the connection, from the back-end's log: the last
        /// `queue I: stopped at cursor … N in this connection` line of each queue (the worker
        /// logs one whenever a ring stops, GET_VRING_BASE or the end of the connection).
        static func servedPerQueue(in log: String) -> [Int: Int] {
            var served: [Int: Int] = [:]
            for line in log.split(separator: "\n") where line.contains(" in this connection") {
                guard let queueRange = line.range(of: "queue "), let countEnd = line.range(of: " in this connection")
                else { continue }
                let queue = Int(line[queueRange.upperBound...].prefix { $0.isNumber })
                let count = Int(String(line[..<countEnd.lowerBound].reversed().prefix { $0.isNumber }.reversed()))
                if let queue, let count { served[queue] = max(served[queue] ?? 0, count) }
            }
            return served
        }

        /// The queue counts (and ring formats) of ``checkWithSeveralQueues(_:)``: 2 and 4 split
        /// rings, and 2 packed ones once the core runs the packed ring.
        static var severalQueues: [SeveralQueues] {
            [SeveralQueues(count: 2), SeveralQueues(count: 4)]
                + (RingFormats.running.contains(.packed) ? [SeveralQueues(count: 2, packed: true)] : [])
        }

        struct SeveralQueues: Sendable, CustomTestStringConvertible {
            var count: Int
            var packed = false
            var testDescription: String { "\(count) \(packed ? "packed" : "split") queues" }
        }

        @Test(
            "several queues (num-queues = vCPUs): the guest's I/O from every CPU goes down its own queue, each served on a thread of its own",
            arguments: severalQueues
        )
        func checkWithSeveralQueues(_ several: SeveralQueues) throws {
            let queues = several.count
            let (result, log) = try check(["--isolation", "sandbox"], cpus: queues) {
                GuestDisk(socketPath: $0, queueCount: queues, packed: several.packed)
            }
            #expect(log.contains("started: \(several.packed ? "packed" : "split") ring"), "\(log)")
            #expect(result["queues"] == "\(queues)", "the guest's blk-mq hardware queues")
            let features = Array(try #require(result["features"]))
            #expect(features.count > 12 && features[12] == "1", "VIRTIO_BLK_F_MQ")
            // Every queue carried requests: the worker's per-queue counts, and each CPU's slice read
            // (checked in check()) went down the queue of its CPU.
            let served = Self.servedPerQueue(in: log)
            for queue in 0..<queues {
                #expect((served[queue] ?? 0) > 0, "queue \(queue) served \(served[queue] ?? 0) requests:\n\(log)")
            }
            #expect(served.keys.allSatisfy { $0 < queues }, "\(served)")
        }

        @Test("shared-memory isolation: a worker process serves the guest's disk")
        func checkInAProcess() throws {
            let (result, log) = try check(["--isolation", "shm"])
            #expect(log.contains("started (process)"), "\(log)")
            #expect(!log.contains("error"), "\(log)")
            let features = Array(try #require(result["features"]))
            #expect(features.count > 32)
            if features.count > 32 {
                #expect(features[9] == "1", "FLUSH")
                #expect(features[28] == "1", "INDIRECT_DESC")
                #expect(features[29] == "1", "EVENT_IDX")
                #expect(features[32] == "1", "VERSION_1")
            }
        }

        @Test("sandboxed: the worker that maps guest memory is seccomp-confined, verified before it serves")
        func checkSandboxed() throws {
            let (_, log) = try check(["--isolation", "sandbox"])
            #expect(log.contains("is confined (seccomp filter, policy verified)"), "\(log)")
            #expect(log.contains("exited with code 0"), "\(log)")
            #expect(!log.contains("forbidden system call"), "\(log)")
        }

        /// The device options QEMU varies: the queue size, the ring features our core implements,
        /// and the ring format (`packed=on`).
        struct Options: CustomTestStringConvertible, Sendable {
            var queueSize: Int?
            var eventIndex: Bool
            var indirect: Bool
            var packed = false
            var testDescription: String {
                "queue-size \(queueSize.map(String.init) ?? "128"), event_idx \(eventIndex ? "on" : "off"), "
                    + "indirect_desc \(indirect ? "on" : "off")" + (packed ? ", packed on" : "")
            }

            /// Each option on and off; the packed ring's variants once the core runs it.
            static var variants: [Options] {
                var variants = [
                    Options(queueSize: 256, eventIndex: true, indirect: true),
                    Options(queueSize: nil, eventIndex: false, indirect: true),
                    Options(queueSize: nil, eventIndex: true, indirect: false),
                    Options(queueSize: 256, eventIndex: false, indirect: false),
                ]
                if RingFormats.running.contains(.packed) {
                    variants += [
                        Options(queueSize: nil, eventIndex: true, indirect: true, packed: true),
                        Options(queueSize: 256, eventIndex: false, indirect: false, packed: true),
                    ]
                }
                return variants
            }
        }

        @Test("sandboxed, the device options varied", arguments: Options.variants)
        func checkWithOptions(_ options: Options) throws {
            let (result, log) = try check(["--isolation", "sandbox"]) {
                GuestDisk(
                    socketPath: $0,
                    queueSize: options.queueSize,
                    eventIndex: options.eventIndex,
                    indirectDescriptors: options.indirect,
                    packed: options.packed
                )
            }
            // The ring format, seen from both sides: the guest's negotiated bit 34 and our worker's.
            let format = options.packed ? "packed" : "split"
            #expect(log.contains("started: \(format) ring, size \(options.queueSize ?? 128)"), "\(log)")
            // Linux fills the ring, with two descriptors per request when it cannot use indirect ones.
            #expect(result["queue_depth"] == "\((options.queueSize ?? 128) / (options.indirect ? 1 : 2))")
            let features = Array(try #require(result["features"]))
            #expect(features.count > 32)
            if features.count > 32 {
                #expect(features[28] == (options.indirect ? "1" : "0"), "INDIRECT_DESC")
                #expect(features[29] == (options.eventIndex ? "1" : "0"), "EVENT_IDX")
                #expect(features[34] == (options.packed ? "1" : "0"), "RING_PACKED")
            }
        }

        @Test(
            "kill -9 of the sandboxed worker mid-write: QEMU reconnects, the new worker resumes the request in flight"
        )
        func killedWorkerIsResumedFromTheInflightArea() throws {
            _ = try GuestPeers.require()
            let scratch = try GuestScratch(prefix: "vqtest-vub")
            defer { scratch.remove() }
            let image = try GuestImage.create(at: scratch.path("disk.img"), mebibytes: 64)
            // The first worker hangs in its 40th write, so the kill lands with that write taken and
            // not completed — marked in the inflight area.
            let backEnd = try Self.backEnd(
                image,
                socket: scratch.path("blk.sock"),
                ["--isolation", "sandbox", "--stall-after-writes", "40"]
            )
            defer { backEnd.stop() }

            var killed: pid_t?
            let disk = GuestDisk(socketPath: backEnd.socketPath, reconnect: true)
            let result = try GuestRun(workload: .longWrite, disk: disk).run { line in
                guard line == GuestLine(key: "phase", value: "writing"), killed == nil else { return }
                let deadline = ContinuousClock.now + .seconds(120)
                while !backEnd.log.contains("stalling in write request 40"), ContinuousClock.now < deadline {
                    usleep(50_000)
                }
                guard let pid = Self.workerProcessID(in: backEnd.log) else { return }
                Glibc.kill(pid, SIGKILL)
                killed = pid
            }
            let log = backEnd.log
            backEnd.stop()

            let pid = try #require(killed, "the worker never stalled:\n\(log)")
            #expect(log.contains("worker \(pid) killed by signal 9"), "\(log)")
            #expect(log.contains("resuming 1 requests a previous back-end left in flight"), "\(log)")
            #expect(result.done, "\(result.consoleTail())")
            let expected = try GuestPattern.md5(length: GuestImage.longWritePatternLength)
            #expect(result["write_ok"] == "1")
            #expect(result["pattern_md5"] == expected)
            #expect(result["readback_md5"] == expected)
            let onDisk = try image.md5(
                offset: GuestImage.longWritePatternOffset,
                length: GuestImage.longWritePatternLength
            )
            #expect(onDisk == expected)
            #expect(result["io_errors"] == "0", "\(result.consoleTail())")
        }

        @Test("a worker killed by its sandbox for a forbidden call is named in the log, and the guest goes on")
        func forbiddenCallIsReportedAndTheGuestGoesOn() throws {
            let (_, log) = try check(["--isolation", "sandbox", "--misbehave-after", "5"]) {
                GuestDisk(socketPath: $0, reconnect: true)
            }
            #expect(log.contains("forbidden system call openat"), "\(log)")
            #expect(log.contains("resuming 1 requests a previous back-end left in flight"), "\(log)")
        }

        /// The process id of the last worker the supervisor started, from its log.
        static func workerProcessID(in log: String) -> pid_t? {
            let starts = log.split(separator: "\n").filter { $0.contains("] worker ") && $0.contains(" started (") }
            guard let last = starts.last, let range = last.range(of: "] worker ") else { return nil }
            return pid_t(last[range.upperBound...].prefix { $0.isNumber })
        }
    }
}
