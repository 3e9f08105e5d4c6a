// A component host for the tests: started by SharedMemoryBackend in a device role, it runs one
// of the test devices (confined when SandboxBackend started it); started otherwise, it says how to use it.
import Glibc
import VirtqueueConformance
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

// With `--existential` among the launch arguments, the overload that takes existential
// metatypes (TestDevices.all); otherwise entries, so each device's serving loop is specialised.
if CommandLine.arguments.contains("--existential") {
    DeviceHost.runIfDeviceRole(devices: TestDevices.all, confinement: SandboxConfinement())
}
DeviceHost.runIfDeviceRole(
    devices: [
        DeviceHost.Entry(SerialDevice.self), DeviceHost.Entry(EchoDevice.self), DeviceHost.Entry(ChecksumDevice.self),
        DeviceHost.Entry(TruncatingDevice.self), DeviceHost.Entry(FailingDevice.self),
        DeviceHost.Entry(DescriptorListingDevice.self), DeviceHost.Entry(ConfiguredDevice.self),
        DeviceHost.Entry(ForbiddenCallDevice.self), DeviceHost.Entry(ConformanceDevice.self),
    ],
    confinement: SandboxConfinement()
)

let usage = "usage: VirtqueueDeviceHost \(DeviceHost.deviceArgument) NAME (started by SharedMemoryBackend.launch)\n"
_ = usage.withCString { write(2, $0, strlen($0)) }
exit(DeviceHost.ExitCode.usage)
