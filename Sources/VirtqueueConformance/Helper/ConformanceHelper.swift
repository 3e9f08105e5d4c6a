import Glibc
import Virtqueue

/// The helper process of ``ConformanceCheck/peerProcessDeath``: the body of the
/// `VirtqueueConformanceHelper` executable. Package API: the executable is its only user.
///
/// It inherits a pipe to the suite as descriptor 3 (its standard error from then on) and a
/// ``PortableEnd`` as descriptors 4, 5, …; it maps the end's memory and acts as one side of the
/// queue the suite wrote into it — the device (``ConformanceDevice``, served until the driver goes
/// away) or the driver (``StreamingDriver``, for ever) — until the suite kills it. Its waits also
/// end when the suite's process is gone (its parent changes), so a killed test run leaves no
/// helper behind, even with a notifier that never reports a dead peer.
package enum ConformanceHelper {
    /// Exit statuses.
    package enum Status: Int32 {
        /// The suite's side went away (`peerDied`): an orderly end.
        case peerGone = 0
        /// The queue failed otherwise.
        case queueFailed = 1
        /// A malformed command line, or memory that cannot be mapped.
        case usage = 2
        /// A reply did not match what the driver sent.
        case wrongReply = 3
    }

    /// Runs the helper with the process's command line and returns its exit status; what went
    /// wrong is written to standard error.
    ///
    /// - Parameter arguments: The command line, the executable's path first.
    /// - Returns: The exit status.
    package static func main(_ arguments: [String]) -> Int32 {
        let status: Status
        do {
            _ = dup2(errorPipe, 2)
            _ = close(errorPipe)
            let invocation = try HelperInvocation(parsing: arguments.dropFirst())
            guard getppid() == invocation.parent else {
                return report(.peerGone, "the suite's process \(invocation.parent) is gone")
            }
            status = try run(invocation)
        } catch let error as HelperError {
            return report(.usage, error.message)
        } catch let error as VirtqueueError where error.code == .peerDied {
            return Status.peerGone.rawValue
        } catch let error as CheckFailure {
            return report(.wrongReply, error.message)
        } catch {
            return report(.queueFailed, "\(error)")
        }
        return status.rawValue
    }

    /// The descriptor of the pipe the suite reads the helper's standard error from.
    static let errorPipe: CInt = 3

    static func run(_ invocation: HelperInvocation) throws -> Status {
        let memory = try PortableMemory(invocation.mappings)
        let notifier = PortableEndNotifier(invocation.notifier, parent: invocation.parent)
        switch invocation.role {
        case .device:
            var queue = try DeviceQueue(region: memory, notifier: notifier)
            var device = ConformanceDevice()
            try queue.serve(&device, spins: 64)
            return .peerGone
        case .driver:
            var driver = try DriverQueue(region: memory, notifier: notifier, bufferSize: invocation.bufferSize)
            var stream = StreamingDriver(queueSize: driver.queueSize)
            while true { try stream.step(&driver) }
        }
    }

    static func report(_ status: Status, _ message: String) -> Int32 {
        let line = "VirtqueueConformanceHelper (pid \(getpid())): \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        return status.rawValue
    }
}
