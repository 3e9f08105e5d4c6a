// A component host for VirtqueueAsyncTests: the test devices served with the async API
// (DeviceHost.Entry(async:)), confined when SandboxBackend started it.
import Glibc
import VirtqueueAsync
import VirtqueueSandbox
import VirtqueueSharedMemory
import VirtqueueTestDevices

DeviceHost.runIfDeviceRole(
    devices: [DeviceHost.Entry(async: EchoDevice.self), DeviceHost.Entry(async: ChecksumDevice.self)],
    confinement: SandboxConfinement()
)
let usage =
    "usage: VirtqueueAsyncDeviceHost \(DeviceHost.deviceArgument) NAME (started by SharedMemoryBackend.launch)\n"
_ = usage.withCString { write(2, $0, strlen($0)) }
exit(64)
