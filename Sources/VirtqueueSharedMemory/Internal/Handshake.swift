import Virtqueue

/// The two messages of the socket attach handshake (`docs/wire-format.md`, "Socket attach").
///
/// The creator sends an ``Offer`` with two descriptors; the receiver answers with an ``Answer``,
/// which carries one descriptor when it accepts. Both are little-endian, fixed-size, and sent as
/// one `SOCK_SEQPACKET` message each.
enum Handshake {
    /// Version 2: notification sockets, each made by the side that waits on it (version 1 passed
    /// two eventfds the creator made).
    static let version: UInt16 = 2
    /// The descriptors an offer carries: the region file, and the notify end of the channel the
    /// creator waits on.
    static let descriptorCount = 2
    /// The descriptors an accepting answer carries: the notify end of the channel the receiver
    /// waits on.
    static let answerDescriptorCount = 1

    /// What the creator sends.
    struct Offer: Equatable {
        /// ASCII `SWIFTVQO`.
        static let magic: UInt64 = 0x4F51_5654_4649_5753
        static let byteCount = 64

        var receiverRole: SharedMemoryConnection.Role
        var queueIndex: UInt16
        var features: Features
        var regionByteCount: UInt64

        func encoded() -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: Self.byteCount)
            bytes.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: Self.magic.littleEndian, toByteOffset: 0x00, as: UInt64.self)
                raw.storeBytes(of: Handshake.version.littleEndian, toByteOffset: 0x08, as: UInt16.self)
                raw.storeBytes(of: UInt16(Self.byteCount).littleEndian, toByteOffset: 0x0A, as: UInt16.self)
                raw.storeBytes(of: receiverRole.rawValue.littleEndian, toByteOffset: 0x0C, as: UInt16.self)
                raw.storeBytes(of: queueIndex.littleEndian, toByteOffset: 0x0E, as: UInt16.self)
                raw.storeBytes(of: features.rawValue.littleEndian, toByteOffset: 0x10, as: UInt64.self)
                raw.storeBytes(of: regionByteCount.littleEndian, toByteOffset: 0x18, as: UInt64.self)
                raw.storeBytes(
                    of: UInt32(Handshake.descriptorCount).littleEndian,
                    toByteOffset: 0x20,
                    as: UInt32.self
                )
            }
            return bytes
        }

        /// Parses and validates an offer; the descriptor count is checked by the caller.
        init(parsing bytes: UnsafeRawBufferPointer) throws(SharedMemoryError) {
            func bad(_ text: String) -> SharedMemoryError { SharedMemoryError(.handshakeMalformed, text) }
            guard bytes.count == Self.byteCount else {
                throw bad("the offer has \(bytes.count) bytes, not \(Self.byteCount)")
            }
            let magic = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x00, as: UInt64.self))
            guard magic == Self.magic else {
                throw bad("offer magic 0x\(String(magic, radix: 16)) is not 0x\(String(Self.magic, radix: 16))")
            }
            let version = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x08, as: UInt16.self))
            guard version == Handshake.version else {
                throw bad("offer version \(version) is not \(Handshake.version)")
            }
            let length = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x0A, as: UInt16.self))
            guard length == Self.byteCount else { throw bad("offer length field \(length) is not \(Self.byteCount)") }
            let role = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x0C, as: UInt16.self))
            guard let receiverRole = SharedMemoryConnection.Role(rawValue: role) else {
                throw bad("offer role \(role) is neither 1 (device) nor 2 (driver)")
            }
            let count = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x20, as: UInt32.self))
            guard count == UInt32(Handshake.descriptorCount) else {
                throw SharedMemoryError(
                    .handshakeFileDescriptors,
                    "the offer announces \(count) descriptors, not \(Handshake.descriptorCount)"
                )
            }
            for offset in 0x24..<Self.byteCount where bytes[offset] != 0 {
                throw bad("reserved offer byte 0x\(String(offset, radix: 16)) is \(bytes[offset]), not 0")
            }
            self.receiverRole = receiverRole
            self.queueIndex = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x0E, as: UInt16.self))
            self.features = Features(
                rawValue: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x10, as: UInt64.self))
            )
            self.regionByteCount = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x18, as: UInt64.self))
        }

        init(receiverRole: SharedMemoryConnection.Role, queueIndex: UInt16, features: Features, regionByteCount: UInt64)
        {
            self.receiverRole = receiverRole
            self.queueIndex = queueIndex
            self.features = features
            self.regionByteCount = regionByteCount
        }
    }

    /// What the receiver answers.
    struct Answer: Equatable {
        /// ASCII `SWIFTVQA`.
        static let magic: UInt64 = 0x4151_5654_4649_5753
        static let byteCount = 16

        var status: Status

        /// The receiver's verdict on an offer.
        struct Status: RawRepresentable, Hashable {
            var rawValue: UInt16
            static let attached = Status(rawValue: 0)
            static let malformed = Status(rawValue: 1)
            static let wrongDescriptors = Status(rawValue: 2)
            static let regionRefused = Status(rawValue: 3)
            static let invalidHeader = Status(rawValue: 4)
            static let unsupported = Status(rawValue: 5)

            var name: String {
                switch self {
                case .attached: "attached"
                case .malformed: "malformed offer"
                case .wrongDescriptors: "wrong descriptors"
                case .regionRefused: "region refused (seals or size)"
                case .invalidHeader: "invalid region header"
                case .unsupported: "unsupported role, queue or features"
                default: "status \(rawValue)"
                }
            }

            /// The status that reports `error` to the creator.
            init(for error: SharedMemoryError) {
                switch error.code {
                case .handshakeFileDescriptors: self = .wrongDescriptors
                case .regionNotSealed, .regionTooSmall: self = .regionRefused
                case .invalidHeader: self = .invalidHeader
                case .invalidArgument: self = .unsupported
                default: self = .malformed
                }
            }

            init(rawValue: UInt16) { self.rawValue = rawValue }
        }

        func encoded() -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: Self.byteCount)
            bytes.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: Self.magic.littleEndian, toByteOffset: 0x00, as: UInt64.self)
                raw.storeBytes(of: Handshake.version.littleEndian, toByteOffset: 0x08, as: UInt16.self)
                raw.storeBytes(of: status.rawValue.littleEndian, toByteOffset: 0x0A, as: UInt16.self)
            }
            return bytes
        }

        init(status: Status) { self.status = status }

        init(parsing bytes: UnsafeRawBufferPointer) throws(SharedMemoryError) {
            func bad(_ text: String) -> SharedMemoryError { SharedMemoryError(.handshakeMalformed, text) }
            guard bytes.count == Self.byteCount else {
                throw bad("the answer has \(bytes.count) bytes, not \(Self.byteCount)")
            }
            let magic = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x00, as: UInt64.self))
            guard magic == Self.magic else {
                throw bad("answer magic 0x\(String(magic, radix: 16)) is not 0x\(String(Self.magic, radix: 16))")
            }
            let version = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x08, as: UInt16.self))
            guard version == Handshake.version else {
                throw bad("answer version \(version) is not \(Handshake.version)")
            }
            for offset in 0x0C..<Self.byteCount where bytes[offset] != 0 {
                throw bad("reserved answer byte 0x\(String(offset, radix: 16)) is \(bytes[offset]), not 0")
            }
            status = Status(rawValue: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0x0A, as: UInt16.self)))
        }
    }
}
