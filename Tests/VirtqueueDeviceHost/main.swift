// A component host for the tests: started by SharedMemoryBackend in a device role, it runs one
// of the test devices (confined when SandboxBackend started it); started otherwise, it says how to use it.
import Glibc
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

DeviceHost.runIfDeviceRole(devices: TestDevices.all, confinement: SandboxConfinement())

let usage = "usage: VirtqueueDeviceHost \(DeviceHost.deviceArgument) NAME (started by SharedMemoryBackend.launch)\n"
_ = usage.withCString { write(2, $0, strlen($0)) }
exit(DeviceHost.ExitCode.usage)
