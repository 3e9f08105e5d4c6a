// A component host for the tests: started by SharedMemoryBackend in a device role, it runs one
// of the test devices; started otherwise, it says how to use it.
import Glibc
import VirtqueueSharedMemory
import VirtqueueTestDevices

DeviceHost.runIfDeviceRole(devices: TestDevices.all)

let usage = "usage: VirtqueueDeviceHost \(DeviceHost.deviceArgument) NAME (started by SharedMemoryBackend.launch)\n"
_ = usage.withCString { write(2, $0, strlen($0)) }
exit(DeviceHost.ExitCode.usage)
