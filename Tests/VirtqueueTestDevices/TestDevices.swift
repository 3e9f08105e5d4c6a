import Glibc
public import Virtqueue
import VirtqueueConformance

/// The devices the test device host can run, by name.
public enum TestDevices {
    /// Every device type of this module.
    public static let all: [any DeviceComponent.Type] = [
        SerialDevice.self, EchoDevice.self, ChecksumDevice.self, TruncatingDevice.self, FailingDevice.self,
        DescriptorListingDevice.self, ConfiguredDevice.self, ForbiddenCallDevice.self,
        ConformanceDevice.self, NotifierTrapDevice.self, GreetingDevice.self, PrintingDevice.self,
        QueueTagDevice.self,
    ]
}

/// A hostile device for the notification tests (docs/wire-format.md section 7, "What a peer may
/// do"), for a device process started by the shared-memory launcher: on its first request it
/// clears `O_NONBLOCK` on the kick, call and liveness descriptors it inherited (4, 5, 6), floods
/// the driver's wait end through the call socket until that is full, and then stops for good: it
/// never receives another kick and never completes the request. Only killing it ends it.
public struct NotifierTrapDevice: DeviceComponent {
    public static let name = "notifier-trap"

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        for fd: CInt in [4, 5, 6] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) }
        var byte: UInt8 = 1
        while send(5, &byte, 1, CInt(MSG_DONTWAIT) | CInt(MSG_NOSIGNAL)) == 1 {}
        while true { pause() }
    }
}

/// The seed's serial port: answers with "serial wrote N bytes: TEXT".
public struct SerialDevice: DeviceComponent {
    public static let name = "serial"

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var text: [UInt8] = []
        try queue.forEachReadable(in: request) { bytes in text += bytes }
        let reply = Array("serial wrote \(text.count) bytes: ".utf8) + text
        return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

/// Copies the readable bytes into the writable segments.
public struct EchoDevice: DeviceComponent {
    public static let name = "echo"

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var bytes = [UInt8](repeating: 0, count: request.readableByteCount)
        _ = try bytes.withUnsafeMutableBytes { try queue.gather(request, into: $0) }
        return try bytes.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

/// Answers each request with the 64-bit FNV-1a checksum of its readable bytes, little-endian.
public struct ChecksumDevice: DeviceComponent {
    public static let name = "checksum"

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var hash = FNV1a()
        try queue.forEachReadable(in: request) { hash.combine($0) }
        return try withUnsafeBytes(of: hash.value.littleEndian) { try queue.scatter($0, into: request) }
    }
}

/// 64-bit FNV-1a.
public struct FNV1a {
    /// The hash so far.
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    /// Mixes `bytes` into the hash.
    public mutating func combine(_ bytes: UnsafeRawBufferPointer) {
        var hash = value
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        value = hash
    }
}

/// A hostile device: on each request it tries to shrink and to grow the region file it
/// inherited (descriptor 3) and answers with the two errno values (0 if the call succeeded),
/// as little-endian Int32s.
public struct TruncatingDevice: DeviceComponent {
    public static let name = "truncate"

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        let shrink = ftruncate(3, 0) == 0 ? 0 : errno
        let grow = ftruncate(3, 1 << 30) == 0 ? 0 : errno
        let reply = [shrink.littleEndian, grow.littleEndian]
        return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

/// Throws on the first request: the host must exit with its device-failed code.
public struct FailingDevice: DeviceComponent {
    public static let name = "failing"

    struct Failure: Error {}

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        throw Failure()
    }
}

/// Answers with the numbers of its open descriptors, ascending and comma-separated: what a
/// device process inherited.
public struct DescriptorListingDevice: DeviceComponent {
    public static let name = "descriptors"

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var numbers: [Int32] = []
        if let directory = opendir("/proc/self/fd") {
            let own = dirfd(directory)
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if let fd = Int32(name), fd != own { numbers.append(fd) }
            }
            closedir(directory)
        }
        let reply = Array(numbers.sorted().map(String.init).joined(separator: ",").utf8)
        return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

/// Answers with its configuration: the arguments, then what its first descriptor holds, all
/// joined by `|`. Created through ``init(configuration:)``, which reads that descriptor.
public struct ConfiguredDevice: DeviceComponent {
    public static let name = "configured"

    let summary: [UInt8]

    public init(configuration: DeviceConfiguration) throws {
        var parts = configuration.arguments
        if let fd = configuration.fileDescriptors.first {
            var bytes = [UInt8](repeating: 0, count: 64)
            let count = pread(fd, &bytes, bytes.count, 0)
            parts.append("fd \(fd): " + String(decoding: bytes.prefix(max(count, 0)), as: UTF8.self))
        }
        summary = Array(parts.joined(separator: "|").utf8)
    }

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        try summary.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

/// Answers every request with the greeting its configuration names (`greeting=TEXT`). Its factory
/// refuses a configuration without one, so launching it without a greeting fails at every level.
public struct GreetingDevice: DeviceComponent {
    public static let name = "greeting"

    let greeting: [UInt8]

    /// - Throws: ``ConfigurationRefused`` when no argument is `greeting=TEXT`.
    public init(configuration: DeviceConfiguration) throws(ConfigurationRefused) {
        guard let argument = configuration.arguments.first(where: { $0.hasPrefix("greeting=") }) else {
            throw ConfigurationRefused(arguments: configuration.arguments)
        }
        greeting = Array(argument.dropFirst("greeting=".count).utf8)
    }

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        try greeting.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

/// What ``GreetingDevice`` throws for a configuration without a greeting.
public struct ConfigurationRefused: Error, Hashable, CustomStringConvertible {
    /// The arguments it was given.
    public var arguments: [String]

    public init(arguments: [String]) {
        self.arguments = arguments
    }

    public var description: String { "the greeting device needs greeting=TEXT, got \(arguments)" }
}

/// Prints each request's text with `print`, then echoes it. Harmless on a thread or in a plain
/// child process; under the default sandbox policy the first `print` kills it (the C library
/// asks the kernel about standard output first: `newfstatat`), which is what a newcomer's
/// debugging `print` does.
public struct PrintingDevice: DeviceComponent {
    public static let name = "printing"

    public init(configuration: DeviceConfiguration) {}

    public mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var bytes = [UInt8](repeating: 0, count: request.readableByteCount)
        _ = try bytes.withUnsafeMutableBytes { try queue.gather(request, into: $0) }
        print("printing device: \(String(decoding: bytes, as: UTF8.self))")
        return try bytes.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}
