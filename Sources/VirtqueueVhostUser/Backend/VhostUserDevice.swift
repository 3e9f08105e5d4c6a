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
/// The back-end creates one device value per queue (``DeviceComponent/init(configuration:)``)
/// when the queue first starts, and keeps it across stops and restarts of that queue in the
/// same connection.
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
}

extension VhostUserDevice {
    public static var queueCount: Int { 1 }

    public static func configSpace(for configuration: DeviceConfiguration) throws -> [UInt8] { [] }

    public static var writableConfigBytes: Range<Int> { 0..<0 }
}
