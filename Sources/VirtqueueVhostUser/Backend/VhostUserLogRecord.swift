/// One event of a vhost-user back-end's log: a refusal (with the typed error naming the value),
/// a ring that started, stopped or broke, a connection that ended.
///
/// The back-end hands records to a sink closure (``VhostUserBackend/init(configuration:options:log:)``)
/// rather than to a logging library, so the module depends on nothing beyond the ring core; a
/// sink that forwards to swift-log's `Logger` is a few lines.
public struct VhostUserLogRecord: Sendable, CustomStringConvertible {
    /// How much the event matters.
    public enum Level: Int, Comparable, Sendable, CustomStringConvertible {
        /// Every message handled.
        case debug
        /// A ring started or stopped, a connection began or ended.
        case info
        /// Something the front-end may do but that weakens the back-end's guarantees (unsealed memory).
        case notice
        /// A request refused.
        case warning
        /// A ring broke, a connection closed for a violation, a thread that did not stop.
        case error

        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }

        public var description: String {
            switch self {
            case .debug: "debug"
            case .info: "info"
            case .notice: "notice"
            case .warning: "warning"
            case .error: "error"
            }
        }
    }

    /// How much the event matters.
    public var level: Level
    /// What happened.
    public var message: String
    /// The typed error, for a refusal or a failure.
    public var error: VhostUserError?
    /// The queue concerned, if one is.
    public var queue: Int?

    /// A record.
    public init(level: Level, _ message: String, error: VhostUserError? = nil, queue: Int? = nil) {
        self.level = level
        self.message = message
        self.error = error
        self.queue = queue
    }

    public var description: String {
        var text = "[\(level)]"
        if let queue { text += " queue \(queue):" }
        text += " \(message)"
        if let error { text += " — \(error)" }
        return text
    }
}

/// Where a vhost-user back-end sends its log records.
public typealias VhostUserLogSink = @Sendable (VhostUserLogRecord) -> Void
