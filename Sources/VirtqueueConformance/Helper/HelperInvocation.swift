/// What the suite tells its helper process on the command line, and how the helper reads it.
///
/// `VirtqueueConformanceHelper ROLE --parent PID --buffer-size N --map FD:OFFSET:BUS:COUNT …
/// --notify FD --wait FD --kick HEX`, with the helper's own descriptor numbers. Package API: the
/// suite and the helper executable are its only users.
package struct HelperInvocation: Hashable, Sendable {
    /// The side the helper plays.
    package var role: QueueSide
    /// The suite's process: the helper exits if its parent is not this one any more.
    package var parent: Int32
    /// The driver's pool buffer size, when the helper is the driver.
    package var bufferSize: Int
    /// The memory, with the helper's descriptor numbers.
    package var mappings: [PortableMapping]
    /// The notifier, with the helper's descriptor numbers.
    package var notifier: PortableNotifier

    package init(
        role: QueueSide,
        parent: Int32,
        bufferSize: Int,
        mappings: [PortableMapping],
        notifier: PortableNotifier
    ) {
        self.role = role
        self.parent = parent
        self.bufferSize = bufferSize
        self.mappings = mappings
        self.notifier = notifier
    }

    /// The command-line arguments after the executable's path.
    package var arguments: [String] {
        var arguments = [role.rawValue, "--parent", "\(parent)", "--buffer-size", "\(bufferSize)"]
        for mapping in mappings {
            arguments += [
                "--map", "\(mapping.descriptor):\(mapping.offset):\(mapping.busAddress):\(mapping.byteCount)",
            ]
        }
        arguments += ["--notify", "\(notifier.notifyDescriptor)", "--wait", "\(notifier.waitDescriptor)"]
        arguments += ["--kick", notifier.kickMessage.map { String($0, radix: 16).leftPadded(to: 2) }.joined()]
        return arguments
    }

    /// Reads the arguments after the executable's path.
    ///
    /// - Throws: ``HelperError`` naming the argument that is missing or malformed.
    package init(parsing arguments: some Collection<String>) throws(HelperError) {
        var rest = arguments[...]
        guard let roleName = rest.popFirst(), let role = QueueSide(rawValue: roleName) else {
            throw HelperError(
                "the first argument must be the role, driver or device; got \(Array(arguments.prefix(1)))"
            )
        }
        var parent: Int32?
        var bufferSize: Int?
        var mappings: [PortableMapping] = []
        var notify: CInt?
        var wait: CInt?
        var kick: [UInt8]?
        while let option = rest.popFirst() {
            guard let value = rest.popFirst() else { throw HelperError("option \(option) has no value") }
            switch option {
            case "--parent": parent = Int32(value)
            case "--buffer-size": bufferSize = Int(value)
            case "--notify": notify = CInt(value)
            case "--wait": wait = CInt(value)
            case "--kick": kick = Self.bytes(hex: value)
            case "--map":
                let fields = value.split(separator: ":").map(String.init)
                guard fields.count == 4, let descriptor = CInt(fields[0]), let offset = Int(fields[1]),
                    let bus = UInt64(fields[2]), let count = Int(fields[3])
                else { throw HelperError("--map \(value) is not DESCRIPTOR:OFFSET:BUS-ADDRESS:BYTE-COUNT") }
                mappings.append(
                    PortableMapping(descriptor: descriptor, offset: offset, busAddress: bus, byteCount: count)
                )
            default: throw HelperError("unknown option \(option)")
            }
        }
        guard let parent else { throw HelperError("--parent is missing or not a process id") }
        guard let bufferSize, bufferSize > 0 else { throw HelperError("--buffer-size is missing or not positive") }
        guard !mappings.isEmpty else { throw HelperError("no --map") }
        guard let notify, let wait else { throw HelperError("--notify or --wait is missing or not a descriptor") }
        guard let kick, (1...64).contains(kick.count) else {
            throw HelperError("--kick is missing or not 1 to 64 hex bytes")
        }
        self.init(
            role: role,
            parent: parent,
            bufferSize: bufferSize,
            mappings: mappings,
            notifier: PortableNotifier(notifyDescriptor: notify, waitDescriptor: wait, kickMessage: kick)
        )
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count.isMultiple(of: 2) else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else {
                return nil
            }
            bytes.append(byte)
        }
        return bytes
    }
}

/// The helper could not do what it was asked: a malformed command line, memory it cannot map.
package struct HelperError: Error, Hashable, Sendable, CustomStringConvertible {
    package var message: String

    package init(_ message: String) {
        self.message = message
    }

    package var description: String { message }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
