import CVirtqueueSystem
import Dispatch
import Foundation
import Glibc
import Synchronization
import SystemPackage
import Testing
import Virtqueue
import VirtqueueSharedMemory

/// Where the test executables (VirtqueueDeviceHost, VirtqueueCPeer) are: beside the test binary.
enum TestExecutables {
    static var directory: String {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = readlink("/proc/self/exe", &buffer, 4096)
        let path = count > 0 ? String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        var components = path.split(separator: "/", omittingEmptySubsequences: false)
        // …/.build/debug/swift-virtqueuePackageTests.xctest: the executables are in …/.build/debug.
        components.removeLast()
        return components.joined(separator: "/")
    }

    static var deviceHost: FilePath { FilePath(directory + "/VirtqueueDeviceHost") }
    static var cPeer: String { directory + "/VirtqueueCPeer" }

    /// Launch options for the test device host.
    static func options(_ configure: (inout LaunchOptions) -> Void = { _ in }) -> LaunchOptions {
        var options = LaunchOptions()
        options.executable = deviceHost
        options.stopGracePeriod = .seconds(10)
        configure(&options)
        return options
    }
}

/// The open descriptors of this process, by what they refer to (from /proc/self/fd).
func openDescriptors() -> [CInt: String] {
    var result: [CInt: String] = [:]
    guard let directory = opendir("/proc/self/fd") else { return result }
    defer { closedir(directory) }
    let own = dirfd(directory)
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        guard let fd = CInt(name), fd != own else { continue }
        var buffer = [CChar](repeating: 0, count: 256)
        let count = readlink("/proc/self/fd/\(fd)", &buffer, 255)
        result[fd] = count > 0 ? String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }
    return result
}

/// How many descriptors of the kinds this backend creates are open: memfds, eventfds, pidfds,
/// sockets (the notification channels among them) and pipes. Other suites of the test process create none of these.
func backendDescriptorCount() -> Int {
    openDescriptors().values.filter { target in
        target.hasPrefix("/memfd:") || target.hasPrefix("/dev/shm/") || target.hasPrefix("anon_inode:[eventfd]")
            || target.hasPrefix("anon_inode:[pidfd]") || target.hasPrefix("socket:") || target.hasPrefix("pipe:")
    }.count
}

/// Whether `pid` is a child of this process that has not been reaped (a zombie or running):
/// `waitid` fails with ECHILD once it has been.
func isUnreapedChild(_ pid: Int32) -> Bool {
    var info = siginfo_t()
    return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0
}

/// A unique socket path in the temporary directory.
func temporarySocketPath(_ name: String) -> FilePath {
    FilePath("/tmp/vq-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max)).sock")
}

/// FNV-1a of a byte array.
func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
    return hash
}

/// A deterministic payload for buffer number `sequence`: its number, then pseudo-random bytes.
func payload(_ sequence: UInt64, count: Int, into destination: UnsafeMutableRawBufferPointer) {
    var state = sequence &* 0x9E37_79B9_7F4A_7C15 | 1
    for index in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        destination[index] = UInt8(truncatingIfNeeded: state)
    }
    withUnsafeBytes(of: sequence.littleEndian) { raw in
        for index in 0..<min(8, count) { destination[index] = raw[index] }
    }
}

/// A call that did not return within its bound: it would have blocked for ever.
struct DidNotReturn: Error, CustomStringConvertible {
    let what: String
    let bound: Duration
    var description: String { "\(what) did not return within \(bound): it blocks" }
}

/// A value handed over once: the first `take()` gets it, and nothing holds it afterwards.
final class TakeOnce<Value: Sendable>: Sendable {
    let value: Mutex<Value?>

    init(_ value: Value) { self.value = Mutex(value) }

    func take() -> Value? {
        value.withLock { value in
            let taken = value
            value = nil
            return taken
        }
    }
}

/// A value one thread leaves for another.
final class Slot<Value: Sendable>: Sendable {
    let value = Mutex<Value?>(nil)
}

/// Runs `body` on a new thread. The semaphore is signalled once `body` has returned and what it
/// captured has been released, so no descriptor it held closes behind a later test's back.
func startThread(_ body: @escaping @Sendable () -> Void) -> DispatchSemaphore {
    let done = DispatchSemaphore(value: 0)
    let work = TakeOnce(body)
    let thread = Thread {
        work.take()?()
        done.signal()
    }
    thread.start()
    return done
}

/// Runs `body` on a thread of its own and waits for it at most `bound`, so that a call that
/// blocks for ever fails the test instead of hanging the suite (the blocked thread is left
/// behind). The bound only detects a hang; nothing is asserted about how long `body` takes.
///
/// - Returns: What `body` returned.
/// - Throws: ``DidNotReturn`` if `body` did not return in time, or what `body` threw.
func withinBound<T: Sendable>(
    _ what: String,
    _ bound: Duration = .seconds(60),
    _ body: @escaping @Sendable () throws -> T
) throws -> T {
    let result = Slot<Result<T, any Error>>()
    let finished = startThread {
        let value = Result { try body() }
        result.value.withLock { $0 = value }
    }
    let (seconds, attoseconds) = bound.components
    let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
    guard finished.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .success,
        let value = result.value.withLock({ $0 })
    else {
        throw DidNotReturn(what: what, bound: bound)
    }
    return try value.get()
}

/// The error `body` threw as a `VirtqueueError`, or `nil` if it returned or threw something else.
func virtqueueError(_ body: () throws -> Void) -> VirtqueueError? {
    do {
        try body()
        return nil
    } catch let error as VirtqueueError {
        return error
    } catch {
        return nil
    }
}
