public import Virtqueue

/// A ``DeviceComponent`` that a vhost-user back-end serves: the same device, plus what a
/// vhost-user front-end asks of the device as a whole — how many queues it has (GET_QUEUE_NUM)
/// and its config space (GET_CONFIG / SET_CONFIG).
///
/// Every requirement has a default: a device that has one queue and no config space conforms
/// with an empty extension.
///
/// ```swift
/// extension Uppercase: VhostUserDevice {}
/// ```
///
/// The back-end makes the connection's ``Virtqueue/DeviceComponent/SharedState`` once
/// (``Virtqueue/DeviceComponent/makeSharedState(configuration:)``), and one device value per queue
/// (``Virtqueue/DeviceComponent/init(configuration:queue:shared:)``) when the queue first starts,
/// and keeps it across stops and restarts of that queue in the same connection.
public protocol VhostUserDevice: DeviceComponent {
    /// The number of queues, 1…256 (the default is 1).
    static var queueCount: Int { get }

    /// The device's config space, at most 256 bytes (the default is none): what GET_CONFIG reads.
    ///
    /// - Parameter configuration: What the back-end was given for the device.
    /// - Throws: Anything: the back-end is not created.
    static func configSpace(for configuration: DeviceConfiguration) throws -> [UInt8]

    /// The bytes of the config space the front-end may write with SET_CONFIG (the default is
    /// none). A write is kept in the connection's copy of the config space, which later reads return.
    static var writableConfigBytes: Range<Int> { get }

    /// Serves `queue` until `shouldStop` says so or the driver goes away. The default is the
    /// core's loop, ``Virtqueue/DeviceQueue/serve(_:spins:journal:until:)``: take each request,
    /// ``Virtqueue/DeviceComponent/handle(_:on:)`` it, complete it at once. A queue whose
    /// requests wait for something else — a network device's receive buffers, which wait for
    /// frames — implements its own loop on the same calls (`nextRequest`, `complete`,
    /// `notifyIfNeeded`, `waitForRequests`), recording each request in `journal` as the core's
    /// loop does.
    mutating func serve<M: GuestMemory & ~Copyable, N: Notifier, J: RequestJournal>(
        _ queue: inout DeviceQueue<M, N>,
        spins: Int,
        journal: inout J,
        until shouldStop: () -> Bool
    ) throws
}

extension VhostUserDevice {
    public static var queueCount: Int { 1 }

    public static func configSpace(for configuration: DeviceConfiguration) throws -> [UInt8] { [] }

    public static var writableConfigBytes: Range<Int> { 0..<0 }

    public mutating func serve<M: GuestMemory & ~Copyable, N: Notifier, J: RequestJournal>(
        _ queue: inout DeviceQueue<M, N>,
        spins: Int,
        journal: inout J,
        until shouldStop: () -> Bool
    ) throws {
        try queue.serve(&self, spins: spins, journal: &journal, until: shouldStop)
    }
}
