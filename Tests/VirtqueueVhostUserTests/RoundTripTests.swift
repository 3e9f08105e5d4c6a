import Testing
import VirtqueueVhostUser

extension VhostUserTests {
    /// Encode, decode: every request and reply payload type comes back as it went.
    @Suite struct RoundTrip {
        @Test func headerBytesAreLittleEndianWithVersionOne() throws {
            let encoded = try VhostUserMessage.setFeatures(0x0102_0304_0506_0708).encode(needsReply: true)
            #expect(encoded.bytes == le(UInt32(2), UInt32(0x9), UInt32(8), UInt64(0x0102_0304_0506_0708)))
            let header = try VhostUserHeader.decode(encoded.bytes)
            #expect(header.request == .setFeatures)
            #expect(header.needsReply)
            #expect(!header.isReply)
            #expect(header.payloadSize == 8)
        }

        @Test(arguments: [
            VhostUserMessage.getFeatures, .setOwner, .resetOwner, .getProtocolFeatures, .getQueueNum,
            .resetDevice, .getMaxMemorySlots, .getStatus,
        ])
        func emptyRequests(_ message: VhostUserMessage) throws {
            let decoded = try roundTrip(message)
            #expect(decoded.message.request == message.request)
            #expect(decoded.header.payloadSize == 0)
        }

        @Test func u64Payloads() throws {
            guard case .setFeatures(let features) = try roundTrip(.setFeatures(1 << 32 | 1 << 30)).message else {
                Issue.record("not setFeatures")
                return
            }
            #expect(features == 1 << 32 | 1 << 30)
            let protocolFeatures: VhostUserProtocolFeatures = [
                .multipleQueues, .replyAck, .config, .inflightSharedMemory,
            ]
            guard case .setProtocolFeatures(let back) = try roundTrip(.setProtocolFeatures(protocolFeatures)).message
            else {
                Issue.record("not setProtocolFeatures")
                return
            }
            #expect(back == protocolFeatures)
            #expect(back.description == "MQ|REPLY_ACK|CONFIG|INFLIGHT_SHMFD")
            guard case .setStatus(let status) = try roundTrip(.setStatus(0x0F)).message else {
                Issue.record("not setStatus")
                return
            }
            #expect(status == 0x0F)
            guard case .netSetMTU(let mtu) = try roundTrip(.netSetMTU(1500)).message else {
                Issue.record("not netSetMTU")
                return
            }
            #expect(mtu == 1500)
            guard case .sendRARP(let mac) = try roundTrip(.sendRARP(0x5254_0012_3456)).message else {
                Issue.record("not sendRARP")
                return
            }
            #expect(mac == 0x5254_0012_3456)
        }

        @Test func vringStates() throws {
            let state = VhostUserVringState(index: 1, num: 256)
            for message in [
                VhostUserMessage.setVringNum(state), .setVringBase(state), .getVringBase(state),
                .setVringEnable(VhostUserVringState(index: 1, num: 1)),
                .setVringEndian(VhostUserVringState(index: 0, num: 1)),
                .vringKick(VhostUserVringState(index: 1, num: 0)),
            ] {
                let decoded = try roundTrip(message)
                #expect(decoded.message.request == message.request)
                switch (decoded.message, message) {
                case (.setVringNum(let a), .setVringNum(let b)), (.setVringBase(let a), .setVringBase(let b)),
                    (.getVringBase(let a), .getVringBase(let b)), (.setVringEnable(let a), .setVringEnable(let b)),
                    (.setVringEndian(let a), .setVringEndian(let b)), (.vringKick(let a), .vringKick(let b)):
                    #expect(a == b)
                default: Issue.record("\(decoded.message) is not \(message)")
                }
            }
        }

        @Test func vringAddress() throws {
            let address = VhostUserVringAddress(
                index: 1,
                flags: VhostUserVringAddress.logFlag,
                descriptor: 0x7f00_0000_1000,
                used: 0x7f00_0000_3000,
                available: 0x7f00_0000_2000,
                log: 0x4000
            )
            let encoded = try VhostUserMessage.setVringAddress(address).encode()
            #expect(encoded.bytes.count == 12 + 40)
            guard case .setVringAddress(let back) = try roundTrip(.setVringAddress(address)).message else {
                Issue.record("not setVringAddress")
                return
            }
            #expect(back == address)
        }

        @Test func memoryTable() throws {
            let regions = [
                VhostUserMemoryRegion(
                    guestPhysicalAddress: 0,
                    size: 0xA_0000,
                    userAddress: 0x7f00_0000_0000,
                    mmapOffset: 0
                ),
                VhostUserMemoryRegion(
                    guestPhysicalAddress: 0x10_0000,
                    size: 0x0FF0_0000,
                    userAddress: 0x7f00_0010_0000,
                    mmapOffset: 0x10_0000
                ),
            ]
            let table = VhostUserMemoryTable(regions: regions, fileDescriptors: [.placeholder(), .placeholder()])
            let encoded = try VhostUserMessage.setMemoryTable(table).encode()
            #expect(encoded.bytes.count == 12 + 8 + 2 * 32)
            #expect(encoded.fileDescriptors.count == 2)
            guard case .setMemoryTable(let back) = try roundTrip(.setMemoryTable(table)).message else {
                Issue.record("not setMemoryTable")
                return
            }
            #expect(back.regions == regions)
            #expect(back.fileDescriptors.count == 2)
        }

        @Test func fullMemoryTableOfEightRegions() throws {
            let regions = (0..<8).map { index in
                VhostUserMemoryRegion(
                    guestPhysicalAddress: UInt64(index) << 30,
                    size: 1 << 30,
                    userAddress: 0x7f00_0000_0000 + UInt64(index) << 30,
                    mmapOffset: 0
                )
            }
            let table = VhostUserMemoryTable(regions: regions, fileDescriptors: regions.map { _ in .placeholder() })
            guard case .setMemoryTable(let back) = try roundTrip(.setMemoryTable(table)).message else {
                Issue.record("not setMemoryTable")
                return
            }
            #expect(back.regions == regions)
        }

        @Test func singleMemoryRegions() throws {
            let region = VhostUserMemoryRegion(
                guestPhysicalAddress: 0x1_0000_0000,
                size: 0x1000_0000,
                userAddress: 0x7f10_0000_0000,
                mmapOffset: 0x2000
            )
            let add = try VhostUserMessage.addMemoryRegion(region, .placeholder()).encode()
            #expect(add.bytes.count == 12 + 40)
            #expect(Array(add.bytes[12..<20]) == [UInt8](repeating: 0, count: 8))
            guard case .addMemoryRegion(let added, _) = try roundTrip(.addMemoryRegion(region, .placeholder())).message
            else {
                Issue.record("not addMemoryRegion")
                return
            }
            #expect(added == region)
            guard case .removeMemoryRegion(let removed) = try roundTrip(.removeMemoryRegion(region)).message else {
                Issue.record("not removeMemoryRegion")
                return
            }
            #expect(removed == region)
        }

        @Test func configSpaces() throws {
            let config = VhostUserConfigSpace(
                offset: 8,
                flags: VhostUserConfigSpace.migrationFlag,
                bytes: [1, 2, 3, 4]
            )
            guard case .setConfig(let set) = try roundTrip(.setConfig(config)).message else {
                Issue.record("not setConfig")
                return
            }
            #expect(set == config)
            let get = VhostUserConfigSpace(offset: 0, bytes: [UInt8](repeating: 0, count: 60))
            guard case .getConfig(let back) = try roundTrip(.getConfig(get)).message else {
                Issue.record("not getConfig")
                return
            }
            #expect(back == get)
            #expect(back.size == 60)
        }

        @Test func inflightDescriptions() throws {
            let request = VhostUserInflightDescription(queueCount: 2, queueSize: 256)
            let encoded = try VhostUserMessage.getInflightFileDescriptor(request).encode()
            #expect(encoded.bytes.count == 12 + 24)
            guard case .getInflightFileDescriptor(let back) = try roundTrip(.getInflightFileDescriptor(request)).message
            else {
                Issue.record("not getInflightFileDescriptor")
                return
            }
            #expect(back == request)
            let area = VhostUserInflightDescription(mmapSize: 8192, mmapOffset: 4096, queueCount: 1, queueSize: 128)
            guard
                case .setInflightFileDescriptor(let set, _) = try roundTrip(
                    .setInflightFileDescriptor(area, .placeholder())
                ).message
            else {
                Issue.record("not setInflightFileDescriptor")
                return
            }
            #expect(set == area)
        }

        @Test func logBase() throws {
            let log = VhostUserLogDescription(mmapSize: 0x1_0000, mmapOffset: 0x1000)
            guard case .setLogBase(let back, let fd) = try roundTrip(.setLogBase(log, .placeholder())).message else {
                Issue.record("not setLogBase")
                return
            }
            #expect(back == log)
            #expect(fd != nil)
            guard case .setLogFileDescriptor = try roundTrip(.setLogFileDescriptor(.placeholder())).message else {
                Issue.record("not setLogFileDescriptor")
                return
            }
            guard
                case .setBackendRequestFileDescriptor = try roundTrip(.setBackendRequestFileDescriptor(.placeholder()))
                    .message
            else {
                Issue.record("not setBackendRequestFileDescriptor")
                return
            }
        }

        @Test func vringFilesWithAndWithoutDescriptor() throws {
            let withFD = try VhostUserMessage.setVringKick(VhostUserVringFile(index: 1, fileDescriptor: .placeholder()))
                .encode()
            #expect(withFD.bytes == raw(.setVringKick, le(UInt64(1))))
            #expect(withFD.fileDescriptors.count == 1)
            let polling = try VhostUserMessage.setVringCall(VhostUserVringFile(index: 1, fileDescriptor: nil)).encode()
            #expect(polling.bytes == raw(.setVringCall, le(UInt64(0x101))))
            #expect(polling.fileDescriptors.isEmpty)
            for message in [
                VhostUserMessage.setVringKick(VhostUserVringFile(index: 1, fileDescriptor: .placeholder())),
                .setVringCall(VhostUserVringFile(index: 0, fileDescriptor: nil)),
                .setVringError(VhostUserVringFile(index: 1, fileDescriptor: nil)),
            ] {
                let decoded = try roundTrip(message)
                switch (decoded.message, message) {
                case (.setVringKick(let a), .setVringKick(let b)), (.setVringCall(let a), .setVringCall(let b)),
                    (.setVringError(let a), .setVringError(let b)):
                    #expect(a.index == b.index)
                    #expect((a.fileDescriptor == nil) == (b.fileDescriptor == nil))
                default: Issue.record("\(decoded.message) is not \(message)")
                }
            }
        }

        @Test func repliesRoundTrip() throws {
            let limits = VhostUserLimits.test
            func back(_ reply: VhostUserReply, to request: VhostUserRequest) throws -> VhostUserReply {
                let encoded = try reply.encode(answering: request)
                let header = try VhostUserHeader.decode(encoded.bytes, isReply: true)
                #expect(header.isReply)
                #expect(header.request == request)
                let frame = try VhostUserFrame(
                    bytes: encoded.bytes,
                    fileDescriptors: encoded.fileDescriptors.map { _ in .placeholder() },
                    isReply: true,
                    limits: limits
                )
                return try frame.decodeReply(to: request, limits: limits)
            }
            guard case .u64(let features) = try back(.u64(1 << 30 | 1 << 32), to: .getFeatures) else {
                Issue.record("not u64")
                return
            }
            #expect(features == 1 << 30 | 1 << 32)
            guard case .u64(let status) = try back(.ack(success: false), to: .setVringAddress) else {
                Issue.record("not u64")
                return
            }
            #expect(status == 1)
            guard
                case .vringState(let state) = try back(
                    .vringState(VhostUserVringState(index: 1, num: 77)),
                    to: .getVringBase
                )
            else {
                Issue.record("not vringState")
                return
            }
            #expect(state == VhostUserVringState(index: 1, num: 77))
            let config = VhostUserConfigSpace(offset: 0, bytes: Array(0..<60))
            guard case .config(let configBack) = try back(.config(config), to: .getConfig) else {
                Issue.record("not config")
                return
            }
            #expect(configBack == config)
            guard
                case .config(let failed) = try back(.config(VhostUserConfigSpace(offset: 0, bytes: [])), to: .getConfig)
            else {
                Issue.record("not config")
                return
            }
            #expect(failed.bytes.isEmpty)
            let inflight = VhostUserInflightDescription(mmapSize: 4096, mmapOffset: 0, queueCount: 2, queueSize: 128)
            guard
                case .inflight(let inflightBack, _) = try back(
                    .inflight(inflight, .placeholder()),
                    to: .getInflightFileDescriptor
                )
            else {
                Issue.record("not inflight")
                return
            }
            #expect(inflightBack == inflight)
        }

        @Test func requestNumbersMatchTheSpecification() {
            let expected: [(VhostUserRequest, UInt32, String)] = [
                (.getFeatures, 1, "GET_FEATURES"), (.setFeatures, 2, "SET_FEATURES"), (.setOwner, 3, "SET_OWNER"),
                (.resetOwner, 4, "RESET_OWNER"), (.setMemoryTable, 5, "SET_MEM_TABLE"),
                (.setLogBase, 6, "SET_LOG_BASE"),
                (.setLogFileDescriptor, 7, "SET_LOG_FD"), (.setVringNum, 8, "SET_VRING_NUM"),
                (.setVringAddress, 9, "SET_VRING_ADDR"), (.setVringBase, 10, "SET_VRING_BASE"),
                (.getVringBase, 11, "GET_VRING_BASE"), (.setVringKick, 12, "SET_VRING_KICK"),
                (.setVringCall, 13, "SET_VRING_CALL"), (.setVringError, 14, "SET_VRING_ERR"),
                (.getProtocolFeatures, 15, "GET_PROTOCOL_FEATURES"),
                (.setProtocolFeatures, 16, "SET_PROTOCOL_FEATURES"),
                (.getQueueNum, 17, "GET_QUEUE_NUM"), (.setVringEnable, 18, "SET_VRING_ENABLE"),
                (.sendRARP, 19, "SEND_RARP"), (.netSetMTU, 20, "NET_SET_MTU"),
                (.setBackendRequestFileDescriptor, 21, "SET_BACKEND_REQ_FD"), (.iotlbMessage, 22, "IOTLB_MSG"),
                (.setVringEndian, 23, "SET_VRING_ENDIAN"), (.getConfig, 24, "GET_CONFIG"),
                (.setConfig, 25, "SET_CONFIG"),
                (.getInflightFileDescriptor, 31, "GET_INFLIGHT_FD"),
                (.setInflightFileDescriptor, 32, "SET_INFLIGHT_FD"),
                (.resetDevice, 34, "RESET_DEVICE"), (.vringKick, 35, "VRING_KICK"),
                (.getMaxMemorySlots, 36, "GET_MAX_MEM_SLOTS"), (.addMemoryRegion, 37, "ADD_MEM_REG"),
                (.removeMemoryRegion, 38, "REM_MEM_REG"), (.setStatus, 39, "SET_STATUS"),
                (.getStatus, 40, "GET_STATUS"),
                (.checkDeviceState, 43, "CHECK_DEVICE_STATE"),
            ]
            for (request, number, name) in expected {
                #expect(request.rawValue == number)
                #expect(request.description == name)
            }
            #expect(VhostUserRequest.allDefined.count == 43)
            #expect(VhostUserProtocolFeatures.status.rawValue == 1 << 16)
            #expect(VhostUserProtocolFeatures.configureMemorySlots.rawValue == 1 << 15)
            #expect(VhostUserProtocolFeatures.inflightSharedMemory.rawValue == 1 << 12)
        }
    }
}
