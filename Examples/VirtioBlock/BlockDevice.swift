import Glibc
public import Virtqueue

/// A virtio-blk device serving a disk image through one file descriptor.
///
/// The launcher opens the image and hands the device the descriptor and the image's size in
/// sectors (``DeviceConfiguration``); the device needs nothing else — in the sandbox it may
/// `pread64`, `pwrite64` and `fdatasync` that one descriptor and no other (see
/// ``BlockDevice/sandboxPolicy``).
///
/// Requests come from the driver and are untrusted: a malformed request (a short header, an
/// unknown type, data that is not a whole number of sectors, sectors past the end of the disk)
/// is answered with an error status, never followed.
public struct BlockDevice: DeviceComponent {
    public static let name = "virtio-blk"

    let disk: CInt
    let sectorCount: UInt64
    /// For the demo's `--misbehave`: after this many requests, attempt a forbidden system call.
    let misbehaveAfter: Int?
    var served = 0

    public init() {
        disk = -1
        sectorCount = 0
        misbehaveAfter = nil
    }

    /// Arguments: `sectors=N` (the image's size) and optionally `misbehave-after=K`;
    /// descriptors: the disk image, open for reading and writing.
    public init(configuration: DeviceConfiguration) throws {
        guard let disk = configuration.fileDescriptors.first else {
            throw BlockDeviceError("the block device needs the disk image's file descriptor")
        }
        var sectors: UInt64?
        var misbehaveAfter: Int?
        for argument in configuration.arguments {
            if argument.hasPrefix("sectors=") { sectors = UInt64(argument.dropFirst(8)) }
            if argument.hasPrefix("misbehave-after=") { misbehaveAfter = Int(argument.dropFirst(16)) }
        }
        guard let sectors else { throw BlockDeviceError("the block device needs sectors=N") }
        self.disk = disk
        self.sectorCount = sectors
        self.misbehaveAfter = misbehaveAfter
    }

    /// The system calls this device makes beyond the device loop's minimum.
    public static let systemCalls = ["pread64", "pwrite64", "fdatasync"]

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        served += 1
        if let misbehaveAfter, served == misbehaveAfter {
            // The demo's --misbehave: a compromised device tries to open a file. In the sandbox
            // the filter kills it here; at the other isolation levels the call simply happens.
            let descriptor = open("/etc/hostname", O_RDONLY)
            if descriptor >= 0 { close(descriptor) }
        }
        // The status byte is the last writable byte; without one there is no way to answer.
        guard request.writableByteCount >= 1 else { return 0 }
        let room = request.writableByteCount - 1
        let header = try withUnsafeTemporaryAllocation(byteCount: BlockRequest.headerSize, alignment: 8) {
            buffer -> (kind: UInt32, sector: UInt64)? in
            guard try queue.gather(request, into: buffer) == BlockRequest.headerSize else { return nil }
            return (
                UInt32(littleEndian: buffer.loadUnaligned(as: UInt32.self)),
                UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            )
        }
        var status = BlockRequest.Status.ioError
        switch header.flatMap({ BlockRequest.Kind(rawValue: $0.kind) }) {
        case .write?:
            let count = request.readableByteCount - BlockRequest.headerSize
            if let position = position(sector: header?.sector ?? 0, count: count) {
                status = try writeData(of: request, on: queue, at: position) ? .ok : .ioError
            }
        case .read?:
            if let position = position(sector: header?.sector ?? 0, count: room) {
                status = try readData(into: request, on: queue, count: room, at: position) ? .ok : .ioError
            }
        case .flush?:
            status = fdatasync(disk) == 0 ? .ok : .ioError
        case .identify?:
            // VIRTIO_BLK_ID_BYTES (20), NUL-padded: a driver reads up to the first NUL.
            var identifier = Array("swift-virtqueue-blk".utf8)
            identifier += [UInt8](repeating: 0, count: BlockRequest.identifierSize - identifier.count)
            _ = try identifier.withUnsafeBytes { source in
                try queue.scatter(UnsafeRawBufferPointer(rebasing: source[0..<min(room, source.count)]), into: request)
            }
            status = .ok
        case nil:
            status = header == nil ? .ioError : .unsupported
        }
        // The status is the chain's last byte; the used length covers the whole writable part
        // (a failed read's data bytes are unspecified, as in virtio-blk).
        try writeStatus(status, after: room, into: request, on: queue)
        return room + 1
    }

    /// The byte offset of a transfer of `count` bytes at `sector`, if it is whole sectors inside the disk.
    func position(sector: UInt64, count: Int) -> off_t? {
        let sectors = UInt64(count / BlockRequest.sectorSize)
        guard count >= 0, count % BlockRequest.sectorSize == 0, sector <= sectorCount,
            sectors <= sectorCount - sector
        else { return nil }
        return off_t(sector) * off_t(BlockRequest.sectorSize)
    }

    /// Writes the readable bytes after the header to the disk, straight from shared memory.
    func writeData<R: GuestMemory & ~Copyable, N: Notifier>(
        of request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>,
        at start: off_t
    ) throws -> Bool {
        var skipped = 0
        var position = start
        var ok = true
        try queue.forEachReadable(in: request) { bytes in
            let skip = min(bytes.count, BlockRequest.headerSize - skipped)
            skipped += skip
            let payload = UnsafeRawBufferPointer(rebasing: bytes[skip...])
            guard ok, !payload.isEmpty else { return }
            ok = pwrite(disk, payload.baseAddress, payload.count, position) == payload.count
            position += off_t(payload.count)
        }
        return ok
    }

    /// Reads `count` bytes from the disk straight into the writable segments.
    func readData<R: GuestMemory & ~Copyable, N: Notifier>(
        into request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>,
        count: Int,
        at start: off_t
    ) throws -> Bool {
        var remaining = count
        var position = start
        var ok = true
        try queue.forEachWritable(in: request) { bytes in
            let length = min(bytes.count, remaining)
            guard ok, length > 0 else { return }
            ok = pread(disk, bytes.baseAddress, length, position) == length
            position += off_t(length)
            remaining -= length
        }
        return ok
    }

    /// Writes the status byte right after `written` data bytes.
    func writeStatus<R: GuestMemory & ~Copyable, N: Notifier>(
        _ status: BlockRequest.Status,
        after written: Int,
        into request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws {
        var position = 0
        try queue.forEachWritable(in: request) { bytes in
            if written >= position, written < position + bytes.count {
                bytes[written - position] = status.rawValue
            }
            position += bytes.count
        }
    }
}

/// A block device set-up error.
public struct BlockDeviceError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
