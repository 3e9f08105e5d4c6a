import VirtqueueVhostUser

/// Fuzz target (d): the vhost-user message decoder, fed a hostile front-end's bytes.
///
/// The input's first byte picks the limits (queue count 1 to 8, config space 0, 16, 60 or 256
/// bytes), the second the number of file descriptors that came with the message (0 to 9), and
/// the rest is the message: header and payload, as it would arrive on the socket. The decoder
/// runs on plain bytes with placeholder descriptors (``VhostUserFrame/decodeRequest(bytes:fileDescriptorCount:limits:)``).
///
/// Invariants, beyond "never traps" (libFuzzer and ASan watch that):
/// - a message the decoder accepts keeps at most the descriptors that came with it;
/// - it re-encodes to a message of at most the payload bound, which decodes again, under the
///   same limits and with the descriptors the encoding carries, to a message that encodes to the
///   same bytes (decoding and encoding agree: nothing the decoder accepted is lost or invented);
/// - every refusal is a typed ``VhostUserError`` (the compiler enforces it) with a message.
public enum VhostUserFuzzer {
    /// Runs one input.
    ///
    /// - Throws: ``InvariantFailure`` naming the broken invariant.
    public static func run(_ input: UnsafeRawBufferPointer) throws(InvariantFailure) {
        guard input.count >= 2 else { return }
        let config = input[0]
        let limits = VhostUserLimits(
            queueCount: 1 + Int(config & 7),
            configSpaceSize: [0, 16, 60, 256][Int(config >> 3) & 3]
        )
        let descriptorCount = Int(input[1]) % 10
        let bytes = Array(input[2...])
        let decoded: VhostUserDecodedRequest
        do {
            decoded = try VhostUserFrame.decodeRequest(
                bytes: bytes,
                fileDescriptorCount: descriptorCount,
                limits: limits
            )
        } catch {
            guard !error.message.isEmpty else { throw InvariantFailure("a refusal without a message: \(error.code)") }
            return
        }
        if case .unsupported = decoded.message { return }
        let first: VhostUserOutgoingMessage
        do {
            first = try decoded.message.encode(needsReply: decoded.needsReply)
        } catch {
            throw InvariantFailure("an accepted \(decoded.header.request) does not encode again: \(error)")
        }
        guard first.fileDescriptors.count <= descriptorCount else {
            throw InvariantFailure(
                "\(decoded.header.request) with \(descriptorCount) descriptors re-encodes with \(first.fileDescriptors.count)"
            )
        }
        guard first.bytes.count <= 12 + limits.maxPayloadSize else {
            throw InvariantFailure("\(decoded.header.request) re-encodes to \(first.bytes.count) bytes")
        }
        let again: VhostUserDecodedRequest
        do {
            again = try VhostUserFrame.decodeRequest(
                bytes: first.bytes,
                fileDescriptorCount: first.fileDescriptors.count,
                limits: limits
            )
        } catch {
            throw InvariantFailure("the re-encoding of an accepted \(decoded.header.request) is refused: \(error)")
        }
        let second: VhostUserOutgoingMessage
        do {
            second = try again.message.encode(needsReply: again.needsReply)
        } catch {
            throw InvariantFailure("a decoded re-encoding does not encode: \(error)")
        }
        guard second.bytes == first.bytes, second.fileDescriptors.count == first.fileDescriptors.count else {
            throw InvariantFailure(
                "\(decoded.header.request): decoding and encoding disagree (\(first.bytes) then \(second.bytes))"
            )
        }
    }
}

extension FuzzSeeds {
    /// Seeds for ``VhostUserFuzzer``: one well-formed message of each kind the decoder handles,
    /// as QEMU sends them, with the limits byte and descriptor count in front.
    public static func vhostUser() -> [Seed] {
        func message(_ request: UInt32, flags: UInt32 = 1, _ payload: [UInt8]) -> [UInt8] {
            le(request) + le(flags) + le(UInt32(payload.count)) + payload
        }
        func seed(_ name: String, limits: UInt8 = 0x1B, descriptors: UInt8 = 0, _ bytes: [UInt8]) -> Seed {
            (name, [limits, descriptors] + bytes)
        }
        let region = le(UInt64(0)) + le(UInt64(0x1000_0000)) + le(UInt64(0x7f00_0000_0000)) + le(UInt64(0))
        let second = le(UInt64(0x1_0000_0000)) + le(UInt64(0x1000_0000)) + le(UInt64(0x7f10_0000_0000)) + le(UInt64(0))
        return [
            seed("get-features", message(1, [])),
            seed("set-features", message(2, le(UInt64(1 << 32 | 1 << 30 | 1 << 29 | 1 << 28)))),
            seed("set-owner", message(3, [])),
            seed("set-mem-table", descriptors: 2, message(5, le(UInt32(2)) + le(UInt32(0)) + region + second)),
            seed("set-vring-num", message(8, le(UInt32(0)) + le(UInt32(256)))),
            seed(
                "set-vring-addr",
                message(
                    9,
                    le(UInt32(1)) + le(UInt32(0)) + le(UInt64(0x7f00_0000_1000)) + le(UInt64(0x7f00_0000_3000))
                        + le(UInt64(0x7f00_0000_2000)) + le(UInt64(0))
                )
            ),
            seed("set-vring-base", message(10, le(UInt32(0)) + le(UInt32(17)))),
            seed("get-vring-base-need-reply", message(11, flags: 1 | 8, le(UInt32(1)) + le(UInt32(0)))),
            seed("set-vring-kick", descriptors: 1, message(12, le(UInt64(1)))),
            seed("set-vring-call-no-fd", message(13, le(UInt64(0x100)))),
            seed("set-protocol-features", message(16, le(UInt64(1 << 0 | 1 << 3 | 1 << 9 | 1 << 15)))),
            seed("set-vring-enable", message(18, le(UInt32(0)) + le(UInt32(1)))),
            seed(
                "get-config",
                message(24, le(UInt32(0)) + le(UInt32(60)) + le(UInt32(0)) + [UInt8](repeating: 0, count: 60))
            ),
            seed("set-config", message(25, le(UInt32(20)) + le(UInt32(4)) + le(UInt32(0)) + [1, 2, 3, 4])),
            seed(
                "get-inflight-fd",
                message(31, le(UInt64(0)) + le(UInt64(0)) + le(UInt16(2)) + le(UInt16(256)) + [0, 0, 0, 0])
            ),
            seed("get-max-mem-slots", message(36, [])),
            seed("add-mem-reg", descriptors: 1, message(37, le(UInt64(0)) + region)),
            seed("rem-mem-reg", message(38, le(UInt64(0)) + region)),
            seed("unsupported-iotlb", message(22, [UInt8](repeating: 0, count: 64))),
        ]
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }
}
