// The component host: one executable holds both sides of a queue. Started by a user, it is the
// driver; it re-starts itself (posix_spawn of /proc/self/exe) in the device role for the
// shared-memory level. The same device type, unchanged, also runs on a thread (heap level).
//
//   swift run ComponentHost
import Glibc
import Virtqueue
import VirtqueueHeap
import VirtqueueSharedMemory

/// The seed's serial port: answers each chain with what it received.
struct SerialDevice: DeviceComponent {
    static let name = "serial"

    init(configuration: DeviceConfiguration) {}

    mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        var text: [UInt8] = []
        try queue.forEachReadable(in: request) { text += $0 }
        let reply = Array("serial (pid \(getpid())) wrote \(text.count) bytes: ".utf8) + text
        return try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
    }
}

// In a child started in the device role, this serves and exits; in the parent it returns. The
// entry compiles the device's serving loop here, specialised for SerialDevice.
DeviceHost.runIfDeviceRole(devices: [DeviceHost.Entry(SerialDevice.self)])

/// The seed's driver steps, written once for any region and notifier.
func runSeed<R: GuestMemory & ~Copyable, N: Notifier>(_ driver: inout DriverQueue<R, N>) throws -> String {
    var chain = driver.makeChain()
    for word in ["hello, ", "seL4 ", "world"] {
        try driver.appendReadable(to: &chain, copying: Array(word.utf8))
    }
    try driver.appendWritable(to: &chain, capacity: 128)
    try driver.submit(chain)
    try driver.notifyIfNeeded()
    try driver.waitForUsed()
    guard let used = try driver.takeUsed() else { return "no reply" }
    var reply = [UInt8](repeating: 0, count: used.writtenByteCount)
    _ = try reply.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
    try driver.free(used)
    return String(decoding: reply, as: UTF8.self)
}

/// Runs the seed's steps on a launched device, wherever it runs, and stops it: the same code for
/// the thread and the process. If the device dies, the error says which and why.
func exchange(with device: some DeviceHandle) throws -> (reply: String, termination: DeviceTermination) {
    var driver = try device.makeDriverQueue(bufferSize: 256)
    let reply: String
    do {
        reply = try runSeed(&driver)
    } catch {
        throw device.explain(error)
    }
    return (reply, device.stop())
}

do {
    let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 16 * 256, features: .all)
    print("driver: pid \(getpid())")

    let thread = try exchange(with: try HeapBackend.launch(SerialDevice.self, layout: layout))
    print("heap:          \(thread.reply)")
    print("device thread \(thread.termination)")

    let device = try SharedMemoryBackend.launch(SerialDevice.self, layout: layout)
    let process = try exchange(with: device)
    print("shared memory: \(process.reply)")
    print("device process \(device.processID) \(process.termination)")
    exit(thread.termination == .finished && process.termination == .finished ? 0 : 1)
} catch {
    print("error: \(error)")
    exit(1)
}
