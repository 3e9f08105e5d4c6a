import Glibc
import Testing
import Virtqueue
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// The launcher hands out a sandboxed device only once the child has proved it is confined.
@Suite("Sandbox confinement verification", .serialized)
struct ConfinementVerificationTests {
    /// The test host's options with `--test-confinement mode` (see Tests/VirtqueueDeviceHost).
    static func options(_ mode: String, startupTimeout: Duration = .seconds(10)) -> LaunchOptions {
        var options = Host.options
        options.arguments += ["--test-confinement", mode]
        options.startupTimeout = startupTimeout
        return options
    }

    /// Launches `ForbiddenCallDevice` under the test host in `mode`, expecting the launch to fail.
    static func failedLaunch(_ mode: String, startupTimeout: Duration = .seconds(10)) throws -> SandboxError {
        do {
            let device = try SandboxBackend.launch(
                ForbiddenCallDevice.self,
                layout: try Host.layout(),
                options: options(mode, startupTimeout: startupTimeout)
            )
            device.process.stop(gracePeriod: .zero)
            throw LaunchedAnyway(mode: mode)
        } catch let error as SandboxError {
            return error
        }
    }

    struct LaunchedAnyway: Error, CustomStringConvertible {
        var mode: String
        var description: String { "the launch with --test-confinement \(mode) succeeded" }
    }

    /// Whether `pid` is no child of this process any more: reaped, no zombie left.
    static func isReaped(_ pid: Int32) -> Bool {
        var status: CInt = 0
        return waitpid(pid, &status, WNOHANG) == -1 && errno == ECHILD
    }

    @Test func aHostWithTheDefaultNoConfinementFailsTheLaunch() throws {
        let error = try Self.failedLaunch("none")
        #expect(error.code == .notConfined, "\(error)")
        #expect(error.confinementFailure == .endedBeforeReport, "\(error)")
        // The device host refused the sandboxed role without a sandbox confinement.
        #expect(error.exitStatus == .exited(DeviceHost.ExitCode.confinementFailed), "\(error)")
        #expect(error.deviceName == ForbiddenCallDevice.name)
        let pid = try #require(error.processID)
        #expect(Self.isReaped(pid))
    }

    @Test func aHostThatSkipsConfinementIsKilledWhenItReportsItsDeviceInstead() throws {
        let start = ContinuousClock.now
        let error = try Self.failedLaunch("hidden", startupTimeout: .seconds(10))
        let elapsed = ContinuousClock.now - start
        #expect(error.code == .notConfined, "\(error)")
        #expect(error.confinementFailure == .noReport, "\(error)")
        #expect(error.message.contains("no confinement report, only its device's status"), "\(error)")
        // It was serving unconfined, so the launcher killed it at once, then reaped it.
        #expect(error.exitStatus == .signaled(SIGKILL), "\(error)")
        let pid = try #require(error.processID)
        #expect(Self.isReaped(pid))
        #expect(elapsed < .seconds(8), "no need to wait for the startup timeout")
    }

    @Test func aHostThatHangsIsKilledWhenNoReportComes() throws {
        let start = ContinuousClock.now
        let error = try Self.failedLaunch("hang", startupTimeout: .milliseconds(1500))
        let elapsed = ContinuousClock.now - start
        #expect(error.code == .notConfined, "\(error)")
        #expect(error.confinementFailure == .noReport, "\(error)")
        #expect(error.message.contains("no confinement report"), "\(error)")
        // It was still running, so the launcher killed it, then reaped it.
        #expect(error.exitStatus == .signaled(SIGKILL), "\(error)")
        let pid = try #require(error.processID)
        #expect(Self.isReaped(pid))
        #expect(elapsed >= .milliseconds(1500))
        #expect(elapsed < .seconds(8), "the wait is bounded by the startup timeout")
    }

    @Test func aHostThatLoadsAnotherPolicyFailsTheDigestCheck() throws {
        let error = try Self.failedLaunch("other-policy")
        #expect(error.code == .notConfined, "\(error)")
        #expect(error.confinementFailure == .policyMismatch, "\(error)")
        #expect(error.message.contains(String(SandboxPolicy.deviceLoop.digest, radix: 16)), "\(error)")
        let chosen = SandboxPolicy.deviceLoop.allowing(.init("getpid"))
        #expect(error.message.contains(String(chosen.digest, radix: 16)), "\(error)")
        #expect(error.exitStatus == .signaled(SIGKILL), "\(error)")
        let pid = try #require(error.processID)
        #expect(Self.isReaped(pid))
    }

    @Test func aForgedReportIsCaughtByTheKernelsAccount() throws {
        let error = try Self.failedLaunch("forged")
        #expect(error.code == .notConfined, "\(error)")
        #expect(error.confinementFailure == .notFiltered, "\(error)")
        #expect(error.message.contains("Seccomp: 0"), "\(error)")
        let pid = try #require(error.processID)
        #expect(Self.isReaped(pid))
    }

    @Test func theSameHostStillServesUnconfinedAtTheSharedMemoryLevel() throws {
        let device = try SharedMemoryBackend.launch(
            ForbiddenCallDevice.self,
            layout: try Host.layout(),
            options: Host.options
        )
        var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier)
        #expect(try send("nothing", on: &driver) == -2)
        let status = try String(contentsOf: "/proc/\(device.processID)/status")
        #expect(status.contains("Seccomp:\t0"), "no filter at the shared-memory level")
        #expect(device.stop() == .finished)
    }

    @Test func aConfinedLaunchReportsThePolicyItWasSent() throws {
        let policy = SandboxPolicy.deviceLoop.allowing(.init("getppid"))
        let device = try SandboxBackend.launch(
            ForbiddenCallDevice.self,
            layout: try Host.layout(),
            policy: policy,
            options: Host.options
        )
        var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier)
        #expect(try send("nothing", on: &driver) == -2)
        // The confinement report was consumed at launch: a later violation is still decoded.
        #expect(throws: VirtqueueError.self) { _ = try send("openat", on: &driver) }
        #expect(device.failure()?.termination.forbiddenCall == "openat")
    }

    /// A thread the host started before it confined itself is filtered too (the filter is
    /// loaded with SECCOMP_FILTER_FLAG_TSYNC): its forbidden call ends the device, named, and
    /// the launcher's check found every thread in seccomp mode 2.
    @Test func aThreadStartedBeforeConfinementIsConfinedToo() throws {
        let device = try SandboxBackend.launch(
            ForbiddenCallDevice.self,
            layout: try Host.layout(),
            options: Self.options("early-thread")
        )
        var driver = try DriverQueue(region: try device.makeRegion(), notifier: device.notifier)
        #expect(try send("nothing", on: &driver) == -2)
        #expect(try send("release-early-thread", on: &driver) == 0)
        // The released thread's openat ends the process; until it does, the device still answers.
        var answered = 0
        do {
            while answered < 100_000 {
                _ = try send("nothing", on: &driver)
                answered += 1
            }
            Issue.record("the early thread's openat was allowed: the device answered \(answered) more requests")
        } catch {
            #expect(error.code == .peerDied, "\(error)")
        }
        #expect(device.failure()?.termination.forbiddenCall == "openat")
        device.stop()
    }

    @Test func theDigestIsStableAndTellsPoliciesApart() throws {
        let policy = SandboxPolicy.deviceLoop.allowing(.init("pread64", .onFileDescriptors([.device(1), .device(0)])))
        let decoded = try #require(SandboxPolicy(argumentEncoding: policy.argumentEncoding))
        #expect(decoded.digest == policy.digest)
        // FNV-1a of "read@fd=kick;exit_group", computed independently: the same in every process.
        let small = SandboxPolicy(rules: [.init("read", .onFileDescriptors([.kick])), .init("exit_group")])
        #expect(small.argumentEncoding == "read@fd=kick;exit_group")
        #expect(small.digest == 0xcd71_ad3a_093e_c6e3)
        #expect(policy.digest != SandboxPolicy.deviceLoop.digest)
        #expect(SandboxPolicy.deviceLoop.allowing(.init("getpid")).digest != SandboxPolicy.deviceLoop.digest)
    }
}
