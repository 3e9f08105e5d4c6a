// A component host for the tests: started by SharedMemoryBackend in a device role, it runs one
// of the test devices (confined when SandboxBackend started it); started otherwise, it says how to use it.
import Glibc
import VirtqueueConformance
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

let entries = [
    DeviceHost.Entry(SerialDevice.self), DeviceHost.Entry(EchoDevice.self), DeviceHost.Entry(ChecksumDevice.self),
    DeviceHost.Entry(TruncatingDevice.self), DeviceHost.Entry(FailingDevice.self),
    DeviceHost.Entry(DescriptorListingDevice.self), DeviceHost.Entry(ConfiguredDevice.self),
    DeviceHost.Entry(ForbiddenCallDevice.self), DeviceHost.Entry(ConformanceDevice.self),
    DeviceHost.Entry(NotifierTrapDevice.self), DeviceHost.Entry(GreetingDevice.self),
    DeviceHost.Entry(PrintingDevice.self), DeviceHost.Entry(QueueTagDevice.self),
]

// With `--test-confinement MODE` among the launch arguments, a host that does not confine itself
// as SandboxBackend asked, for the tests that such a launch fails (TestConfinement's modes).
if let index = CommandLine.arguments.firstIndex(of: "--test-confinement"), index + 1 < CommandLine.arguments.count {
    var arguments = CommandLine.arguments
    let policyIndex = arguments.firstIndex(of: DeviceHost.sandboxPolicyArgument)
    switch arguments[index + 1] {
    case "none":
        // The default confinement, NoConfinement, as a host that forgot SandboxConfinement has.
        DeviceHost.runIfDeviceRole(devices: entries, arguments: arguments)
    case "hang":
        // Never confines itself, never reports, never serves: a host that hangs in its set-up.
        while true { sleep(3600) }
    case "hidden":
        // Hides the sandboxed role from the device host and serves unconfined: it sends no
        // confinement report, only the device host's report that the device started.
        if let policyIndex { arguments.removeSubrange(policyIndex..<min(policyIndex + 2, arguments.count)) }
        DeviceHost.runIfDeviceRole(devices: entries, arguments: arguments)
    case "other-policy":
        // Confines itself, but with a policy of its own choosing instead of the one it was sent.
        if let policyIndex, policyIndex + 1 < arguments.count {
            arguments[policyIndex + 1] = SandboxPolicy.deviceLoop.allowing(.init("getpid")).argumentEncoding
        }
        DeviceHost.runIfDeviceRole(devices: entries, confinement: SandboxConfinement(), arguments: arguments)
    case "early-thread":
        // Starts a thread before the host confines itself. It waits, making no system call,
        // until a ForbiddenCallDevice request releases it, then attempts openat: the filter must
        // cover it too, though it was not the thread that loaded the filter.
        ForbiddenCallDevice.startEarlyThread()
        DeviceHost.runIfDeviceRole(devices: entries, confinement: SandboxConfinement(), arguments: arguments)
    case "forged":
        // Sends a well-formed report claiming the policy it was sent and seccomp mode 2, and serves
        // unconfined: only the kernel's account in /proc can tell.
        let digest =
            policyIndex.flatMap { $0 + 1 < arguments.count ? SandboxPolicy(argumentEncoding: arguments[$0 + 1]) : nil }?
            .digest ?? 0
        var report = [UInt8](repeating: 0, count: 32)
        report.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt64(0x464E_4F43_4253_5156).littleEndian, toByteOffset: 0x00, as: UInt64.self)
            raw.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 0x08, as: UInt16.self)
            raw.storeBytes(of: UInt16(32).littleEndian, toByteOffset: 0x0A, as: UInt16.self)
            raw.storeBytes(of: Int32(2).littleEndian, toByteOffset: 0x0C, as: Int32.self)
            raw.storeBytes(of: digest.littleEndian, toByteOffset: 0x10, as: UInt64.self)
        }
        _ = report.withUnsafeBytes { write(DeviceHost.InheritedDescriptor.liveness, $0.baseAddress, $0.count) }
        if let policyIndex { arguments.removeSubrange(policyIndex..<min(policyIndex + 2, arguments.count)) }
        DeviceHost.runIfDeviceRole(devices: entries, arguments: arguments)
    default:
        break
    }
}

// With `--existential` among the launch arguments, the overload that takes existential
// metatypes (TestDevices.all); otherwise entries, so each device's serving loop is specialised.
if CommandLine.arguments.contains("--existential") {
    DeviceHost.runIfDeviceRole(devices: TestDevices.all, confinement: SandboxConfinement())
}
DeviceHost.runIfDeviceRole(devices: entries, confinement: SandboxConfinement())

let usage = "usage: VirtqueueDeviceHost \(DeviceHost.deviceArgument) NAME (started by SharedMemoryBackend.launch)\n"
_ = usage.withCString { write(2, $0, strlen($0)) }
exit(DeviceHost.ExitCode.usage)
