/// A step that confines a device process after it has set up and before it touches ring memory.
///
/// ``DeviceHost`` calls ``confine(_:)`` once, in the child, after it has adopted its inherited
/// descriptors and mapped the region, and before it reads the region's header, builds the
/// device's queue or creates the device. A sandbox loads its seccomp filter here: everything the
/// serving loop needs is open and mapped, so the filter can forbid opening or mapping anything
/// else. Throwing ends the child with exit code ``DeviceHost/ExitCode/confinementFailed``.
public protocol ChildConfinement {
    /// Confines the calling process.
    ///
    /// - Parameter context: The device, its descriptors and its arguments.
    /// - Throws: Any error stops the device before it serves anything.
    func confine(_ context: DeviceHost.Context) throws

    /// Whether ``confine(_:)`` applies the sandbox policy the launcher passes after
    /// ``DeviceHost/sandboxPolicyArgument``. A device host started in the sandboxed role with a
    /// confinement that does not refuses to serve (exit code
    /// ``DeviceHost/ExitCode/confinementFailed``); the parent's check of the confinement report
    /// fails the launch either way.
    var appliesSandboxPolicy: Bool { get }

    /// Why a serving loop that creates threads (`VirtqueueAsync`'s event loop and Swift's
    /// cooperative pool) cannot run under this confinement, or `nil` if it can. ``DeviceHost``
    /// asks after ``confine(_:)`` and before serving such a device; an answer ends the child with
    /// exit code ``DeviceHost/ExitCode/confinementFailed`` and that message in its start-up
    /// report, instead of a forbidden `clone` later.
    ///
    /// - Parameter context: The device, its descriptors and its arguments.
    func threadRestriction(_ context: DeviceHost.Context) -> String?
}

extension ChildConfinement {
    /// `false`: a confinement step applies no sandbox policy unless it says so.
    public var appliesSandboxPolicy: Bool { false }

    /// `nil`: a confinement step forbids no threads unless it says so.
    public func threadRestriction(_ context: DeviceHost.Context) -> String? { nil }
}

/// No confinement: the shared-memory isolation level.
public struct NoConfinement: ChildConfinement {
    /// Creates the no-op confinement.
    public init() {}

    /// Does nothing.
    public func confine(_ context: DeviceHost.Context) throws {}
}
