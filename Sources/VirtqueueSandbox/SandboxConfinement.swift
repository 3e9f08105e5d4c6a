import CVirtqueueSandbox
import Glibc
import SystemPackage
import Virtqueue
public import VirtqueueSharedMemory

/// The child half of the sandboxed isolation level: a `ChildConfinement`
/// that, when the launcher asked for a sandbox, confines the device process before it touches
/// ring memory.
///
/// Pass it to `DeviceHost/runIfDeviceRole(devices:confinement:arguments:)`
/// in the device host's `main`. The same executable then hosts devices at every process-based
/// level: without the sandbox argument (the shared-memory level) it does nothing; with it
/// (``SandboxBackend/launch(_:layout:policy:restart:options:)``) it, in order:
///
/// 1. changes the working directory to `/`;
/// 2. closes every descriptor except the region file, every served queue's kick and call
///    sockets, the liveness socket (and its per-queue copies), the device's configured
///    descriptors and standard output and error — standard input included;
/// 3. lowers `RLIMIT_NOFILE` to just above the highest kept descriptor, `RLIMIT_CORE` to 0 and,
///    for a device that serves one queue, `RLIMIT_NPROC` to 0;
/// 4. installs the SIGSYS reporter, sets `PR_SET_NO_NEW_PRIVS` and loads the seccomp filter;
/// 5. under the filter, asks the kernel for its seccomp mode (`prctl(PR_GET_SECCOMP)`) and sends
///    the confinement report — that mode and the loaded policy's ``SandboxPolicy/digest`` — on
///    the liveness socket, which the launcher checks before it hands out the queue.
///
/// Only then does the device host read the region's header and start serving.
public struct SandboxConfinement: ChildConfinement {
    /// The argument that carries the policy to the child (`DeviceHost/sandboxPolicyArgument`).
    public static let policyArgument = DeviceHost.sandboxPolicyArgument

    /// Creates the confinement step.
    public init() {}

    /// `true`: this step applies the policy the launcher sent.
    public var appliesSandboxPolicy: Bool { true }

    /// Why a serving loop that creates threads cannot run under the policy the launcher sent
    /// (``SandboxPolicy/callsMissingForThreads``), or `nil` if it can or no policy was sent.
    public func threadRestriction(_ context: DeviceHost.Context) -> String? {
        guard let index = context.arguments.firstIndex(of: Self.policyArgument),
            index + 1 < context.arguments.count,
            let policy = SandboxPolicy(argumentEncoding: context.arguments[index + 1])
        else { return nil }
        let missing = policy.callsMissingForThreads
        guard !missing.isEmpty else { return nil }
        return "\(context.deviceName) serves with the async API (VirtqueueAsync), which needs threads of its own, "
            + "but the sandbox policy does not allow \(missing.joined(separator: ", ")); serve it with the "
            + "blocking API (DeviceHost.Entry(Device.self)), or launch it with a policy that allows threads"
    }

    public func confine(_ context: DeviceHost.Context) throws {
        guard let index = context.arguments.firstIndex(of: Self.policyArgument) else { return }
        guard index + 1 < context.arguments.count,
            let policy = SandboxPolicy(argumentEncoding: context.arguments[index + 1])
        else {
            throw SandboxError(.invalidPolicy, "\(Self.policyArgument) needs a policy encoding")
        }
        // Every queue's kick and call ends play the kick and call roles; each queue's liveness
        // descriptor (6, and a duplicate per further queue) the liveness role.
        let kicks = context.queues.map(\.kick.rawValue)
        let calls = context.queues.map(\.call.rawValue)
        let livenesses = context.queues.map(\.liveness.rawValue)
        let liveness = context.livenessFileDescriptor.rawValue
        let configured = context.configuration.fileDescriptors
        let region = context.regionFileDescriptor.rawValue
        var roles: [SandboxPolicy.FileDescriptorRole: [Int32]] = [
            .kick: kicks, .call: calls, .liveness: livenesses, .report: [liveness], .standardOutput: [1],
            .standardError: [2],
        ]
        for (index, descriptor) in configured.enumerated() { roles[.device(index)] = [descriptor] }
        // Several queues are served on threads of their own: the launcher sent a policy that
        // allows them (SandboxPolicy.allowingThreads), and RLIMIT_NPROC must leave room for them.
        try policy.confineThisProcess(
            keeping: [1, 2, region, liveness] + kicks + calls + livenesses + configured,
            descriptorsByRole: roles,
            allowingThreads: context.queues.count > 1
        )
    }
}
