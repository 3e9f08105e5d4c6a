import Foundation
import Glibc
import Testing
import VirtioBlock
import Virtqueue
import VirtqueueHeap

/// A disk image in a temporary file, open for reading and writing.
final class DiskImage {
    let path: String
    let descriptor: CInt
    let sectors: UInt64

    init(sectors: UInt64) throws {
        path = NSTemporaryDirectory() + "virtio-blk-test-\(UUID().uuidString).img"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0, ftruncate(descriptor, off_t(sectors) * 512) == 0 else {
            throw TestFailure("cannot create \(path)")
        }
        self.sectors = sectors
    }

    deinit {
        close(descriptor)
        unlink(path)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

@Suite("virtio-blk example device")
struct BlockDeviceTests {
    func pattern(sector: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: Int(sector) &* 31 &+ $0 &* 7) }
    }

    @Test func writesThenReadsBackEverySector() throws {
        let disk = try DiskImage(sectors: 2048)
        let layout = try RegionLayout(queueSizes: [64], dataAreaSize: 96 * 8192, features: .all)
        let device = try HeapBackend.launch(
            BlockDevice.self,
            layout: layout,
            configuration: DeviceConfiguration(arguments: ["sectors=2048"], fileDescriptors: [disk.descriptor])
        )
        var client = BlockClient(
            queue: try device.makeDriverQueue(bufferSize: 8192)
        )
        var failures = 0
        for phase in [BlockRequest.Kind.write, .read] {
            var next: UInt64 = 0
            while next < 2048 || client.inFlightCount > 0 {
                while next < 2048, client.canSubmit(byteCount: 8192) {
                    let sector = next
                    if phase == .write {
                        try client.write(sector: sector, byteCount: 8192) { buffer in
                            buffer.copyBytes(from: pattern(sector: sector, count: 8192))
                        }
                    } else {
                        try client.read(sector: sector, byteCount: 8192)
                    }
                    next += 16
                }
                try client.queue.notifyIfNeeded()
                try client.queue.waitForUsed()
                _ = try client.reap { operation, status, data in
                    if status != .ok { failures += 1 }
                    if operation.kind == .read, Array(data) != pattern(sector: operation.sector, count: 8192) {
                        failures += 1
                    }
                }
            }
        }
        #expect(failures == 0)
        #expect(device.stop() == .finished)
    }

    @Test func malformedRequestsGetAnErrorStatusNotAnAccess() throws {
        let disk = try DiskImage(sectors: 16)
        let layout = try RegionLayout(queueSizes: [16], dataAreaSize: 32 * 4096, features: .all)
        let device = try HeapBackend.launch(
            BlockDevice.self,
            layout: layout,
            configuration: DeviceConfiguration(arguments: ["sectors=16"], fileDescriptors: [disk.descriptor])
        )
        var client = BlockClient(queue: try device.makeDriverQueue())
        try client.read(sector: 16, byteCount: 512)  // past the end
        try client.read(sector: UInt64.max, byteCount: 512)  // overflowing
        try client.read(sector: 0, byteCount: 100)  // not whole sectors
        // Runs past the end.
        try client.write(sector: 15, byteCount: 1024) { $0.initializeMemory(as: UInt8.self, repeating: 1) }
        try client.queue.notifyIfNeeded()
        var statuses: [BlockRequest.Status?] = []
        while statuses.count < 4 {
            try client.queue.waitForUsed()
            _ = try client.reap { _, status, _ in statuses.append(status) }
        }
        #expect(statuses == [.ioError, .ioError, .ioError, .ioError])
        #expect(device.stop() == .finished)
    }

    /// The device has no made-up default: without its disk image, or with a size that is not a
    /// number, its factory refuses, and the launch says which device and why.
    @Test(arguments: [
        (DeviceConfiguration(arguments: ["sectors=16"]), "the block device needs the disk image's file descriptor"),
        (DeviceConfiguration(fileDescriptors: [0]), "the block device needs sectors=N"),
        (
            DeviceConfiguration(arguments: ["sectors=lots"], fileDescriptors: [0]),
            "the block device's \"sectors=lots\" is not a sector count"
        ),
    ])
    func aConfigurationTheDeviceCannotUseFailsTheLaunch(configuration: DeviceConfiguration, reason: String) throws {
        let layout = try RegionLayout(queueSizes: [16], dataAreaSize: 32 * 4096, features: .all)
        let failure = try #require(throws: DeviceFailure.self) {
            _ = try HeapBackend.launch(BlockDevice.self, layout: layout, configuration: configuration)
        }
        #expect(failure.termination == .failedToStart(reason))
        #expect(failure.underlyingError as? BlockDeviceError == BlockDeviceError(reason))
        #expect(failure.description == "device virtio-blk (thread) failed to start: \(reason)")
    }
}
