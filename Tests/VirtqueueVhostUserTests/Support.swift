import CVirtqueueSystem
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueVhostUser

/// The suites of this target run one at a time: the descriptor-accounting tests count the copies
/// of their own files in /proc/self/fd.
@Suite(.serialized) enum VhostUserTests {}

extension VhostUserLimits {
    /// Two queues and a 60-byte config space (about a virtio-blk config).
    static let test = VhostUserLimits(queueCount: 2, configSpaceSize: 60)
}

/// Little-endian bytes of each value, in order.
func le(_ values: any FixedWidthInteger...) -> [UInt8] {
    var bytes: [UInt8] = []
    for value in values {
        let width = value.bitWidth / 8
        let wide = UInt64(truncatingIfNeeded: value)
        for index in 0..<width { bytes.append(UInt8(truncatingIfNeeded: wide >> (8 * UInt64(index)))) }
    }
    return bytes
}

/// A raw message: header (`size` defaults to the payload's) and payload.
func raw(_ request: UInt32, flags: UInt32 = 1, size: UInt32? = nil, _ payload: [UInt8] = []) -> [UInt8] {
    le(request, flags, size ?? UInt32(payload.count)) + payload
}

/// A raw message for a known request.
func raw(_ request: VhostUserRequest, flags: UInt32 = 1, size: UInt32? = nil, _ payload: [UInt8] = []) -> [UInt8] {
    raw(request.rawValue, flags: flags, size: size, payload)
}

/// A region description's 32 bytes.
func regionBytes(_ guest: UInt64, _ size: UInt64, _ user: UInt64, _ offset: UInt64 = 0) -> [UInt8] {
    le(guest, size, user, offset)
}

/// A SET_MEM_TABLE payload.
func memoryTablePayload(_ regions: [[UInt8]], count: UInt32? = nil) -> [UInt8] {
    le(count ?? UInt32(regions.count), UInt32(0)) + regions.flatMap { $0 }
}

/// Decodes `bytes` as a request with `fds` placeholder descriptors and expects the refusal `code`.
func expectRefused(
    _ code: VhostUserError.Code,
    _ bytes: [UInt8],
    fds: Int = 0,
    limits: VhostUserLimits = .test,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    do {
        let decoded = try VhostUserFrame.decodeRequest(bytes: bytes, fileDescriptorCount: fds, limits: limits)
        Issue.record("accepted \(decoded.message); expected \(code)", sourceLocation: sourceLocation)
    } catch {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        #expect(error.isPeerViolation, sourceLocation: sourceLocation)
    }
}

/// Decodes `bytes` as a request with `fds` placeholder descriptors, which must be accepted.
func accepted(
    _ bytes: [UInt8],
    fds: Int = 0,
    limits: VhostUserLimits = .test,
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> VhostUserMessage {
    try VhostUserFrame.decodeRequest(bytes: bytes, fileDescriptorCount: fds, limits: limits).message
}

/// Encodes `message`, decodes the bytes back with as many placeholder descriptors as it carries.
func roundTrip(_ message: VhostUserMessage, needsReply: Bool = false) throws -> VhostUserDecodedRequest {
    let encoded = try message.encode(needsReply: needsReply)
    return try VhostUserFrame.decodeRequest(
        bytes: encoded.bytes,
        fileDescriptorCount: encoded.fileDescriptors.count,
        limits: .test
    )
}

// MARK: Descriptors

/// A new memfd with a unique name, so its copies can be counted in /proc/self/fd.
func makeMemfd(size: Int = 4096) throws -> FileDescriptor {
    let name = "vhost-user-test-\(UInt64.random(in: 0...UInt64.max))"
    let fd = vq_memfd_create(name, VQ_MFD_CLOEXEC)
    guard fd >= 0 else { throw Errno(rawValue: errno) }
    guard ftruncate(fd, off_t(size)) == 0 else { throw Errno(rawValue: errno) }
    return FileDescriptor(rawValue: fd)
}

/// A new eventfd.
func makeEventfd() throws -> FileDescriptor {
    let fd = vq_eventfd()
    guard fd >= 0 else { throw Errno(rawValue: errno) }
    return FileDescriptor(rawValue: fd)
}

/// What /proc/self/fd/N points at.
func linkTarget(_ fd: CInt) -> String? {
    var buffer = [CChar](repeating: 0, count: 512)
    let count = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
    guard count > 0 else { return nil }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// How many descriptors of this process point at `target` (from /proc/self/fd).
func openCopies(of target: String) -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        guard let fd = CInt(name) else { continue }
        if linkTarget(fd) == target { count += 1 }
    }
    return count
}

/// The number of open descriptors of this process.
func openDescriptorCount() -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        if CInt(name) != nil { count += 1 }
    }
    return count - 1  // the directory's own descriptor
}

/// `count` duplicates of `fd`, each owned by a ``VhostUserFileDescriptor``.
func owners(of fd: FileDescriptor, count: Int) throws -> [VhostUserFileDescriptor] {
    try (0..<count).map { _ in VhostUserFileDescriptor(owning: try fd.duplicate()) }
}

/// Sends raw bytes with raw descriptors over `socket` (bypassing the encoder's bounds).
func sendRaw(_ socket: borrowing VhostUserSocket, _ bytes: [UInt8], fds: [CInt] = []) throws {
    let sent = bytes.withUnsafeBytes { buffer in
        fds.withUnsafeBufferPointer { fdBuffer in
            vq_send_with_fds(
                socket.fileDescriptor.rawValue,
                buffer.baseAddress,
                buffer.count,
                fdBuffer.baseAddress,
                CInt(fdBuffer.count)
            )
        }
    }
    guard sent == bytes.count else { throw Errno(rawValue: errno) }
}

/// Half-closes `socket` for writing: the peer reads end of stream after what was sent.
func shutdownWrite(_ socket: borrowing VhostUserSocket) {
    _ = shutdown(socket.fileDescriptor.rawValue, CInt(SHUT_WR))
}

/// The ring formats the tests run each shared behaviour on: the split ring, and the packed ring
/// once the ring core runs it (VIRTIO_F_RING_PACKED in `Features.implementedTransport`; until
/// then the back-end does not offer bit 34 and the packed variants are left out).
enum RingFormats {
    static var running: [RingFormat] {
        Features.implementedTransport.contains(.ringPacked) ? [.split, .packed] : [.split]
    }
}

/// A ring format with or without VIRTIO_F_IN_ORDER (bit 35): what the real-peer tests run each
/// exchange on.
struct RingVariant: Sendable, CustomTestStringConvertible {
    var format: RingFormat
    var inOrder: Bool

    var testDescription: String { "\(format)\(inOrder ? " + IN_ORDER" : "")" }

    /// The transport features the variant acks beyond VERSION_1.
    var features: Features {
        var features: Features = .version1
        if format == .packed { features.insert(.ringPacked) }
        if inOrder { features.insert(.inOrder) }
        return features
    }
}

/// The variants the ring core runs: every format of ``RingFormats/running``, without IN_ORDER and
/// with it where the core runs the pair (``Virtqueue/Features/validateForRing()`` accepts it):
/// both formats since the packed ring's IN_ORDER landed.
enum RingVariants {
    static var running: [RingVariant] {
        RingFormats.running.flatMap { format in
            [false, true].map { RingVariant(format: format, inOrder: $0) }
        }
        .filter { variant in (try? variant.features.validateForRing()) != nil }
    }
}
