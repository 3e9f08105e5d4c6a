extension VhostUserFrame {
    /// Decodes and validates the frame as a front-end request, treating every field as peer input.
    ///
    /// The checks, per request, in order: the payload's exact size; the number of file
    /// descriptors; then every field (queue indices below `limits.queueCount`, reserved bits,
    /// allowed values, memory regions and their overlaps, config accesses). The rules are listed
    /// in `docs/vhost-user.md`. A request type this layer does not decode becomes
    /// ``VhostUserMessage/unsupported(_:)``, not an error.
    ///
    /// - Returns: The header and the message; the message owns the descriptors it needs.
    /// - Throws: ``VhostUserError`` naming the offending value. Every descriptor of a refused
    ///   frame is closed (when the frame is dropped); so are those of an unsupported request.
    public consuming func decodeRequest(limits: VhostUserLimits) throws(VhostUserError) -> VhostUserDecodedRequest {
        let header = self.header
        var decoder = RequestDecoder(
            request: header.request,
            payload: payload,
            fileDescriptors: fileDescriptors,
            limits: limits
        )
        let message = try decoder.decode()
        return VhostUserDecodedRequest(header: header, message: message)
    }

    /// Decodes a whole message held in plain bytes as a request, with `fileDescriptorCount`
    /// placeholder descriptors: the entry point of a fuzz target (no socket, no descriptor is
    /// opened or closed).
    ///
    /// - Throws: ``VhostUserError`` for any message the layer refuses.
    public static func decodeRequest(
        bytes: [UInt8],
        fileDescriptorCount: Int,
        limits: VhostUserLimits
    ) throws(VhostUserError) -> VhostUserDecodedRequest {
        let placeholders = (0..<max(fileDescriptorCount, 0)).map { _ in VhostUserFileDescriptor.placeholder() }
        let frame = try VhostUserFrame(bytes: bytes, fileDescriptors: placeholders, limits: limits)
        return try frame.decodeRequest(limits: limits)
    }
}

/// The per-request rules of ``VhostUserFrame/decodeRequest(limits:)``.
private struct RequestDecoder {
    let request: VhostUserRequest
    let payload: [UInt8]
    var fileDescriptors: [VhostUserFileDescriptor]
    let limits: VhostUserLimits

    var context: String { request.description }

    mutating func decode() throws(VhostUserError) -> VhostUserMessage {
        switch request {
        case .getFeatures: try empty(); return .getFeatures
        case .setOwner: try empty(); return .setOwner
        case .resetOwner: try empty(); return .resetOwner
        case .getProtocolFeatures: try empty(); return .getProtocolFeatures
        case .getQueueNum: try empty(); return .getQueueNum
        case .resetDevice: try empty(); return .resetDevice
        case .getMaxMemorySlots: try empty(); return .getMaxMemorySlots
        case .getStatus: try empty(); return .getStatus
        case .setFeatures: return .setFeatures(try u64())
        case .setProtocolFeatures: return .setProtocolFeatures(VhostUserProtocolFeatures(rawValue: try u64()))
        case .sendRARP: return .sendRARP(try u64())
        case .netSetMTU:
            let mtu = try u64()
            guard mtu <= UInt64(UInt16.max) else {
                throw VhostUserError(.invalidValue, "\(context): MTU \(mtu) is above 65535")
            }
            return .netSetMTU(mtu)
        case .setStatus:
            let status = try u64()
            guard status <= 0xFF else {
                throw VhostUserError(.reservedBits, "\(context): device status \(hex(status)) has bits above bit 7")
            }
            return .setStatus(UInt8(status))
        case .setMemoryTable: return .setMemoryTable(try memoryTable())
        case .setLogBase:
            var reader = try fixed(VhostUserLogDescription.size)
            let descriptor = try optionalDescriptor()
            let log = VhostUserLogDescription.decode(&reader)
            let end = log.mmapOffset.addingReportingOverflow(log.mmapSize)
            guard !end.overflow, end.partialValue <= UInt64(Int64.max) else {
                throw VhostUserError(
                    .invalidValue,
                    "\(context): log mmap offset \(hex(log.mmapOffset)) + size \(hex(log.mmapSize)) is past 2^63 - 1"
                )
            }
            return .setLogBase(log, descriptor)
        case .setLogFileDescriptor:
            try checkSize(0)
            return .setLogFileDescriptor(try oneDescriptor())
        case .setBackendRequestFileDescriptor:
            try checkSize(0)
            return .setBackendRequestFileDescriptor(try oneDescriptor())
        case .setVringNum:
            let state = try vringState()
            guard state.num >= 1, state.num <= UInt32(VhostUserLimits.maxQueueSize) else {
                throw VhostUserError(
                    .invalidValue,
                    "\(context): queue \(state.index) size \(state.num) is not in 1...32768"
                )
            }
            return .setVringNum(state)
        case .setVringBase: return .setVringBase(try vringState())
        case .getVringBase: return .getVringBase(try vringState())
        case .setVringEnable: return .setVringEnable(try vringState(booleanNum: "enable flag"))
        case .setVringEndian: return .setVringEndian(try vringState(booleanNum: "endianness"))
        case .vringKick:
            let state = try vringState()
            guard state.num == 0 else {
                throw VhostUserError(
                    .reservedBits,
                    "\(context): queue \(state.index) num \(state.num) is reserved and must be 0"
                )
            }
            return .vringKick(state)
        case .setVringAddress:
            var reader = try fixed(VhostUserVringAddress.size)
            try noDescriptors()
            let address = VhostUserVringAddress.decode(&reader)
            try checkIndex(address.index)
            guard address.flags & ~VhostUserVringAddress.logFlag == 0 else {
                throw VhostUserError(
                    .reservedBits,
                    "\(context): queue \(address.index) flags 0x\(String(address.flags, radix: 16)) "
                        + "have bits other than LOG (0x1)"
                )
            }
            return .setVringAddress(address)
        case .setVringKick: return .setVringKick(try vringFile())
        case .setVringCall: return .setVringCall(try vringFile())
        case .setVringError: return .setVringError(try vringFile())
        case .getConfig:
            try noDescriptors()
            return .getConfig(
                try VhostUserConfigSpace.decode(payload, context, spaceSize: limits.configSpaceSize, allowEmpty: false)
            )
        case .setConfig:
            try noDescriptors()
            return .setConfig(
                try VhostUserConfigSpace.decode(payload, context, spaceSize: limits.configSpaceSize, allowEmpty: false)
            )
        case .getInflightFileDescriptor:
            var reader = try fixed(VhostUserInflightDescription.size)
            try noDescriptors()
            let inflight = VhostUserInflightDescription.decode(&reader)
            try inflight.validate(context, maxQueues: limits.queueCount, checkingArea: false)
            return .getInflightFileDescriptor(inflight)
        case .setInflightFileDescriptor:
            var reader = try fixed(VhostUserInflightDescription.size)
            let descriptor = try oneDescriptor()
            let inflight = VhostUserInflightDescription.decode(&reader)
            try inflight.validate(context, maxQueues: limits.queueCount, checkingArea: true)
            return .setInflightFileDescriptor(inflight, descriptor)
        case .addMemoryRegion:
            var reader = try fixed(8 + VhostUserMemoryRegion.size)
            let descriptor = try oneDescriptor()
            _ = reader.u64()
            let region = VhostUserMemoryRegion.decode(&reader)
            try region.validate(context)
            return .addMemoryRegion(region, descriptor)
        case .removeMemoryRegion:
            var reader = try fixed(8 + VhostUserMemoryRegion.size)
            // The specification lets a back-end accept one (useless) fd, for old front-ends; it is
            // closed here, without being used.
            _ = try optionalDescriptor()?.close()
            _ = reader.u64()
            let region = VhostUserMemoryRegion.decode(&reader)
            try region.validate(context, checkingMmapOffset: false)
            return .removeMemoryRegion(region)
        default:
            fileDescriptors.removeAll()
            return .unsupported(request)
        }
    }

    // MARK: Sizes and descriptors

    func checkSize(_ size: Int) throws(VhostUserError) {
        guard payload.count == size else {
            throw VhostUserError(
                .invalidPayloadSize,
                "\(context): the payload must be \(size) bytes; it is \(payload.count)"
            )
        }
    }

    func fixed(_ size: Int) throws(VhostUserError) -> ByteReader {
        try checkSize(size)
        return ByteReader(payload)
    }

    func checkDescriptorCount(_ expected: String, _ allowed: ClosedRange<Int>) throws(VhostUserError) {
        guard allowed.contains(fileDescriptors.count) else {
            throw VhostUserError(
                .fileDescriptorCount,
                "\(context): \(fileDescriptors.count) file descriptors came; it takes \(expected)"
            )
        }
    }

    func noDescriptors() throws(VhostUserError) {
        try checkDescriptorCount("none", 0...0)
    }

    mutating func oneDescriptor() throws(VhostUserError) -> VhostUserFileDescriptor {
        try checkDescriptorCount("exactly 1", 1...1)
        return fileDescriptors.removeFirst()
    }

    mutating func optionalDescriptor() throws(VhostUserError) -> VhostUserFileDescriptor? {
        try checkDescriptorCount("0 or 1", 0...1)
        return fileDescriptors.isEmpty ? nil : fileDescriptors.removeFirst()
    }

    func empty() throws(VhostUserError) {
        try checkSize(0)
        try noDescriptors()
    }

    func u64() throws(VhostUserError) -> UInt64 {
        var reader = try fixed(8)
        try noDescriptors()
        return reader.u64()
    }

    // MARK: Vring payloads

    func checkIndex(_ index: UInt32) throws(VhostUserError) {
        guard index < UInt32(limits.queueCount) else {
            throw VhostUserError(
                .queueIndexOutOfRange,
                "\(context): queue index \(index) is not below the queue count \(limits.queueCount)"
            )
        }
    }

    func vringState(booleanNum: String? = nil) throws(VhostUserError) -> VhostUserVringState {
        var reader = try fixed(VhostUserVringState.size)
        try noDescriptors()
        let state = VhostUserVringState.decode(&reader)
        try checkIndex(state.index)
        if let booleanNum, state.num > 1 {
            throw VhostUserError(
                .invalidValue,
                "\(context): queue \(state.index) \(booleanNum) \(state.num) is neither 0 nor 1"
            )
        }
        return state
    }

    mutating func vringFile() throws(VhostUserError) -> VhostUserVringFile {
        var reader = try fixed(8)
        let word = reader.u64()
        let noDescriptor = word & VhostUserVringFile.noFileDescriptorFlag != 0
        let descriptor: VhostUserFileDescriptor?
        if noDescriptor {
            try checkDescriptorCount("none (the no-fd flag is set)", 0...0)
            descriptor = nil
        } else {
            descriptor = try oneDescriptor()
        }
        let reserved = word & ~(VhostUserVringFile.indexMask | VhostUserVringFile.noFileDescriptorFlag)
        guard reserved == 0 else {
            throw VhostUserError(.reservedBits, "\(context): vring-file word \(hex(word)) has bits set above bit 8")
        }
        let index = UInt8(word & VhostUserVringFile.indexMask)
        try checkIndex(UInt32(index))
        return VhostUserVringFile(index: index, fileDescriptor: descriptor)
    }

    // MARK: Memory table

    func memoryTable() throws(VhostUserError) -> VhostUserMemoryTable {
        guard payload.count >= 8 else {
            throw VhostUserError(
                .invalidPayloadSize,
                "\(context): a memory table needs at least 8 bytes; the payload has \(payload.count)"
            )
        }
        var reader = ByteReader(payload)
        let count = reader.u32()
        _ = reader.u32()  // padding: no meaning; QEMU zeroes it, other front-ends may not
        guard count >= 1, count <= UInt32(VhostUserLimits.maxMemoryRegions) else {
            throw VhostUserError(
                .regionCount,
                "\(context): \(count) regions; a memory table has 1...\(VhostUserLimits.maxMemoryRegions)"
            )
        }
        let regionCount = Int(count)
        try checkSize(8 + regionCount * VhostUserMemoryRegion.size)
        try checkDescriptorCount("one per region (\(regionCount))", regionCount...regionCount)
        var regions: [VhostUserMemoryRegion] = []
        for index in 0..<regionCount {
            let region = VhostUserMemoryRegion.decode(&reader)
            try region.validate("\(context) region \(index)")
            regions.append(region)
        }
        try VhostUserMemoryTable.checkOverlaps(regions, context)
        return VhostUserMemoryTable(regions: regions, fileDescriptors: fileDescriptors)
    }
}
