import Glibc
public import Virtqueue

/// The two sides of a queue.
public enum QueueSide: String, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    /// The side that posts chains and takes them back used.
    case driver
    /// The side that serves the chains.
    case device

    /// The other side.
    public var peer: QueueSide { self == .driver ? .device : .driver }

    public var description: String { rawValue }
}

/// One end of a queue kept in this process, and the other side's end as file descriptors for
/// another process: what ``ConformanceBackend/withProcessEnds(layout:keeping:_:)`` gives the suite.
public struct ProcessEnds<Region: GuestMemory & ~Copyable, Notify: Notifier>: ~Copyable {
    /// The end that stays in this process: its region, notifier and `close`.
    public var local: QueueEnd<Region, Notify>
    /// The other side's end, for the helper process.
    public var remote: PortableEnd

    /// Creates the pair.
    ///
    /// - Parameters:
    ///   - local: The end kept in this process.
    ///   - remote: The other side's end, over the same bytes and connected to `local`'s notifier.
    public init(local: consuming QueueEnd<Region, Notify>, remote: consuming PortableEnd) {
        self.local = local
        self.remote = remote
    }
}

/// One end of a queue as another process takes it: descriptors of the memory and of the
/// notifier, and how to use them.
///
/// The suite's helper process (`VirtqueueConformanceHelper`) receives the descriptors (as
/// descriptors 3, 4, …, in the order of ``descriptors``), maps every ``mappings`` entry
/// `MAP_SHARED`, and acts as the other side of the queue: it kicks by writing
/// ``PortableNotifier/kickMessage`` to ``PortableNotifier/notifyDescriptor`` and waits by polling
/// ``PortableNotifier/waitDescriptor`` and reading what is there. Any notifier built on
/// descriptors that work that way — sockets of any type, pipes, eventfds — can be handed over.
///
/// The end owns its descriptors: it closes each of them once when it goes away. The suite
/// consumes it when it starts the helper, so the helper then holds the only copies and its death
/// closes them.
public struct PortableEnd: ~Copyable {
    /// The memory, as file ranges mapped at bus addresses; together they must cover the layout's
    /// bus range, `0 ..< layout.regionSize`, as ``ConformanceBackend/withQueueEnds(layout:_:)``'s
    /// memory does.
    public let mappings: [PortableMapping]
    /// The notifier.
    public let notifier: PortableNotifier

    /// Creates an end that owns every descriptor named in `mappings` and `notifier`.
    ///
    /// - Parameters:
    ///   - mappings: The memory's file ranges.
    ///   - notifier: The notifier's descriptors.
    public init(mappings: [PortableMapping], notifier: PortableNotifier) {
        self.mappings = mappings
        self.notifier = notifier
    }

    /// Every distinct descriptor of the end, in ascending order: the helper receives them as
    /// descriptors 3, 4, … in this order.
    public var descriptors: [CInt] {
        Array(Set(mappings.map(\.descriptor) + notifier.allDescriptors)).sorted()
    }

    deinit {
        for descriptor in Array(Set(mappings.map(\.descriptor) + notifier.allDescriptors)) where descriptor >= 0 {
            _ = Glibc.close(descriptor)
        }
    }
}

/// A range of a file, mapped at a bus address: one mapping of a ``PortableEnd``'s memory.
public struct PortableMapping: Hashable, Sendable, CustomStringConvertible {
    /// The file (a memfd, a regular file, any descriptor `mmap(2)` can map `MAP_SHARED`).
    public var descriptor: CInt
    /// Where in the file the mapping starts; a multiple of the page size.
    public var offset: Int
    /// The bus address of the mapping's first byte.
    public var busAddress: UInt64
    /// The mapping's length.
    public var byteCount: Int

    /// Creates a mapping.
    ///
    /// - Parameters:
    ///   - descriptor: The file.
    ///   - offset: Where in the file the mapping starts (page-aligned); 0 by default.
    ///   - busAddress: The bus address of its first byte; 0 by default.
    ///   - byteCount: Its length.
    public init(descriptor: CInt, offset: Int = 0, busAddress: UInt64 = 0, byteCount: Int) {
        self.descriptor = descriptor
        self.offset = offset
        self.busAddress = busAddress
        self.byteCount = byteCount
    }

    public var description: String {
        "descriptor \(descriptor) offset \(offset), \(byteCount) bytes at bus address 0x\(String(busAddress, radix: 16))"
    }
}

/// The descriptors of a notifier's end, as the suite's helper process uses them.
public struct PortableNotifier: Hashable, Sendable {
    /// One kick as eight bytes, `UInt64(1)` little-endian: what an eventfd requires, and what a
    /// pipe or any socket takes.
    public static let eightByteKick: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0]

    /// Where the helper's kicks go: it writes ``kickMessage`` to it (`send(2)` with
    /// `MSG_DONTWAIT`, or `write(2)` if it is not a socket).
    public var notifyDescriptor: CInt
    /// Where the local end's kicks arrive: the helper polls it for input and reads what is
    /// there. End of file or a hang-up means the local end is gone. May be ``notifyDescriptor``
    /// (one socket for both directions).
    public var waitDescriptor: CInt
    /// Descriptors the helper only holds, so that they close when it dies (a liveness socket,
    /// say).
    public var heldDescriptors: [CInt]
    /// The bytes of one kick; 1 to 64 of them.
    public var kickMessage: [UInt8]

    /// Creates a notifier end.
    ///
    /// - Parameters:
    ///   - notifyDescriptor: Where the helper's kicks go.
    ///   - waitDescriptor: Where the local end's kicks arrive.
    ///   - heldDescriptors: Descriptors the helper only holds.
    ///   - kickMessage: The bytes of one kick; ``eightByteKick`` by default.
    public init(
        notifyDescriptor: CInt,
        waitDescriptor: CInt,
        heldDescriptors: [CInt] = [],
        kickMessage: [UInt8] = PortableNotifier.eightByteKick
    ) {
        self.notifyDescriptor = notifyDescriptor
        self.waitDescriptor = waitDescriptor
        self.heldDescriptors = heldDescriptors
        self.kickMessage = kickMessage
    }

    /// One socket for both directions (one end of a `socketpair(2)`, say).
    ///
    /// - Parameters:
    ///   - socket: The socket.
    ///   - kickMessage: The bytes of one kick; ``eightByteKick`` by default.
    public init(socket: CInt, kickMessage: [UInt8] = PortableNotifier.eightByteKick) {
        self.init(notifyDescriptor: socket, waitDescriptor: socket, kickMessage: kickMessage)
    }

    var allDescriptors: [CInt] { [notifyDescriptor, waitDescriptor] + heldDescriptors }
}
