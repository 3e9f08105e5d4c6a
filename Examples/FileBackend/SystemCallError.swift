import Glibc

/// A system call of the file backend failed.
public struct SystemCallError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The C function that failed, such as `"mmap"`.
    public var call: String
    /// Its `errno`.
    public var errno: Int32

    /// Creates an error for `call` with the given `errno`.
    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    /// An error for `call` with the calling thread's current `errno`.
    static func current(_ call: String) -> SystemCallError {
        SystemCallError(call, errno: Glibc.errno)
    }

    public var description: String {
        "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}
