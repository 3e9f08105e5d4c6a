import Testing
import VirtqueueVhostUser

extension VhostUserTests {
    /// Payload rules: one test per rule, each planting one bad value in an otherwise good message.
    @Suite struct PayloadValidation {
        // MARK: Sizes

        static let wrongSizes: [(VhostUserRequest, [UInt8])] = [
            (.getFeatures, le(UInt64(0))),
            (.setOwner, [0]),
            (.getQueueNum, le(UInt32(0))),
            (.setFeatures, le(UInt32(1))),
            (.setFeatures, le(UInt64(1), UInt8(0))),
            (.setProtocolFeatures, []),
            (.setStatus, le(UInt32(1))),
            (.setVringNum, le(UInt32(0))),
            (.setVringBase, le(UInt32(0), UInt32(0), UInt32(0))),
            (.setVringAddress, [UInt8](repeating: 0, count: 32)),
            (.setVringKick, le(UInt32(0))),
            (.setLogBase, le(UInt64(0))),
            (.getInflightFileDescriptor, [UInt8](repeating: 0, count: 20)),
            (.addMemoryRegion, regionBytes(0, 4096, 0)),
            (.removeMemoryRegion, le(UInt64(0)) + regionBytes(0, 4096, 0) + [0]),
            (.setLogFileDescriptor, le(UInt64(0))),
        ]

        @Test(arguments: wrongSizes)
        func payloadOfTheWrongSizeIsRefused(_ request: VhostUserRequest, _ payload: [UInt8]) {
            let fds = [.setLogFileDescriptor, .addMemoryRegion].contains(request) ? 1 : 0
            expectRefused(.invalidPayloadSize, raw(request, payload), fds: fds)
        }

        @Test func memoryTableSizeMustMatchItsRegionCount() {
            // Two regions announced, one present; and one announced, two present.
            expectRefused(
                .invalidPayloadSize,
                raw(.setMemoryTable, memoryTablePayload([regionBytes(0, 4096, 0)], count: 2)),
                fds: 2
            )
            expectRefused(
                .invalidPayloadSize,
                raw(
                    .setMemoryTable,
                    memoryTablePayload([regionBytes(0, 4096, 0), regionBytes(4096, 4096, 4096)], count: 1)
                ),
                fds: 1
            )
            expectRefused(.invalidPayloadSize, raw(.setMemoryTable, le(UInt32(1))), fds: 1)
        }

        // MARK: File descriptors

        static let takesNone: [[UInt8]] = [
            raw(.getFeatures),
            raw(.setFeatures, le(UInt64(0))),
            raw(.setVringNum, le(UInt32(0), UInt32(256))),
            raw(.setVringAddress, [UInt8](repeating: 0, count: 40)),
            raw(.getVringBase, le(UInt32(0), UInt32(0))),
            raw(.getConfig, le(UInt32(0), UInt32(4), UInt32(0), UInt32(0))),
            raw(.getInflightFileDescriptor, le(UInt64(0), UInt64(0), UInt16(1), UInt16(128), UInt32(0))),
        ]

        @Test(arguments: takesNone)
        func descriptorOnAMessageThatTakesNoneIsRefused(_ bytes: [UInt8]) {
            expectRefused(.fileDescriptorCount, bytes, fds: 1)
        }

        @Test func messageThatTakesOneDescriptorNeedsExactlyOne() {
            for fds in [0, 2] {
                expectRefused(.fileDescriptorCount, raw(.setLogFileDescriptor), fds: fds)
                expectRefused(.fileDescriptorCount, raw(.setBackendRequestFileDescriptor), fds: fds)
                expectRefused(
                    .fileDescriptorCount,
                    raw(.addMemoryRegion, le(UInt64(0)) + regionBytes(0, 4096, 0)),
                    fds: fds
                )
                expectRefused(
                    .fileDescriptorCount,
                    raw(.setInflightFileDescriptor, le(UInt64(4096), UInt64(0), UInt16(1), UInt16(128), UInt32(0))),
                    fds: fds
                )
            }
        }

        @Test func memoryTableNeedsOneDescriptorPerRegion() {
            let table = raw(
                .setMemoryTable,
                memoryTablePayload([regionBytes(0, 4096, 0), regionBytes(4096, 4096, 4096)])
            )
            for fds in [0, 1, 3] { expectRefused(.fileDescriptorCount, table, fds: fds) }
            #expect(throws: Never.self) { try accepted(table, fds: 2) }
        }

        @Test func vringKickWithoutTheNoFDFlagNeedsOneDescriptor() {
            expectRefused(.fileDescriptorCount, raw(.setVringKick, le(UInt64(1))), fds: 0)
            expectRefused(.fileDescriptorCount, raw(.setVringCall, le(UInt64(1))), fds: 2)
        }

        @Test func vringKickWithTheNoFDFlagTakesNoDescriptor() throws {
            expectRefused(.fileDescriptorCount, raw(.setVringKick, le(UInt64(0x101))), fds: 1)
            expectRefused(.fileDescriptorCount, raw(.setVringError, le(UInt64(0x100))), fds: 1)
            guard case .setVringCall(let file) = try accepted(raw(.setVringCall, le(UInt64(0x101)))) else {
                Issue.record("not setVringCall")
                return
            }
            #expect(file.index == 1)
            #expect(file.fileDescriptor == nil)
        }

        @Test func removeMemoryRegionAndLogBaseAcceptZeroOrOneDescriptorButNotTwo() {
            let message = raw(.removeMemoryRegion, le(UInt64(0)) + regionBytes(0, 4096, 0x1000))
            #expect(throws: Never.self) { try accepted(message, fds: 0) }
            #expect(throws: Never.self) { try accepted(message, fds: 1) }
            expectRefused(.fileDescriptorCount, message, fds: 2)
            let logBase = raw(.setLogBase, le(UInt64(4096), UInt64(0)))
            #expect(throws: Never.self) { try accepted(logBase, fds: 0) }
            #expect(throws: Never.self) { try accepted(logBase, fds: 1) }
            expectRefused(.fileDescriptorCount, logBase, fds: 2)
        }

        // MARK: Queue indices

        @Test func queueIndexAtOrAboveTheQueueCountIsRefused() {
            for index: UInt32 in [2, 255, 0xFFFF_FFFF] {
                expectRefused(.queueIndexOutOfRange, raw(.setVringNum, le(index, UInt32(256))))
                expectRefused(.queueIndexOutOfRange, raw(.setVringBase, le(index, UInt32(0))))
                expectRefused(.queueIndexOutOfRange, raw(.getVringBase, le(index, UInt32(0))))
                expectRefused(.queueIndexOutOfRange, raw(.setVringEnable, le(index, UInt32(1))))
                expectRefused(
                    .queueIndexOutOfRange,
                    raw(.setVringAddress, le(index, UInt32(0)) + [UInt8](repeating: 0, count: 32))
                )
            }
            expectRefused(.queueIndexOutOfRange, raw(.setVringKick, le(UInt64(2))), fds: 1)
            expectRefused(.queueIndexOutOfRange, raw(.setVringCall, le(UInt64(0x1FF))))
        }

        @Test func queueIndexIsCheckedAgainstTheLimitsGiven() throws {
            let limits = VhostUserLimits(queueCount: 256)
            #expect(throws: Never.self) { try accepted(raw(.setVringKick, le(UInt64(0x1FF))), limits: limits) }
            expectRefused(.queueIndexOutOfRange, raw(.setVringNum, le(UInt32(256), UInt32(8))), limits: limits)
        }

        // MARK: Reserved bits

        @Test func vringFileWordBitsAboveEightAreReserved() {
            expectRefused(.reservedBits, raw(.setVringKick, le(UInt64(0x200))), fds: 1)
            expectRefused(.reservedBits, raw(.setVringCall, le(UInt64(1) << 63 | 0x100)))
        }

        @Test func vringAddressFlagsOtherThanLogAreReserved() {
            expectRefused(
                .reservedBits,
                raw(.setVringAddress, le(UInt32(0), UInt32(0x2)) + [UInt8](repeating: 0, count: 32))
            )
        }

        @Test func deviceStatusAboveEightBitsIsReserved() {
            expectRefused(.reservedBits, raw(.setStatus, le(UInt64(0x100))))
        }

        @Test func inbandKickNumMustBeZero() {
            expectRefused(.reservedBits, raw(.vringKick, le(UInt32(0), UInt32(1))))
        }

        // MARK: Values

        @Test(arguments: [0, 32769, 0xFFFF_FFFF] as [UInt32])
        func queueSizeOutsideOneTo32768IsRefused(_ size: UInt32) {
            expectRefused(.invalidValue, raw(.setVringNum, le(UInt32(0), size)))
        }

        @Test func enableAndEndianFlagsMustBeZeroOrOne() {
            expectRefused(.invalidValue, raw(.setVringEnable, le(UInt32(0), UInt32(2))))
            expectRefused(.invalidValue, raw(.setVringEndian, le(UInt32(1), UInt32(2))))
        }

        @Test func mtuAbove65535IsRefused() {
            expectRefused(.invalidValue, raw(.netSetMTU, le(UInt64(65536))))
        }

        @Test func logAreaPastOffTIsRefused() {
            expectRefused(.invalidValue, raw(.setLogBase, le(UInt64(2), UInt64(Int64.max))), fds: 1)
        }

        @Test func inflightQueueCountAndSizeMustBeInRange() {
            func payload(_ size: UInt64, _ offset: UInt64, _ queues: UInt16, _ queueSize: UInt16) -> [UInt8] {
                le(size, offset, queues, queueSize, UInt32(0))
            }
            expectRefused(.invalidValue, raw(.getInflightFileDescriptor, payload(0, 0, 0, 128)))
            expectRefused(.invalidValue, raw(.getInflightFileDescriptor, payload(0, 0, 3, 128)))
            expectRefused(.invalidValue, raw(.getInflightFileDescriptor, payload(0, 0, 1, 0)))
            expectRefused(.invalidValue, raw(.getInflightFileDescriptor, payload(0, 0, 1, 32769)))
        }

        @Test func inflightAreaMustBeNonEmptyAndFitAnOffT() {
            func payload(_ size: UInt64, _ offset: UInt64) -> [UInt8] {
                le(size, offset, UInt16(1), UInt16(128), UInt32(0))
            }
            expectRefused(.invalidValue, raw(.setInflightFileDescriptor, payload(0, 0)), fds: 1)
            expectRefused(.invalidValue, raw(.setInflightFileDescriptor, payload(4096, UInt64.max - 100)), fds: 1)
            expectRefused(.invalidValue, raw(.setInflightFileDescriptor, payload(1, UInt64(Int64.max))), fds: 1)
        }

        // MARK: Memory regions

        @Test func memoryTableWithNoRegionsIsRefused() {
            expectRefused(.regionCount, raw(.setMemoryTable, memoryTablePayload([])))
        }

        @Test func memoryTableWithMoreThanEightRegionsIsRefused() {
            let regions = (0..<9).map { regionBytes(UInt64($0) << 20, 1 << 20, UInt64($0) << 20) }
            expectRefused(.regionCount, raw(.setMemoryTable, memoryTablePayload(regions)), fds: 9)
            expectRefused(.regionCount, raw(.setMemoryTable, memoryTablePayload([], count: 0xFFFF_FFFF)))
        }

        @Test func regionOfSizeZeroIsRefused() {
            expectRefused(.invalidRegion, raw(.setMemoryTable, memoryTablePayload([regionBytes(0, 0, 0)])), fds: 1)
            expectRefused(.invalidRegion, raw(.addMemoryRegion, le(UInt64(0)) + regionBytes(0, 0, 0)), fds: 1)
            expectRefused(.invalidRegion, raw(.removeMemoryRegion, le(UInt64(0)) + regionBytes(0, 0, 0)))
        }

        @Test func guestPhysicalRangeOverflowIsRefused() {
            let region = regionBytes(UInt64.max - 0xFFF, 0x2000, 0)
            expectRefused(.invalidRegion, raw(.setMemoryTable, memoryTablePayload([region])), fds: 1)
            expectRefused(.invalidRegion, raw(.removeMemoryRegion, le(UInt64(0)) + region))
            // The last byte at 2^64 - 1 is fine.
            #expect(throws: Never.self) {
                try accepted(
                    raw(.setMemoryTable, memoryTablePayload([regionBytes(UInt64.max - 0xFFF, 0x1000, 0)])),
                    fds: 1
                )
            }
        }

        @Test func userRangeOverflowIsRefused() {
            let region = regionBytes(0, 0x2000, UInt64.max - 0xFFF)
            expectRefused(.invalidRegion, raw(.setMemoryTable, memoryTablePayload([region])), fds: 1)
            expectRefused(.invalidRegion, raw(.addMemoryRegion, le(UInt64(0)) + region), fds: 1)
        }

        @Test func mmapOffsetPlusSizePastOffTIsRefused() {
            let overflow = regionBytes(0, 0x2000, 0, UInt64.max - 0xFFF)
            let pastOffT = regionBytes(0, 0x2000, 0, UInt64(Int64.max) - 0xFFF)
            expectRefused(.invalidRegion, raw(.setMemoryTable, memoryTablePayload([overflow])), fds: 1)
            expectRefused(.invalidRegion, raw(.setMemoryTable, memoryTablePayload([pastOffT])), fds: 1)
            expectRefused(.invalidRegion, raw(.addMemoryRegion, le(UInt64(0)) + overflow), fds: 1)
            // REM_MEM_REG ignores the offset, as the specification says.
            #expect(throws: Never.self) { try accepted(raw(.removeMemoryRegion, le(UInt64(0)) + overflow)) }
        }

        @Test func regionsOverlappingInGuestPhysicalSpaceAreRefused() {
            let regions = [regionBytes(0, 0x2000, 0x10_0000), regionBytes(0x1FFF, 0x1000, 0x20_0000)]
            expectRefused(.overlappingRegions, raw(.setMemoryTable, memoryTablePayload(regions)), fds: 2)
        }

        @Test func regionsOverlappingInUserSpaceAreRefused() {
            let regions = [regionBytes(0, 0x1000, 0x10_0000), regionBytes(0x10_0000, 0x1000, 0x10_0FFF)]
            expectRefused(.overlappingRegions, raw(.setMemoryTable, memoryTablePayload(regions)), fds: 2)
        }

        @Test func adjacentRegionsAreAccepted() throws {
            let regions = [
                regionBytes(0, 0x1000, 0x10_0000), regionBytes(0x1000, 0x1000, 0x10_1000),
                regionBytes(0x3000, 0x1000, 0x10_2000),
            ]
            guard
                case .setMemoryTable(let table) = try accepted(
                    raw(.setMemoryTable, memoryTablePayload(regions)),
                    fds: 3
                )
            else {
                Issue.record("not setMemoryTable")
                return
            }
            #expect(table.regions.count == 3)
            #expect(table.fileDescriptors.count == 3)
        }

        // MARK: Config space

        @Test func configAccessOfSizeZeroIsRefused() {
            expectRefused(.invalidConfigAccess, raw(.getConfig, le(UInt32(0), UInt32(0), UInt32(0))))
            expectRefused(.invalidConfigAccess, raw(.setConfig, le(UInt32(0), UInt32(0), UInt32(0))))
        }

        @Test func configAccessPastTheConfigSpaceIsRefused() {
            expectRefused(.invalidConfigAccess, raw(.setConfig, le(UInt32(57), UInt32(4), UInt32(0), UInt32(0))))
            expectRefused(
                .invalidConfigAccess,
                raw(.getConfig, le(UInt32(0xFFFF_FFFF), UInt32(1), UInt32(0)) + [0])
            )
            #expect(throws: Never.self) {
                try accepted(raw(.setConfig, le(UInt32(56), UInt32(4), UInt32(0), UInt32(0))))
            }
        }

        @Test func configFlagsOtherThanZeroOrOneAreRefused() {
            expectRefused(.invalidConfigAccess, raw(.setConfig, le(UInt32(0), UInt32(1), UInt32(2)) + [0]))
        }

        @Test func configPayloadMustBeTwelvePlusSize() {
            expectRefused(.invalidPayloadSize, raw(.setConfig, le(UInt32(0), UInt32(4), UInt32(0)) + [1, 2, 3]))
            expectRefused(.invalidPayloadSize, raw(.setConfig, le(UInt32(0), UInt32(4), UInt32(0)) + [1, 2, 3, 4, 5]))
            expectRefused(.invalidPayloadSize, raw(.getConfig, le(UInt32(0), UInt32(4))))
            expectRefused(.invalidPayloadSize, raw(.getConfig, le(UInt32(0), UInt32(0xFFFF_FFFF), UInt32(0))))
        }

        // MARK: Unsupported requests

        @Test(arguments: [0, 22, 26, 27, 28, 29, 30, 33, 41, 42, 43, 44, 1000, 0xFFFF_FFFF] as [UInt32])
        func unknownOrUndecodedRequestIsUnsupportedNotAnError(_ number: UInt32) throws {
            let message = try accepted(raw(number, [UInt8](repeating: 0xAB, count: 40)), fds: 3)
            guard case .unsupported(let request) = message else {
                Issue.record("\(number) decoded as \(message)")
                return
            }
            #expect(request.rawValue == number)
        }

        // MARK: Replies

        @Test func replyToAnotherRequestIsRefused() throws {
            let frame = try VhostUserFrame(
                bytes: raw(.getFeatures, flags: 0x5, le(UInt64(0))),
                fileDescriptors: [],
                isReply: true
            )
            do {
                _ = try frame.decodeReply(to: .getProtocolFeatures, limits: .test)
                Issue.record("accepted a reply to the wrong request")
            } catch {
                #expect(error.code == .unexpectedReply)
            }
        }

        @Test func replyPayloadsAreValidated() throws {
            func refused(
                _ code: VhostUserError.Code,
                _ request: VhostUserRequest,
                _ payload: [UInt8],
                fds: Int = 0
            ) throws {
                let frame = try VhostUserFrame(
                    bytes: raw(request, flags: 0x5, payload),
                    fileDescriptors: (0..<fds).map { _ in .placeholder() },
                    isReply: true
                )
                do {
                    let reply = try frame.decodeReply(to: request, limits: .test)
                    Issue.record("accepted \(reply)")
                } catch {
                    #expect(error.code == code, "\(error)")
                }
            }
            try refused(.invalidPayloadSize, .getFeatures, le(UInt32(0)))
            try refused(.fileDescriptorCount, .getFeatures, le(UInt64(0)), fds: 1)
            try refused(.queueIndexOutOfRange, .getVringBase, le(UInt32(2), UInt32(0)))
            try refused(.invalidConfigAccess, .getConfig, le(UInt32(60), UInt32(1), UInt32(0)) + [0])
            try refused(
                .fileDescriptorCount,
                .getInflightFileDescriptor,
                le(UInt64(4096), UInt64(0), UInt16(1), UInt16(8), UInt32(0))
            )
            try refused(
                .invalidValue,
                .getInflightFileDescriptor,
                le(UInt64(0), UInt64(0), UInt16(1), UInt16(8), UInt32(0)),
                fds: 1
            )
        }
    }
}
