/// The 12-byte header of every vhost-user message: `{u32 request, u32 flags, u32 size}`,
/// little-endian, followed by `size` bytes of payload.
public struct VhostUserHeader: Hashable, Sendable, CustomStringConvertible {
    /// The header's size on the wire.
    public static let size = 12

    /// The request type (a reply carries the number of the request it answers).
    public var request: VhostUserRequest
    /// The flags: version, REPLY, NEED_REPLY.
    public var flags: Flags
    /// The payload's size in bytes.
    public var payloadSize: UInt32

    /// A header.
    public init(request: VhostUserRequest, flags: Flags, payloadSize: UInt32) {
        self.request = request
        self.flags = flags
        self.payloadSize = payloadSize
    }

    /// The `flags` word of a header.
    public struct Flags: OptionSet, Hashable, Sendable {
        public var rawValue: UInt32

        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// Version 1 in bits 0–1, the only version there is.
        public static let version1 = Flags(rawValue: 0x1)
        /// Bit 2: this message is a reply (back-end to front-end on the main socket).
        public static let reply = Flags(rawValue: 0x4)
        /// Bit 3: the sender wants a reply even where the request has none (REPLY_ACK).
        public static let needReply = Flags(rawValue: 0x8)

        /// Bits 0–1.
        public static let versionMask: UInt32 = 0x3
        /// Every bit the protocol defines (0–3).
        public static let definedMask: UInt32 = 0xF
    }

    /// Whether the sender set NEED_REPLY.
    public var needsReply: Bool { flags.contains(.needReply) }

    /// Whether this is a reply.
    public var isReply: Bool { flags.contains(.reply) }

    public var description: String {
        "\(request) flags 0x\(String(flags.rawValue, radix: 16)) size \(payloadSize)"
    }

    /// The header's 12 bytes.
    public var bytes: [UInt8] {
        var writer = ByteWriter()
        writer.append(request.rawValue)
        writer.append(flags.rawValue)
        writer.append(payloadSize)
        return writer.bytes
    }

    /// Reads and validates a header from the first 12 bytes of `bytes`.
    ///
    /// Checks, in order: at least 12 bytes; version bits equal to 1; no flag bit above bit 3;
    /// REPLY set for a reply and clear for a request; NEED_REPLY clear on a reply; `size` at most
    /// `limits.maxPayloadSize`. The payload is not looked at.
    ///
    /// - Parameters:
    ///   - bytes: The received bytes; only the first 12 are read.
    ///   - isReply: Whether a reply is expected (a front-end reading the back-end's answer) rather
    ///     than a request.
    ///   - limits: The bounds.
    /// - Throws: ``VhostUserError`` naming the offending value.
    public static func decode(
        _ bytes: some Collection<UInt8>,
        isReply: Bool = false,
        limits: VhostUserLimits = VhostUserLimits()
    ) throws(VhostUserError) -> VhostUserHeader {
        guard bytes.count >= size else {
            throw VhostUserError(.truncatedHeader, "a header needs 12 bytes; \(bytes.count) arrived")
        }
        var reader = ByteReader(Array(bytes.prefix(size)))
        let request = VhostUserRequest(rawValue: reader.u32())
        let flags = reader.u32()
        let payloadSize = reader.u32()
        guard flags & Flags.versionMask == Flags.version1.rawValue else {
            throw VhostUserError(
                .unsupportedVersion,
                "\(request): version \(flags & Flags.versionMask) in flags 0x\(String(flags, radix: 16)); only 1 exists"
            )
        }
        guard flags & ~Flags.definedMask == 0 else {
            throw VhostUserError(
                .invalidFlags,
                "\(request): reserved flag bits 0x\(String(flags & ~Flags.definedMask, radix: 16)) are set"
            )
        }
        let parsed = Flags(rawValue: flags)
        if isReply {
            guard parsed.contains(.reply), !parsed.contains(.needReply) else {
                throw VhostUserError(
                    .invalidFlags,
                    "\(request): a reply needs REPLY and no NEED_REPLY; flags are 0x\(String(flags, radix: 16))"
                )
            }
        } else {
            guard !parsed.contains(.reply) else {
                throw VhostUserError(.invalidFlags, "\(request): a request has the REPLY flag set")
            }
        }
        guard Int(payloadSize) <= limits.maxPayloadSize else {
            throw VhostUserError(
                .payloadTooLarge,
                "\(request): payload size \(payloadSize) is above the bound of \(limits.maxPayloadSize) bytes"
            )
        }
        return VhostUserHeader(request: request, flags: parsed, payloadSize: payloadSize)
    }
}
