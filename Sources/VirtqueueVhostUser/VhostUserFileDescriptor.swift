import Glibc
import Synchronization
public import SystemPackage

/// A file descriptor received from the peer, owned by the message that carried it.
///
/// The descriptor is closed when its last reference goes away, unless ownership was taken with
/// ``take()`` first. A message the role refuses therefore closes its descriptors simply by being
/// dropped: nothing the peer sends can leak a descriptor.
public final class VhostUserFileDescriptor: Sendable, CustomStringConvertible {
    private let raw: Atomic<CInt>
    private let owned: Bool

    /// Takes ownership of `rawValue` (a descriptor below 0 is a placeholder that is never closed).
    public init(owning rawValue: CInt) {
        self.raw = Atomic(rawValue)
        self.owned = true
    }

    /// Refers to `fileDescriptor` without owning it: the caller keeps it open while this object is
    /// used (for example a front-end sending its memory's fd) and closes it itself; ``take()``
    /// returns `nil` and ``close()`` does nothing.
    public init(borrowing fileDescriptor: FileDescriptor) {
        self.raw = Atomic(fileDescriptor.rawValue)
        self.owned = false
    }

    /// Takes ownership of `fileDescriptor`.
    public convenience init(owning fileDescriptor: FileDescriptor) {
        self.init(owning: fileDescriptor.rawValue)
    }

    /// A stand-in that owns nothing: what a fuzz target or a test passes for a descriptor it does
    /// not have. Never closed.
    public static func placeholder() -> VhostUserFileDescriptor { VhostUserFileDescriptor(owning: -1) }

    deinit {
        let fd = raw.load(ordering: .acquiring)
        if owned, fd >= 0 { _ = Glibc.close(fd) }
    }

    /// The descriptor, still owned by this object: valid only while the object lives and until
    /// ``take()`` or ``close()``; `nil` once either ran, or for a placeholder.
    ///
    /// - Warning: Do not close it or let it escape the owner's lifetime.
    public var fileDescriptor: FileDescriptor? {
        let fd = raw.load(ordering: .acquiring)
        return fd >= 0 ? FileDescriptor(rawValue: fd) : nil
    }

    /// Takes ownership away from this object: the caller must close the result. `nil` if taken,
    /// closed, or a placeholder.
    public func take() -> FileDescriptor? {
        guard owned else { return nil }
        let fd = raw.exchange(-1, ordering: .acquiringAndReleasing)
        return fd >= 0 ? FileDescriptor(rawValue: fd) : nil
    }

    /// Closes the descriptor now (it would be closed on deinit anyway).
    public func close() {
        guard owned else { return }
        let fd = raw.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    public var description: String {
        let fd = raw.load(ordering: .relaxed)
        return fd >= 0 ? "fd \(fd)" : "fd (none)"
    }
}
