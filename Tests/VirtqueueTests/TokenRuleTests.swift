import Testing
import Virtqueue

/// One token rule: every call that takes a chain, a request or a used chain refuses one of
/// another queue of the same type with `notOwned`, naming both queues, touches nothing, breaks
/// neither queue, and leaves the owning queue working (docs/trust-model.md, "A token belongs to
/// its queue").
@Suite("A token belongs to its queue")
struct TokenRuleTests {
    /// Every call that takes a chain.
    enum ChainCall: String, CaseIterable, CustomTestStringConvertible {
        case appendReadable, appendReadableCopyingBuffer, appendReadableCopyingSequence, appendWritable
        case discard, submit

        var testDescription: String { rawValue }
        /// The name the error message gives the call.
        var name: String { rawValue.hasPrefix("appendReadable") ? "appendReadable" : rawValue }
    }

    /// Every call that takes a request.
    enum RequestCall: String, CaseIterable, CustomTestStringConvertible {
        case forEachReadable, forEachWritable, gather, scatter, complete
        var testDescription: String { rawValue }
    }

    /// Every call that takes a used chain.
    enum UsedChainCall: String, CaseIterable, CustomTestStringConvertible {
        case forEachSegment, copyWrittenBytes, free
        var testDescription: String { rawValue }
    }

    // MARK: Chains

    @Test(arguments: ChainCall.allCases)
    func aChainOfAnotherDriverQueueIsRefused(_ call: ChainCall) throws {
        var owner = try Pair()
        var other = try Pair()
        var chain = owner.driver.makeChain()
        try owner.driver.appendReadable(to: &chain, copying: Array("ping".utf8))
        var filled = false
        var caught: VirtqueueError?
        switch call {
        case .appendReadable, .appendReadableCopyingBuffer, .appendReadableCopyingSequence, .appendWritable:
            do {
                switch call {
                case .appendReadable:
                    try other.driver.appendReadable(to: &chain, count: 4) { _ in filled = true }
                case .appendReadableCopyingBuffer:
                    try withUnsafeBytes(of: UInt32(0x0909_0909)) { bytes throws(VirtqueueError) in
                        try other.driver.appendReadable(to: &chain, copying: bytes)
                    }
                case .appendReadableCopyingSequence:
                    try other.driver.appendReadable(to: &chain, copying: [9, 9, 9, 9])
                default:
                    try other.driver.appendWritable(to: &chain, capacity: 16)
                }
            } catch {
                caught = error
            }
            // The chain is unchanged and still its queue's to finish.
            let (segments, readable) = (chain.segmentCount, chain.readableByteCount)
            #expect(segments == 1)
            #expect(readable == 4)
            try owner.driver.appendWritable(to: &chain, capacity: 16)
            try owner.driver.submit(chain)
            try owner.serveAndExpectReply("PING")
        case .discard:
            do { try other.driver.discard(chain) } catch { caught = error }
        case .submit:
            do { try other.driver.submit(chain) } catch { caught = error }
        }
        Self.expectRefusal(caught, of: "chain", by: call.name)
        #expect(!filled, "the foreign append wrote into a buffer")
        // A refused chain that was consumed went back to its own queue's pool.
        let idleAfterRefusal = (owner.isIdle, other.isIdle)
        #expect(idleAfterRefusal == (true, true))
        #expect(try owner.roundTrip("owner") == "OWNER")
        #expect(try other.roundTrip("other") == "OTHER")
        let idleAtEnd = (owner.isIdle, other.isIdle)
        #expect(idleAtEnd == (true, true))
    }

    // MARK: Requests

    @Test(arguments: RequestCall.allCases)
    func aRequestOfAnotherDeviceQueueIsRefused(_ call: RequestCall) throws {
        var owner = try Pair()
        var other = try Pair()
        try owner.send("ping")
        try other.send("pong")
        let request = try owner.device.requireRequest()
        let otherRequest = try other.device.requireRequest()
        var caught: VirtqueueError?
        var bodyRan = false
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 1)
        defer { copy.deallocate() }
        copy.initializeMemory(as: UInt8.self, repeating: 0xEE)
        switch call {
        case .complete:
            do { try other.device.complete(request, written: 0) } catch { caught = error }
            // The refused request was consumed there, and completed on its own queue with 0 bytes
            // as it went: the owner's driver gets its chain back, empty.
            #expect(try owner.receive() == [])
        default:
            do {
                switch call {
                case .forEachReadable:
                    try other.device.forEachReadable(in: request) { _ in bodyRan = true }
                case .forEachWritable:
                    try other.device.forEachWritable(in: request) { bytes in
                        bodyRan = true
                        bytes.initializeMemory(as: UInt8.self, repeating: 0xEE)
                    }
                case .gather:
                    _ = try other.device.gather(request, into: copy)
                default:
                    _ = try other.device.scatter(UnsafeRawBufferPointer(copy), into: request)
                }
            } catch let error as VirtqueueError {
                caught = error
            } catch {
                Issue.record("unexpected error \(error)")
            }
            // The request is still its queue's: it reads, writes and completes there as before.
            try owner.serve(request)
            #expect(try owner.receive() == Array("PING".utf8))
        }
        Self.expectRefusal(caught, of: "request", by: call.rawValue)
        #expect(!bodyRan, "the foreign view called its body")
        #expect(copy.allSatisfy { $0 == 0xEE }, "the foreign gather copied bytes")
        // The queue that refused it keeps working: its own request completes as usual.
        try other.serve(otherRequest)
        #expect(try other.receive() == Array("PONG".utf8))
        let otherIdle = other.isIdle
        #expect(otherIdle)
        // The owning queue keeps working.
        #expect(try owner.roundTrip("owner") == "OWNER")
        #expect(try other.roundTrip("other") == "OTHER")
        let ownerIdle = owner.isIdle
        #expect(ownerIdle)
    }

    // MARK: Used chains

    @Test(arguments: UsedChainCall.allCases)
    func aUsedChainOfAnotherDriverQueueIsRefused(_ call: UsedChainCall) throws {
        var owner = try Pair()
        var other = try Pair()
        try owner.send("ping")
        try owner.serve(try owner.device.requireRequest())
        let used = try owner.driver.requireUsed()
        var caught: VirtqueueError?
        var bodyRan = false
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 1)
        defer { copy.deallocate() }
        copy.initializeMemory(as: UInt8.self, repeating: 0xEE)
        switch call {
        case .free:
            do { try other.driver.free(used) } catch { caught = error }
            // The used chain was consumed by the refusing call and gave its buffers back to its
            // own queue as it went: both pools are whole.
            let (free, count) = (other.driver.freeBufferCount, other.driver.bufferCount)
            #expect(free == count)
            let ownerIdle = owner.isIdle
            #expect(ownerIdle, "the refused used chain's buffers did not go back to its queue")
        default:
            do {
                if call == .forEachSegment {
                    try other.driver.forEachSegment(of: used) { _, _ in bodyRan = true }
                } else {
                    _ = try other.driver.copyWrittenBytes(of: used, into: copy)
                }
            } catch let error as VirtqueueError {
                caught = error
            } catch {
                Issue.record("unexpected error \(error)")
            }
            // The used chain is still its queue's: it reads and frees there as before.
            var reply: [UInt8] = []
            try owner.driver.forEachSegment(of: used) { isWritable, bytes in if isWritable { reply += bytes } }
            #expect(reply == Array("PING".utf8))
            try owner.driver.free(used)
            let ownerIdle = owner.isIdle
            #expect(ownerIdle)
        }
        Self.expectRefusal(caught, of: "used chain", by: call.rawValue)
        #expect(!bodyRan, "the foreign view called its body")
        #expect(copy.allSatisfy { $0 == 0xEE }, "the foreign copy copied bytes")
        // Both queues keep working.
        #expect(try owner.roundTrip("owner") == "OWNER")
        #expect(try other.roundTrip("other") == "OTHER")
        let otherIdle = other.isIdle
        #expect(otherIdle)
    }

    // MARK: Support

    /// The refusal every call makes: `notOwned`, a caller error, naming the token, the call and
    /// two different queues.
    static func expectRefusal(
        _ error: VirtqueueError?,
        of token: String,
        by call: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard let error else {
            Issue.record("\(call) accepted another queue's \(token)", sourceLocation: sourceLocation)
            return
        }
        #expect(error.code == .notOwned, "\(error)", sourceLocation: sourceLocation)
        #expect(!error.isPeerViolation, sourceLocation: sourceLocation)
        #expect(error.message.hasPrefix("\(token) of queue #"), "\(error.message)", sourceLocation: sourceLocation)
        #expect(
            error.message.contains(" passed to \(call) on queue #"),
            "\(error.message)",
            sourceLocation: sourceLocation
        )
        let queues = error.message.matches(of: /queue #([0-9]+)/).map { String($0.output.1) }
        #expect(queues.count == 2 && Set(queues).count == 2, "\(error.message)", sourceLocation: sourceLocation)
    }

    /// A driver and a device on one guarded region: the device upper-cases what it is sent.
    struct Pair: ~Copyable {
        var driver: DriverQueue<GuardedRegion, CountingNotifier>
        var device: DeviceQueue<GuardedRegion, CountingNotifier>
        let region: GuardedRegion

        init() throws {
            let layout = try RegionLayout(queueSizes: [4], dataAreaSize: 8 * 64, features: .all)
            let region = try GuardedRegion(layout: layout)
            let notifiers = CountingNotifier.makePair()
            let driver = try DriverQueue(region: region, notifier: notifiers.driver, bufferSize: 64)
            let device = try DeviceQueue(region: region, notifier: notifiers.device)
            self.driver = driver
            self.device = device
            self.region = region
        }

        /// Submits a chain holding `text` with 16 bytes of room for the reply.
        mutating func send(_ text: String) throws {
            var chain = driver.makeChain()
            try driver.appendReadable(to: &chain, copying: Array(text.utf8))
            try driver.appendWritable(to: &chain, capacity: 16)
            try driver.submit(chain)
        }

        /// Replies to `request` with its readable bytes upper-cased, and completes it.
        mutating func serve(_ request: consuming DeviceRequest) throws {
            var text: [UInt8] = []
            try device.forEachReadable(in: request) { text += $0 }
            let reply = text.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }
            let written = try reply.withUnsafeBytes { try device.scatter($0, into: request) }
            try device.complete(request, written: written)
        }

        /// Serves the next request and checks the reply the driver receives.
        mutating func serveAndExpectReply(_ expected: String) throws {
            try serve(try device.requireRequest())
            #expect(try receive() == Array(expected.utf8))
        }

        /// Takes the next used chain, copies what the device wrote, and frees it.
        mutating func receive() throws -> [UInt8] {
            let used = try driver.requireUsed()
            var reply = [UInt8](repeating: 0, count: used.writtenByteCount)
            _ = try reply.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
            try driver.free(used)
            return reply
        }

        /// Sends `text` and returns the device's reply.
        mutating func roundTrip(_ text: String) throws -> String {
            try send(text)
            try serve(try device.requireRequest())
            return String(decoding: try receive(), as: UTF8.self)
        }

        /// Neither end broken, nothing in flight or held, every buffer and descriptor free,
        /// nothing written outside the region.
        var isIdle: Bool {
            !driver.isBroken && !device.isBroken && driver.inFlightCount == 0 && device.takenCount == 0
                && driver.freeBufferCount == driver.bufferCount && driver.freeDescriptorCount == driver.queueSize
                && region.guardsIntact
        }
    }
}
