import Glibc
public import Virtqueue

/// A virtio-blk device serving a disk image through one file descriptor.
///
/// The launcher opens the image and hands the device the descriptor and the image's size in
/// sectors (``DeviceConfiguration``); the device needs nothing else — in the sandbox it may
/// `preadv`, `pwritev` and `fdatasync` that one descriptor and no other (see
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

    /// Arguments: `sectors=N` (the image's size) and optionally `misbehave-after=K`;
    /// descriptors: the disk image, open for reading and writing.
    ///
    /// - Throws: ``BlockDeviceError`` naming what is missing or malformed: no descriptor, no
    ///   `sectors=`, or a value that is not a number.
    public init(configuration: DeviceConfiguration) throws(BlockDeviceError) {
        guard let disk = configuration.fileDescriptors.first else {
            throw BlockDeviceError("the block device needs the disk image's file descriptor")
        }
        var sectors: UInt64?
        var misbehaveAfter: Int?
        for argument in configuration.arguments {
            if argument.hasPrefix("sectors=") {
                guard let value = UInt64(argument.dropFirst(8)) else {
                    throw BlockDeviceError("the block device's \"\(argument)\" is not a sector count")
                }
                sectors = value
            }
            if argument.hasPrefix("misbehave-after=") {
                guard let value = Int(argument.dropFirst(16)), value > 0 else {
                    throw BlockDeviceError("the block device's \"\(argument)\" is not a request count")
                }
                misbehaveAfter = value
            }
        }
        guard let sectors else { throw BlockDeviceError("the block device needs sectors=N") }
        self.disk = disk
        self.sectorCount = sectors
        self.misbehaveAfter = misbehaveAfter
    }

    /// The system calls this device makes beyond the device loop's minimum.
    public static let systemCalls = ["preadv", "pwritev", "fdatasync"]

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

    /// Writes the readable bytes after the header to the disk, straight from shared memory, with
    /// one `pwritev` per ``vectorLimit`` segments.
    func writeData<R: GuestMemory & ~Copyable, N: Notifier>(
        of request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>,
        at start: off_t
    ) throws -> Bool {
        try withUnsafeTemporaryAllocation(of: iovec.self, capacity: Self.vectorLimit) { vectors in
            var batch = VectoredTransfer(disk: disk, vectors: vectors, position: start, writing: true)
            var skipped = 0
            try queue.forEachReadable(in: request) { bytes in
                let skip = min(bytes.count, BlockRequest.headerSize - skipped)
                skipped += skip
                let payload = UnsafeRawBufferPointer(rebasing: bytes[skip...])
                guard let base = payload.baseAddress, !payload.isEmpty else { return }
                batch.add(UnsafeMutableRawPointer(mutating: base), payload.count)
            }
            return batch.finish()
        }
    }

    /// Reads `count` bytes from the disk straight into the writable segments, with one `preadv`
    /// per ``vectorLimit`` segments.
    func readData<R: GuestMemory & ~Copyable, N: Notifier>(
        into request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>,
        count: Int,
        at start: off_t
    ) throws -> Bool {
        try withUnsafeTemporaryAllocation(of: iovec.self, capacity: Self.vectorLimit) { vectors in
            var batch = VectoredTransfer(disk: disk, vectors: vectors, position: start, writing: false)
            var remaining = count
            try queue.forEachWritable(in: request) { bytes in
                let length = min(bytes.count, remaining)
                guard let base = bytes.baseAddress, length > 0 else { return }
                batch.add(base, length)
                remaining -= length
            }
            return batch.finish()
        }
    }

    /// Segments moved per system call at most: a guest's request is often a page per segment.
    static let vectorLimit = 64

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

/// Segments gathered into an `iovec` array on the stack and moved with one `preadv` / `pwritev`
/// each time it fills, then at the end.
struct VectoredTransfer {
    let disk: CInt
    let vectors: UnsafeMutableBufferPointer<iovec>
    var position: off_t
    let writing: Bool
    var count = 0
    var bytes = 0
    var ok = true

    init(disk: CInt, vectors: UnsafeMutableBufferPointer<iovec>, position: off_t, writing: Bool) {
        self.disk = disk
        self.vectors = vectors
        self.position = position
        self.writing = writing
    }

    mutating func add(_ base: UnsafeMutableRawPointer, _ length: Int) {
        if count == vectors.count { flush() }
        vectors[count] = iovec(iov_base: base, iov_len: length)
        count += 1
        bytes += length
    }

    /// Moves what was gathered; a short transfer (the file ended) or an error fails the request.
    mutating func flush() {
        guard count > 0 else { return }
        if ok, let base = vectors.baseAddress {
            let moved = writing ? pwritev(disk, base, CInt(count), position) : preadv(disk, base, CInt(count), position)
            ok = moved == bytes
        }
        position += off_t(bytes)
        count = 0
        bytes = 0
    }

    /// Moves the rest and says whether every byte moved.
    mutating func finish() -> Bool {
        flush()
        return ok
    }
}

/// A block device set-up error.
public struct BlockDeviceError: Error, Hashable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
