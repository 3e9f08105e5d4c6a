import CBaselines
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A baseline run that failed or delivered damaged data.
struct BenchmarkFailure: Error, CustomStringConvertible {
    var description: String
}

/// Swift faces of the C baselines in `Sources/CBaselines`.
enum CBaseline {
    /// The CPUs the two processes of a cross-process scenario are pinned to.
    nonisolated(unsafe) static var cpus: (parent: Int32, child: Int32) = (0, 1)

    static func transport(_ transport: Transport) -> vqb_transport {
        switch transport {
        case .pipe: VQB_PIPE
        case .socketpair: VQB_SOCKETPAIR
        case .cVirtqueue: VQB_VIRTQUEUE
        default: VQB_RING
        }
    }

    /// Ring slots for messages of `size` bytes: 256, fewer for large messages (at least 64, so
    /// a batch of 32 always fits twice), about 16 MiB of slots at most.
    static func ringSlots(size: Int) -> UInt32 {
        var slots = 256
        while slots > 64, slots * size > 16 << 20 { slots /= 2 }
        return UInt32(slots)
    }

    static func check(_ result: vqb_result, operations: Int, label: String) throws -> Sample {
        try verify(result, label: label)
        // The median group of operations (see vqb_result.median_group_nanoseconds), scaled to all
        // the groups, so ns/op is the median group's time per operation.
        guard result.groups > 0, result.median_group_nanoseconds > 0 else {
            throw BenchmarkFailure(description: "\(label): too few operations to time a group")
        }
        return Sample(
            operations: Int(result.groups * result.group_size),
            nanoseconds: Double(result.median_group_nanoseconds),
            kicks: Int(result.kicks),
            allOperations: Int(result.operations)
        )
    }

    /// Throws if the run failed or a message arrived damaged or missing.
    static func verify(_ result: vqb_result, label: String) throws {
        if result.error != 0 {
            throw BenchmarkFailure(
                description: "\(label): \(String(cString: strerror(result.error))) (errno \(result.error))"
            )
        }
        if result.corrupt != 0 {
            throw BenchmarkFailure(description: "\(label): \(result.corrupt) messages arrived damaged")
        }
        let count = UInt64(result.operations)
        let expected = count == 0 ? 0 : count &* (count &- 1) / 2
        if result.checksum != expected {
            throw BenchmarkFailure(description: "\(label): checksum \(result.checksum), expected \(expected)")
        }
    }

    /// Streams `count` messages from this process to a forked child.
    static func throughput(_ transport: Transport, size: Int, batch: Int, count: Int, spins: Int32) throws -> Sample {
        let result = vqb_throughput(
            Self.transport(transport),
            size,
            batch,
            UInt64(max(count, batch)),
            ringSlots(size: size),
            spins,
            cpus.parent,
            cpus.child
        )
        return try check(result, operations: count, label: "\(transport.rawValue) throughput")
    }

    /// `count` round trips of a `size`-byte request to a forked child.
    static func roundTrip(_ transport: Transport, size: Int, count: Int, spins: Int32) throws -> Sample {
        let result = vqb_round_trip(
            Self.transport(transport),
            size,
            UInt64(count),
            VQB_FILL_HEADER,
            spins,
            cpus.parent,
            cpus.child
        )
        return try check(result, operations: count, label: "\(transport.rawValue) round trip")
    }
}

/// The hand-written C virtqueue's in-process cycles: both ends on this thread.
final class LocalVirtqueue {
    /// A chain cycle's shape and checks (`vqb_local_virtqueue_chain_cycle`).
    struct Chain {
        var readable: UInt32
        var writable: UInt32
        var checks: vqb_checks

        /// Two readable segments and one writable, as the Swift `three` cycle.
        static func three(_ checks: vqb_checks) -> Chain { Chain(readable: 2, writable: 1, checks: checks) }
        /// One readable segment, walked as a chain.
        static func one(_ checks: vqb_checks) -> Chain { Chain(readable: 1, writable: 0, checks: checks) }
    }

    let queue: OpaquePointer
    let payload: Int

    init(payload: Int) throws {
        guard let queue = vqb_local_virtqueue_create(256, payload) else {
            throw BenchmarkFailure(description: "cannot create the in-process C virtqueue")
        }
        self.queue = queue
        self.payload = payload
    }

    deinit { vqb_local_virtqueue_destroy(queue) }

    func run(_ count: Int) throws -> Sample {
        let start = vqb_now_ns()
        let checksum = vqb_local_virtqueue_cycle(queue, UInt64(count), payload)
        let end = vqb_now_ns()
        guard checksum != UInt64.max else { throw BenchmarkFailure(description: "C virtqueue cycle failed") }
        return Sample(operations: count, nanoseconds: Double(end - start), kicks: 0)
    }

    /// `count` chain cycles of `chain`'s shape and checks.
    func run(_ count: Int, chain: Chain) throws -> Sample {
        let start = vqb_now_ns()
        let checksum = vqb_local_virtqueue_chain_cycle(
            queue,
            UInt64(count),
            payload,
            chain.readable,
            chain.writable,
            chain.checks
        )
        let end = vqb_now_ns()
        guard checksum != UInt64.max else { throw BenchmarkFailure(description: "C virtqueue chain cycle failed") }
        // Each cycle's reply (or, without a writable segment, the device's sum) is the readable
        // segments' sequence numbers, 0 to count - 1.
        let expected = UInt64(chain.readable) &* (UInt64(count) &* UInt64(max(count - 1, 0)) / 2)
        guard checksum == expected else {
            throw BenchmarkFailure(description: "C virtqueue chain cycle: checksum \(checksum), expected \(expected)")
        }
        return Sample(operations: count, nanoseconds: Double(end - start), kicks: 0)
    }
}

/// The C virtqueue stream of `profile cvq-shm`: 64-byte messages in batches of 32 to a C device
/// in a process of its own, started as the shared-memory backend starts its device (posix_spawn
/// of this executable, or of `VQB_PROFILE_CHILD`), waiting as `profile shm` does: the driver
/// polls `loadSpins` times before it sleeps, the device sleeps at once. The device checks what
/// `checks` says (`profile cvq-shm`: the minimal checks; `profile cvq-shm-full`: the Swift core's).
enum SpawnedCVirtqueue {
    static func profile(count: Int, checks: vqb_checks = VQB_CHECKS_MINIMAL) throws -> Int {
        let executable = ProcessInfo.processInfo.environment["VQB_PROFILE_CHILD"] ?? "/proc/self/exe"
        let result = vqb_virtqueue_stream_spawned(
            executable,
            64,
            32,
            UInt64(count),
            CBaseline.ringSlots(size: 64),
            loadSpins,
            0,
            CBaseline.cpus.child,
            checks
        )
        try CBaseline.verify(result, label: "C virtqueue stream to a spawned device")
        return Int(result.kicks)
    }
}

/// The C ring's in-process cycle: both ends on this thread.
final class LocalRing {
    let ring: OpaquePointer
    let payload: Int

    init(payload: Int) throws {
        guard let ring = vqb_local_ring_create(256, payload) else {
            throw BenchmarkFailure(description: "cannot create the in-process C ring")
        }
        self.ring = ring
        self.payload = payload
    }

    deinit { vqb_local_ring_destroy(ring) }

    func run(_ count: Int) throws -> Sample {
        let start = vqb_now_ns()
        let checksum = vqb_local_ring_cycle(ring, UInt64(count), payload)
        let end = vqb_now_ns()
        guard checksum != UInt64.max else { throw BenchmarkFailure(description: "C ring cycle: damaged message") }
        return Sample(operations: count, nanoseconds: Double(end - start), kicks: 0)
    }
}
