// Walks the eight steps of seL4 libvirtqueue's use case on the heap backend, printing each:
// the driver on the main thread, the device on a thread of its own.
import Foundation
import Virtqueue
import VirtqueueHeap

/// The device side of the seed's example: a serial port that receives text. It reads each
/// chain's device-readable buffers and answers in the writable buffer with the byte count.
struct SerialDevice: DeviceComponent {
    static let name = "serial"

    init(configuration: DeviceConfiguration) {}

    mutating func handle<R: GuestMemory & ~Copyable, N: Notifier>(
        _ request: borrowing DeviceRequest,
        on queue: borrowing DeviceQueue<R, N>
    ) throws -> Int {
        print(
            "  4. device: got available entry \(request.id) (\(request.segmentCount) buffers, scattered size \(request.totalByteCount) bytes)"
        )
        var text = ""
        try queue.forEachReadable(in: request) { bytes in
            text += String(decoding: bytes, as: UTF8.self)
            print("  5. device: gathered a \(bytes.count)-byte buffer")
        }
        let reply = Array("serial wrote \(text.utf8.count) bytes: \(text)".utf8)
        let written = try reply.withUnsafeBytes { try queue.scatter($0, into: request) }
        print("  6. device: moves entry \(request.id) to the used ring with \(written) bytes written")
        print("  7. device: notifies the driver (when it asked to be notified)")
        return written
    }
}

do {
    let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 16 * 256, features: .all)
    print("Region: \(layout.regionSize) bytes, one queue of \(layout.queues[0].size), features \(layout.features)")
    let device = try HeapBackend.launch(SerialDevice.self, layout: layout)
    var driver = try device.makeDriverQueue(bufferSize: 256)

    var chain = driver.makeChain()
    print("  1. driver: creates a new available entry")
    for word in ["hello, ", "seL4 ", "world"] {
        try driver.appendReadable(to: &chain, copying: Array(word.utf8))
        print("  2. driver: chains a \(word.utf8.count)-byte buffer")
    }
    try driver.appendWritable(to: &chain, capacity: 64)
    print("  2. driver: chains a 64-byte writable buffer for the reply")
    let id = try driver.submit(chain)
    let kicked = try driver.notifyIfNeeded()
    print("  3. driver: makes entry \(id) available and \(kicked ? "kicks" : "does not need to kick") the device")

    try driver.waitForUsed()
    guard let used = try driver.takeUsed() else {
        print("no used entry")
        exit(1)
    }
    print("  8. driver: takes used entry \(used.id) (\(used.writtenByteCount) bytes written) and frees its buffers:")
    try driver.forEachSegment(of: used) { isWritable, bytes in
        let text = String(decoding: bytes, as: UTF8.self)
        print("     - \(isWritable ? "writable" : "readable") buffer: \"\(text)\"")
    }
    try driver.free(used)
    device.stop()
    if let failure = device.failure() { throw failure }
    print("Done: \(driver.freeBufferCount) of \(driver.bufferCount) buffers free, \(driver.inFlightCount) in flight.")
} catch {
    print("error: \(error)")
    exit(1)
}
