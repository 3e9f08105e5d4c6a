import Synchronization
public import Virtqueue

/// A device that serves several queues and checks that each request came to the queue it was
/// meant for, in order: every request carries a header of its queue's tag and a sequence number
/// (two little-endian `UInt32`s), then bytes that all equal the tag's low byte.
///
/// Each queue's device value knows its queue (`init(configuration:queue:shared:)`) and the
/// next sequence number it expects; a request whose tag is not its queue — cross-talk — or
/// whose sequence is out of order, or whose filler bytes are not all its tag's (another queue's
/// pool overlapping this one's), makes it throw, naming the values. A sequence of
/// ``dieSequence`` makes it throw on purpose; one of ``holdSequence`` keeps the request until
/// some queue has been asked to die, then throws too. Every queue's values share one counter of
/// all requests served, and which queue was asked to die. The reply: the queue's index as the `DeviceQueue` knows it, the sequence,
/// and the shared count after this request (little-endian `UInt32`, `UInt32`, `UInt64`).
public struct QueueTagDevice: DeviceComponent {
    public static let name = "queue-tag"

    /// The sequence number that asks the device to throw.
    public static let dieSequence: UInt32 = .max
    /// The sequence number that holds the request until a queue is asked to die.
    public static let holdSequence: UInt32 = .max - 1

    /// Requests served on every queue, and the queue asked to die (-1 before).
    public final class Shared: Sendable {
        let served = Atomic<UInt64>(0)
        let dying = Atomic<Int>(-1)
    }

    let queue: Int
    let shared: Shared
    var expected: UInt32 = 0

    public static func makeSharedState(configuration: DeviceConfiguration) throws -> Shared { Shared() }

    public init(configuration: DeviceConfiguration) {
        self.init(queue: 0, shared: Shared())
    }

    public init(configuration: DeviceConfiguration, queue: Int, shared: Shared) {
        self.init(queue: queue, shared: shared)
    }

    init(queue: Int, shared: Shared) {
        self.queue = queue
        self.shared = shared
    }

    /// What the device (or a test's driver) found wrong.
    public struct Mismatch: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var bytes = [UInt8](repeating: 0, count: request.readableByteCount)
        _ = try bytes.withUnsafeMutableBytes { try queue.gather(request, into: $0) }
        guard bytes.count >= 8 else { throw Mismatch(description: "a request of \(bytes.count) bytes has no header") }
        let tag = bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) }
        let sequence = bytes.withUnsafeBytes {
            UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        }
        if sequence == Self.dieSequence {
            shared.dying.store(self.queue, ordering: .releasing)
            throw Mismatch(description: "queue \(self.queue) was asked to die")
        }
        if sequence == Self.holdSequence {
            // A spin, not a sleep: a sandboxed device may not call nanosleep.
            while shared.dying.load(ordering: .acquiring) < 0 {}
            throw Mismatch(
                description:
                    "queue \(self.queue) let go: queue \(shared.dying.load(ordering: .acquiring)) was asked to die"
            )
        }
        guard tag == UInt32(self.queue), queue.queueIndex == self.queue else {
            throw Mismatch(
                description:
                    "queue \(self.queue) (the DeviceQueue says \(queue.queueIndex)) got a request tagged \(tag)"
            )
        }
        guard sequence == expected else {
            throw Mismatch(description: "queue \(self.queue) expected sequence \(expected), got \(sequence)")
        }
        if let stray = bytes.dropFirst(8).firstIndex(where: { $0 != UInt8(truncatingIfNeeded: tag) }) {
            throw Mismatch(
                description:
                    "queue \(self.queue) request \(sequence): byte \(stray) is \(bytes[stray]), not the tag's \(UInt8(truncatingIfNeeded: tag))"
            )
        }
        expected &+= 1
        let total = shared.served.add(1, ordering: .relaxed).newValue
        var reply = [UInt8](repeating: 0, count: 16)
        reply.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(queue.queueIndex).littleEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: sequence.littleEndian, toByteOffset: 4, as: UInt32.self)
            raw.storeBytes(of: total.littleEndian, toByteOffset: 8, as: UInt64.self)
        }
        return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}
