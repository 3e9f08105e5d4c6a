import Virtqueue

/// What a check needs besides the backend: the configuration and the backend's name.
struct CheckContext: Sendable {
    let configuration: ConformanceSuite.Configuration
    let backendName: String

    var timeout: Duration { configuration.timeout }
}

/// A failed assertion inside a check; ``ConformanceSuite/run(_:on:)`` adds the check's name and
/// turns it into a ``ConformanceFailure``.
struct CheckFailure: Error, CustomStringConvertible {
    let message: String
    let fileID: String
    let line: Int

    init(_ message: String, fileID: String = #fileID, line: Int = #line) {
        self.message = message
        self.fileID = fileID
        self.line = line
    }

    var description: String { "\(message) (at \(fileID):\(line))" }
}

/// The backend says the check cannot apply to it; ``ConformanceSuite/run(_:on:)`` turns this
/// into a ``ConformanceResult`` with ``ConformanceResult/Outcome/notApplicable``.
struct NotApplicable: Error {
    let reason: String
}

/// Fails the check with `message` unless `condition` holds.
func expect(
    _ condition: Bool,
    _ message: @autoclosure () -> String,
    fileID: String = #fileID,
    line: Int = #line
) throws(CheckFailure) {
    if !condition { throw CheckFailure(message(), fileID: fileID, line: line) }
}

/// Runs one step of a check; an error it throws (other than a ``CheckFailure``) fails the check
/// with `step` named, at the caller's line.
func attempt<T: ~Copyable>(
    _ step: @autoclosure () -> String,
    fileID: String = #fileID,
    line: Int = #line,
    _ body: () throws -> T
) throws(CheckFailure) -> T {
    do {
        return try body()
    } catch let failure as CheckFailure {
        throw failure
    } catch {
        throw CheckFailure("\(step()) failed: \(error)", fileID: fileID, line: line)
    }
}

/// Runs `body`, which must throw a `VirtqueueError` with `code`; fails the check otherwise.
func expectError(
    _ code: VirtqueueError.Code,
    _ step: @autoclosure () -> String,
    fileID: String = #fileID,
    line: Int = #line,
    _ body: () throws -> Void
) throws(CheckFailure) -> VirtqueueError {
    do {
        try body()
    } catch let error as VirtqueueError {
        guard error.code == code else {
            throw CheckFailure(
                "\(step()): expected VirtqueueError.\(code), got \(error)",
                fileID: fileID,
                line: line
            )
        }
        return error
    } catch {
        throw CheckFailure("\(step()): expected VirtqueueError.\(code), got \(error)", fileID: fileID, line: line)
    }
    throw CheckFailure("\(step()): expected VirtqueueError.\(code), but it succeeded", fileID: fileID, line: line)
}

extension CheckContext {
    /// The ring format the check's queues run (``ConformanceSuite/Configuration/ringFormat``).
    var ringFormat: RingFormat { configuration.ringFormat }

    /// Makes the layout every check starts from, in the run's ring format and ordering (`features`
    /// plus RING_PACKED for the packed ring, plus IN_ORDER when
    /// ``ConformanceSuite/Configuration/inOrder`` is set), failing the check if the layout is
    /// invalid.
    func makeLayout(
        queueSize: Int,
        dataAreaSize: Int,
        features: Features,
        fileID: String = #fileID,
        line: Int = #line
    ) throws(CheckFailure) -> RegionLayout {
        var features = ringFormat == .packed ? features.union(.ringPacked) : features
        if configuration.inOrder { features.insert(.inOrder) }
        let name = "\(ringFormat)\(configuration.inOrder ? " in-order" : "")"
        return try attempt("making a \(name) layout for a queue of \(queueSize)", fileID: fileID, line: line) {
            try RegionLayout(queueSizes: [queueSize], dataAreaSize: dataAreaSize, features: features)
        }
    }
}

extension QueueEnds where Region: ~Copyable {
    /// Writes the layout's header through the driver's end.
    func initialize(_ layout: RegionLayout, fileID: String = #fileID, line: Int = #line) throws(CheckFailure) {
        try attempt("writing the region header through the driver's end", fileID: fileID, line: line) {
            try layout.initialize(driver.region)
        }
    }
}

extension Features {
    /// The two notification modes every notification check runs in.
    static let notificationModes: [Features] = [[.eventIndex, .indirectDescriptors], [.indirectDescriptors]]

    var modeName: String { contains(.eventIndex) ? "with EVENT_IDX" : "without EVENT_IDX" }
}

/// Attaches a driver queue, failing the check (at the caller's line) if the core refuses.
func attachDriver<Region: GuestMemory & ~Copyable, Notify: Notifier>(
    _ region: consuming Region,
    notifier: Notify,
    bufferSize: Int,
    indirectThreshold: Int = 16,
    fileID: String = #fileID,
    line: Int = #line
) throws(CheckFailure) -> DriverQueue<Region, Notify> {
    do {
        return try DriverQueue(
            region: region,
            notifier: notifier,
            bufferSize: bufferSize,
            indirectThreshold: indirectThreshold
        )
    } catch {
        throw CheckFailure("attaching the driver failed: \(error)", fileID: fileID, line: line)
    }
}

/// Attaches a device queue through the device's own end, failing the check (at the caller's
/// line) if the core refuses — for example because the device's end does not show the header
/// written through the driver's end.
func attachDevice<Region: GuestMemory & ~Copyable, Notify: Notifier>(
    _ region: consuming Region,
    notifier: Notify,
    supportedFeatures: Features = .all,
    fileID: String = #fileID,
    line: Int = #line
) throws(CheckFailure) -> DeviceQueue<Region, Notify> {
    do {
        return try DeviceQueue(region: region, notifier: notifier, supportedFeatures: supportedFeatures)
    } catch {
        throw CheckFailure(
            "attaching the device through its own end failed: \(error)",
            fileID: fileID,
            line: line
        )
    }
}
