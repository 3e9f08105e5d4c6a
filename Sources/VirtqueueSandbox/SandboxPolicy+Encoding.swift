extension SandboxPolicy {
    /// The policy as one command-line argument, so a launcher can hand it to the device child:
    /// rules separated by `;`, each `name`, `name@fd=role,role`, `name@noexec=N`,
    /// `name@flags=N:HEXMASK`, `name@ne=N:HEXVALUE` or `name@errno=E`.
    public var argumentEncoding: String {
        rules.map { rule in
            switch rule.condition {
            case .always:
                rule.systemCall
            case .onFileDescriptors(let roles):
                rule.systemCall + "@fd=" + roles.map(\.description).sorted().joined(separator: ",")
            case .withoutExecute(let argument):
                rule.systemCall + "@noexec=\(argument)"
            case .withFlags(let argument, let mask):
                rule.systemCall + "@flags=\(argument):\(String(mask, radix: 16))"
            case .unlessArgument(let argument, let value):
                rule.systemCall + "@ne=\(argument):\(String(value, radix: 16))"
            case .failsWith(let error):
                rule.systemCall + "@errno=\(error)"
            }
        }
        .joined(separator: ";")
    }

    /// A stable 64-bit digest of ``argumentEncoding`` (FNV-1a over its UTF-8 bytes): the same
    /// policy has the same digest in every process and on every run.
    ///
    /// A sandboxed child reports the digest of the policy it loaded, and the launcher compares it
    /// with the digest of the policy it sent. It names a policy; it is not a cryptographic
    /// commitment.
    public var digest: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in argumentEncoding.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// Decodes ``argumentEncoding``; `nil` if the text is malformed.
    public init?(argumentEncoding text: String) {
        var rules: [Rule] = []
        for item in text.split(separator: ";", omittingEmptySubsequences: true) {
            let parts = item.split(separator: "@", maxSplits: 1).map(String.init)
            guard let name = parts.first, !name.isEmpty,
                name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" })
            else { return nil }
            guard parts.count == 2 else {
                rules.append(Rule(name))
                continue
            }
            let condition = parts[1]
            if condition.hasPrefix("fd=") {
                var roles: Set<FileDescriptorRole> = []
                for roleName in condition.dropFirst(3).split(separator: ",") {
                    guard let role = FileDescriptorRole(name: String(roleName)) else { return nil }
                    roles.insert(role)
                }
                rules.append(Rule(name, .onFileDescriptors(roles)))
            } else if condition.hasPrefix("noexec="), let argument = Int(condition.dropFirst(7)),
                (0...5).contains(argument)
            {
                rules.append(Rule(name, .withoutExecute(argument: argument)))
            } else if condition.hasPrefix("flags=") {
                let fields = condition.dropFirst(6).split(separator: ":")
                guard fields.count == 2, let argument = Int(fields[0]), (0...5).contains(argument),
                    let mask = UInt64(fields[1], radix: 16), mask != 0
                else { return nil }
                rules.append(Rule(name, .withFlags(argument: argument, mask: mask)))
            } else if condition.hasPrefix("ne=") {
                let fields = condition.dropFirst(3).split(separator: ":")
                guard fields.count == 2, let argument = Int(fields[0]), (0...5).contains(argument),
                    let value = UInt64(fields[1], radix: 16)
                else { return nil }
                rules.append(Rule(name, .unlessArgument(argument, equals: value)))
            } else if condition.hasPrefix("errno="), let error = Int32(condition.dropFirst(6)),
                (1...4095).contains(error)
            {
                rules.append(Rule(name, .failsWith(errno: error)))
            } else {
                return nil
            }
        }
        self.init(rules: rules)
    }
}

extension SandboxPolicy.FileDescriptorRole {
    init?(name: String) {
        switch name {
        case "kick": self = .kick
        case "call": self = .call
        case "liveness": self = .liveness
        case "report": self = .report
        case "stdout": self = .standardOutput
        case "stderr": self = .standardError
        default:
            guard name.hasPrefix("device"), let index = Int(name.dropFirst(6)), index >= 0 else { return nil }
            self = .device(index)
        }
    }
}
