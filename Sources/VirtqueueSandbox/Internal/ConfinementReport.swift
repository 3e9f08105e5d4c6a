/// The message a sandboxed child sends on its liveness socket once its seccomp filter is loaded,
/// and before it touches ring memory (`docs/sandbox.md`, "Verifying the confinement").
///
/// 32 bytes, little-endian, one `SOCK_SEQPACKET` message:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0x00 | 8 | magic, ASCII `VQSBCONF` |
/// | 0x08 | 2 | version, 1 |
/// | 0x0A | 2 | length, 32 |
/// | 0x0C | 4 | seccomp mode from `prctl(PR_GET_SECCOMP)` after loading (signed; 2 is filter) |
/// | 0x10 | 8 | ``SandboxPolicy/digest`` of the policy loaded |
/// | 0x18 | 8 | reserved, zero |
struct ConfinementReport: Equatable {
    /// ASCII `VQSBCONF`.
    static let magic: UInt64 = 0x464E_4F43_4253_5156
    static let version: UInt16 = 1
    static let byteCount = 32
    /// `SECCOMP_MODE_FILTER`.
    static let filterMode: Int32 = 2

    /// What `prctl(PR_GET_SECCOMP)` returned in the child after the filter was loaded.
    var seccompMode: Int32
    /// The digest of the policy the child loaded.
    var policyDigest: UInt64

    init(seccompMode: Int32, policyDigest: UInt64) {
        self.seccompMode = seccompMode
        self.policyDigest = policyDigest
    }

    func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.byteCount)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Self.magic.littleEndian, toByteOffset: 0x00, as: UInt64.self)
            raw.storeBytes(of: Self.version.littleEndian, toByteOffset: 0x08, as: UInt16.self)
            raw.storeBytes(of: UInt16(Self.byteCount).littleEndian, toByteOffset: 0x0A, as: UInt16.self)
            raw.storeBytes(of: seccompMode.littleEndian, toByteOffset: 0x0C, as: Int32.self)
            raw.storeBytes(of: policyDigest.littleEndian, toByteOffset: 0x10, as: UInt64.self)
        }
        return bytes
    }

    /// Parses a report from the child's bytes, which are untrusted: `nil` unless they are exactly
    /// one well-formed report.
    init?(parsing bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        let parsed = bytes.withUnsafeBytes { raw -> ConfinementReport? in
            guard UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0x00, as: UInt64.self)) == Self.magic,
                UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 0x08, as: UInt16.self)) == Self.version,
                UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 0x0A, as: UInt16.self)) == Self.byteCount,
                raw[0x18..<Self.byteCount].allSatisfy({ $0 == 0 })
            else { return nil }
            return ConfinementReport(
                seccompMode: Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 0x0C, as: Int32.self)),
                policyDigest: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0x10, as: UInt64.self))
            )
        }
        guard let parsed else { return nil }
        self = parsed
    }
}
