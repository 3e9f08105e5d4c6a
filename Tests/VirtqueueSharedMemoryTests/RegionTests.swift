import CVirtqueueSystem
import Glibc
import SystemPackage
import Testing
import Virtqueue
@_spi(Testing) import VirtqueueSharedMemory

extension SharedMemoryTests {
    @Suite("Shared-memory region")
    struct RegionTests {
        static let layout = try! RegionLayout(
            queueSizes: [8],
            dataAreaSize: 4096,
            features: [.indirectDescriptors, .eventIndex]
        )

        @Test func createdFileIsSealedAgainstResizing() throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let fd = file.fileDescriptor.rawValue
            let seals = vq_get_seals(fd)
            #expect(seals & VQ_SEAL_SHRINK != 0)
            #expect(seals & VQ_SEAL_GROW != 0)
            #expect(seals & VQ_SEAL_SEAL != 0)
            #expect(file.isSealed)
            #expect(file.byteCount == Self.layout.regionSize)
            // A peer holding the descriptor cannot shrink, grow or unseal the file.
            #expect(ftruncate(fd, 0) == -1 && errno == EPERM)
            #expect(ftruncate(fd, off_t(file.byteCount * 2)) == -1 && errno == EPERM)
            #expect(vq_add_seals(fd, VQ_SEAL_WRITE) == -1 && errno == EPERM)
        }

        /// The header is read once: the creator builds its queues from what it wrote, and an
        /// attacher from what it validated when it attached, whatever the peer writes there later
        /// (issue 18, "the header is read twice").
        @Test func queuesUseTheLayoutWrittenOrValidatedOnceNotTheHeaderAgain() throws {
            let created = try SharedMemoryRegion.create(layout: Self.layout)
            let attached = try SharedMemoryRegion.attach(try created.file.duplicateFileDescriptor())
            #expect(created.regionLayout == Self.layout)
            #expect(attached.regionLayout == Self.layout)
            // The peer rewrites the header: a different queue size, then garbage.
            created.withUnsafeMutableBytes { raw in
                raw.storeBytes(
                    of: UInt16(4).littleEndian,
                    toByteOffset: RegionLayout.fixedHeaderByteCount,
                    as: UInt16.self
                )
            }
            #expect((try? created.validatedLayout())?.queues[0].size == 4)
            created.withUnsafeMutableBytes { raw in _ = raw[0..<16].initializeMemory(as: UInt8.self, repeating: 0xEE) }
            let notifiers = try EventNotifier.makePair()
            let driver = try DriverQueue(region: try created.file.map(), notifier: notifiers.driver)
            let device = try DeviceQueue(region: attached, notifier: notifiers.device)
            let (driverSize, deviceSize) = (driver.queueSize, device.queueSize)
            #expect(driverSize == 8)
            #expect(deviceSize == 8)
        }

        @Test func attachReadsTheHeaderTheCreatorWrote() throws {
            let region = try SharedMemoryRegion.create(layout: Self.layout)
            let attached = try SharedMemoryRegion.attach(try region.file.duplicateFileDescriptor())
            #expect(try attached.validatedLayout() == Self.layout)
            // Two mappings, one memory.
            region.withUnsafeMutableBytes { $0[Self.layout.dataAreaOffset] = 0xA5 }
            #expect(attached.withUnsafeMutableBytes { $0[Self.layout.dataAreaOffset] } == 0xA5)
        }

        /// The example in docs/wire-format.md §2.3, byte for byte.
        @Test func headerMatchesTheDocumentedExample() throws {
            let region = try SharedMemoryRegion.create(layout: Self.layout)
            let expected: [Int: [UInt8]] = [
                0x00: [0x53, 0x57, 0x49, 0x46, 0x54, 0x56, 0x51, 0x00, 0x02, 0x00, 0x01, 0x00, 0x60, 0x00, 0x00, 0x00],
                0x10: [0x00, 0x00, 0x00, 0x30, 0x01, 0x00, 0x00, 0x00, 0xC0, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
                0x20: [0xC0, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
                0x30: [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
                0x40: [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
                0x50: [0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            ]
            for (offset, bytes) in expected {
                let actual = region.withUnsafeMutableBytes { Array($0[offset..<offset + bytes.count]) }
                #expect(actual == bytes, "bytes at 0x\(String(offset, radix: 16))")
            }
        }

        @Test func attachRefusesAFileWithoutShrinkSeal() throws {
            // A memfd created without MFD_ALLOW_SEALING carries F_SEAL_SEAL and nothing else.
            let unsealed = vq_memfd_create("unsealed", VQ_MFD_CLOEXEC)
            try #require(unsealed >= 0)
            #expect(ftruncate(unsealed, 8192) == 0)
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryRegion.attach(FileDescriptor(rawValue: unsealed))
            }
            #expect(error?.code == .regionNotSealed)
            // The descriptor was closed on failure.
            #expect(fcntl(unsealed, F_GETFD) == -1)
        }

        @Test func attachRefusesAFileThatCannotBeSealed() throws {
            var template = Array("/tmp/vq-plain-XXXXXX".utf8CString)
            let fd = mkstemp(&template)
            try #require(fd >= 0)
            unlink(template)
            #expect(ftruncate(fd, 8192) == 0)
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryRegion.attach(FileDescriptor(rawValue: fd))
            }
            #expect(error?.code == .regionNotSealed)
        }

        @Test func attachRefusesSomethingThatIsNotAFile() throws {
            var pipe: [CInt] = [-1, -1]
            try #require(Glibc.pipe(&pipe) == 0)
            defer { close(pipe[1]) }
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryRegion.attach(FileDescriptor(rawValue: pipe[0]))
            }
            #expect(error?.code == .regionNotSealed)
        }

        @Test func attachRefusesAnEmptySealedFile() throws {
            let fd = vq_memfd_create("empty", VQ_MFD_CLOEXEC | VQ_MFD_ALLOW_SEALING)
            try #require(fd >= 0)
            #expect(vq_add_seals(fd, VQ_SEAL_SHRINK | VQ_SEAL_GROW) == 0)
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryRegion.attach(FileDescriptor(rawValue: fd))
            }
            #expect(error?.code == .regionTooSmall)
        }

        @Test(arguments: [
            (0x00, UInt64(0x0051_5654_4649_5754)),  // magic off by one
            (0x08, UInt64(2)),  // version 2 (the u16 at 0x08; upper bytes overwrite queue count and header size)
            (0x18, UInt64(1 << 40)),  // region size past the file's end
            (0x20, UInt64(0x1_0000)),  // data area past the region
            (0x48, UInt64(0x1_0000_0000)),  // queue 0's descriptor table far past the end
        ])
        func attachRefusesAMalformedHeader(offset: Int, value: UInt64) throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let writer = try file.map()
            writer.withUnsafeMutableBytes {
                $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
            }
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryRegion.attach(try file.duplicateFileDescriptor())
            }
            #expect(error?.code == .invalidHeader)
            #expect(error?.virtqueueError?.code == .invalidHeader)
        }

        @Test func sharedMemoryObjectFallbackIsUnsealedAndRefusedUnlessAllowed() throws {
            let file = try SharedMemoryFile.create(
                byteCount: Self.layout.regionSize,
                name: "vq-test",
                kind: .sharedMemoryObject
            )
            #expect(!file.isSealed)
            try Self.layout.initialize(try file.map())
            let refused = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryRegion.attach(try file.duplicateFileDescriptor())
            }
            #expect(refused?.code == .regionNotSealed)
            let attached = try SharedMemoryRegion.attach(try file.duplicateFileDescriptor(), requireSeals: false)
            #expect(try attached.validatedLayout() == Self.layout)
        }

        @Test func createRefusesANonPositiveSize() {
            let error = #expect(throws: SharedMemoryError.self) { _ = try SharedMemoryFile.create(byteCount: 0) }
            #expect(error?.code == .invalidArgument)
        }
    }
}
