/// Feature bits negotiated between driver and device, numbered as in virtio 1.x.
///
/// The region's creator writes the negotiated set into the region header; each queue reads it
/// from there, so both sides agree. Use ``negotiate(offered:wanted:)`` to compute it.
public struct Features: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// VIRTIO_F_INDIRECT_DESC (bit 28): a descriptor may point at a table of descriptors.
    public static let indirectDescriptors = Features(rawValue: 1 << 28)
    /// VIRTIO_F_EVENT_IDX (bit 29): `used_event` / `avail_event` replace the flag-based
    /// notification suppression.
    public static let eventIndex = Features(rawValue: 1 << 29)
    /// VIRTIO_F_VERSION_1 (bit 32): virtio 1.x semantics, little-endian ring. Always set.
    public static let version1 = Features(rawValue: 1 << 32)

    /// Every feature this implementation understands.
    public static let all: Features = [.indirectDescriptors, .eventIndex, .version1]

    /// The features both sides accept: those the device offers and the driver wants, plus
    /// ``version1``, which is mandatory.
    public static func negotiate(offered: Features, wanted: Features) -> Features {
        offered.intersection(wanted).intersection(.all).union(.version1)
    }

    public var description: String {
        var names: [String] = []
        if contains(.indirectDescriptors) { names.append("INDIRECT_DESC") }
        if contains(.eventIndex) { names.append("EVENT_IDX") }
        if contains(.version1) { names.append("VERSION_1") }
        let unknown = subtracting(.all)
        if !unknown.isEmpty { names.append("unknown(0x\(String(unknown.rawValue, radix: 16)))") }
        return "[" + names.joined(separator: ", ") + "]"
    }
}
