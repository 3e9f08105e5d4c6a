/// A broken invariant: the fuzz target traps on it, a regression test reports it.
public struct InvariantFailure: Error, CustomStringConvertible {
    /// What was expected and what happened instead.
    public let message: String

    /// Creates a failure with a message that names the offending values.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { "invariant violated: \(message)" }
}

/// Throws an ``InvariantFailure`` with `message` unless `condition` holds.
@inline(__always)
func check(_ condition: Bool, _ message: @autoclosure () -> String) throws(InvariantFailure) {
    if !condition { throw InvariantFailure(message()) }
}
