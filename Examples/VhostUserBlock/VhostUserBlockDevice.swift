import Glibc
import VirtioBlock
import Virtqueue
import VirtqueueVhostUser

/// The virtio-blk device of this package (`BlockDevice`), served over vhost-user: the same
/// request code as at every other isolation level, plus what a vhost-user front-end asks of the
/// device as a whole — its features and its config space.
struct VhostUserBlockDevice: VhostUserDevice {
    static let name = "vhost-user-blk"

    /// `VIRTIO_BLK_F_SEG_MAX` (2), `VIRTIO_BLK_F_BLK_SIZE` (6), `VIRTIO_BLK_F_FLUSH` (9),
    /// `VIRTIO_BLK_F_MQ` (12).
    static let blockFeatures = Features(rawValue: 1 << 2 | 1 << 6 | 1 << 9 | 1 << 12)

    /// The most request queues (GET_QUEUE_NUM, and the config's `num_queues`): QEMU's
    /// `num-queues=` may ask for up to this many (its default is one per vCPU), and overrides the
    /// config's `num_queues` with what it asked for. Each queue is served on a thread of its own,
    /// with a device value of its own over the one disk image (`preadv` and `pwritev` at explicit
    /// offsets need no lock between them).
    static let queueCount = 8

    /// The ring core's transport features (INDIRECT_DESC, EVENT_IDX, VERSION_1) and the block ones.
    static var supportedFeatures: Features { Features.all.union(blockFeatures) }

    /// At most this many data segments per request (`seg_max`).
    static let segmentLimit: UInt32 = 126

    var device: BlockDevice
    /// The test aid `--stall-after-writes N`: on the first connection, the N-th write request is
    /// taken and never completed (the worker hangs in it), so a test can kill the worker with
    /// that request in flight and watch the next worker resume it.
    let stallAfterWrites: Int?
    var writes = 0

    /// The test aids (`stall-after-writes=N`, and `BlockDevice`'s `misbehave-after=N`) act on
    /// the first connection only, so the worker that replaces the one they killed serves normally.
    init(configuration: DeviceConfiguration) throws {
        let value = { (name: String) in
            configuration.arguments.lazy.compactMap { argument -> Int? in
                argument.hasPrefix(name + "=") ? Int(argument.dropFirst(name.count + 1)) : nil
            }.first
        }
        let first = value("connection") == 1
        var configuration = configuration
        if !first { configuration.arguments.removeAll { $0.hasPrefix("misbehave-after=") } }
        device = try BlockDevice(configuration: configuration)
        stallAfterWrites = first ? value("stall-after-writes") : nil
    }

    /// `struct virtio_blk_config`, 60 bytes: capacity (sectors), size_max, seg_max, geometry,
    /// blk_size, topology, writeback, num_queues, and the discard / write-zeroes fields (zero:
    /// not offered).
    static func configSpace(for configuration: DeviceConfiguration) throws -> [UInt8] {
        let sectors = configuration.arguments.lazy.compactMap { argument -> UInt64? in
            argument.hasPrefix("sectors=") ? UInt64(argument.dropFirst(8)) : nil
        }.first
        guard let sectors else { throw BlockDeviceError("the block device needs sectors=N") }
        var bytes = [UInt8](repeating: 0, count: 60)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: sectors.littleEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: segmentLimit.littleEndian, toByteOffset: 12, as: UInt32.self)
            raw.storeBytes(of: UInt32(BlockRequest.sectorSize).littleEndian, toByteOffset: 20, as: UInt32.self)
            raw.storeBytes(of: UInt16(queueCount).littleEndian, toByteOffset: 34, as: UInt16.self)
        }
        return bytes
    }

    mutating func handle<M: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<M, N>
    ) throws -> Int {
        if let stallAfterWrites {
            var kind: UInt32 = .max
            _ = try withUnsafeMutableBytes(of: &kind) { try queue.gather(request, into: $0) }
            if UInt32(littleEndian: kind) == BlockRequest.Kind.write.rawValue {
                writes += 1
                if writes == stallAfterWrites { stall() }
            }
        }
        return try device.handle(request, on: queue)
    }

    /// Hangs for good, saying so once on standard error.
    func stall() -> Never {
        var line = "worker \(getpid()): stalling in write request \(writes) (--stall-after-writes)\n"
        line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
        while true { sleep(3600) }
    }
}
