import Virtqueue

extension VhostUserSession {
    /// The ring starts-disabled rule: with VHOST_USER_F_PROTOCOL_FEATURES acked, a ring waits for
    /// SET_VRING_ENABLE 1; without it, a ring is enabled from the start.
    func isEnabled(_ index: Int) -> Bool {
        rings[index].enabled ?? ((features ?? 0) & VhostUserProtocolFeatures.virtioFeatureBit == 0)
    }

    /// Starts ring `index` if it has all it needs and is not running: builds its placement
    /// (the addresses translated to guest-physical, the cursor from SET_VRING_BASE and the
    /// ring's `used.idx`), its ``Virtqueue/DeviceQueue`` on the shared memory, and its thread.
    ///
    /// - Throws: ``VhostUserError`` naming why the ring cannot start; the request that asked
    ///   for it is then refused.
    mutating func startIfReady(_ index: Int) throws(VhostUserError) {
        let ring = rings[index]
        guard ring.runner == nil, let size = ring.size, let address = ring.address, let base = ring.base,
            isEnabled(index)
        else { return }
        let kick: VhostUserFileDescriptor?
        switch ring.kick {
        case .unset: return
        case .polling: kick = nil
        case .eventfd(let descriptor): kick = descriptor
        }
        guard let memory else {
            throw VhostUserError(.invalidState, "queue \(index) cannot start: there is no memory table")
        }
        let format = ringFormat
        let ringFeatures = Features(rawValue: (features ?? 0) & ~VhostUserProtocolFeatures.virtioFeatureBit)
        let areas = try ringAreas(address, queue: index, size: size, in: memory)
        let queue: VhostUserDeviceQueue
        let placement: QueuePlacement
        var journal: InflightQueue?
        var resubmit: [UInt16] = []
        do {
            var cursor = try VhostUserVringBase.decode(
                base,
                format: format,
                size: size,
                context: "SET_VRING_BASE: queue \(index)"
            )
            if format == .split {
                // used.idx is the front-end's (the guest's) memory: read once, then checked with
                // the placement (at most N entries between the cursor's indices).
                cursor.nextUsed = try memory.withBytes(
                    at: areas[2] &+ UInt64(SplitRingFields.usedIndex),
                    count: 2
                ) { bytes in UInt16(littleEndian: bytes.loadUnaligned(as: UInt16.self)) }
            }
            if let inflight, format == .packed {
                // No packed inflight record (docs/vhost-user.md, "The packed ring"). A fresh area
                // is left as it is; one kept from an earlier back-end means a reconnect, whose
                // base QEMU cannot know for a packed ring: refused rather than served from a
                // stale position.
                guard inflightCreatedHere else {
                    throw VhostUserError(
                        .invalidInflightArea,
                        "queue \(index): a packed ring cannot be resumed after its back-end went away "
                            + "(SET_INFLIGHT_FD without GET_INFLIGHT_FD): this back-end keeps no packed inflight "
                            + "record, and the front-end cannot restore a packed ring's positions"
                    )
                }
                log(
                    .notice,
                    "the packed ring runs without inflight tracking: the area (\(inflight.description.mmapSize) bytes) "
                        + "is left as it is",
                    queue: index
                )
            } else if let inflight {
                // The inflight record knows better than SET_VRING_BASE what a previous back-end
                // took: resume from it.
                var record = try inflight.queue(index, size: size)
                let resumption = try record.resume(usedIndex: cursor.nextUsed, queue: index)
                cursor = resumption.cursor
                resubmit = resumption.heads
                if ringFeatures.contains(.inOrder), !resubmit.isEmpty {
                    resubmit = try inOrderResubmission(
                        resubmit,
                        usedIndex: cursor.nextUsed,
                        availableRing: areas[1],
                        size: size,
                        memory: memory,
                        queue: index
                    )
                }
                journal = record
                if !resubmit.isEmpty {
                    log(
                        .notice,
                        "resuming \(resubmit.count) requests a previous back-end left in flight "
                            + "(heads \(resubmit.map(String.init).joined(separator: ", ")))",
                        queue: index
                    )
                }
            }
            placement = QueuePlacement(
                format: format,
                size: size,
                descriptorArea: areas[0],
                driverArea: areas[1],
                deviceArea: areas[2],
                cursor: cursor,
                bufferArea: nil
            )
            try placement.validate()
            queue = try DeviceQueue(
                memory: memory,
                placement: placement,
                notifier: try notifier(kick: kick, call: ring.call),
                features: ringFeatures,
                supportedFeatures: Device.supportedFeatures,
                queueIndex: index
            )
        } catch let error as VirtqueueError {
            throw VhostUserError(.invalidRing, "queue \(index) cannot start: \(error)")
        } catch let error as VhostUserError {
            throw error
        } catch {
            throw VhostUserError(.invalidRing, "queue \(index) cannot start: \(error)")
        }
        let device: Device
        if let kept = ring.device {
            device = kept
        } else {
            do {
                let state = try shared ?? Device.makeSharedState(configuration: backend.configuration)
                shared = state
                device = try Device(configuration: backend.configuration, queue: index, shared: state)
            } catch {
                throw VhostUserError(.deviceFailed, "queue \(index): \(Device.name) could not be created: \(error)")
            }
        }
        rings[index].device = nil
        let runner = try RingRunner<Device>.start(
            index: index,
            startCursor: placement.cursor,
            format: format,
            queue: queue,
            device: device,
            error: ring.error,
            journal: journal,
            resubmit: resubmit,
            spins: backend.options.spins,
            log: backend.log
        )
        rings[index].runner = runner
        let names = format.areas(size: size).map(\.name)
        log(
            .info,
            "started: \(format) ring, size \(size), cursor \(placement.cursor), "
                + zip(names, areas).map { "\($0) \(hex($1))" }.joined(separator: ", ")
                + ", kick \(kick.map { "\($0)" } ?? "polled"), features \(ringFeatures)",
            queue: index
        )
    }

    /// Under VIRTIO_F_IN_ORDER, the order to serve again the `heads` a previous back-end left in
    /// flight: the order they were made available, which the device must use them in.
    ///
    /// The inflight record's counters are the dead back-end's word, in memory the front-end
    /// keeps (peer data): a back-end that took out of order, or a planted counter, would have the
    /// ring use them out of order, which an in-order driver refuses. The `k` heads in flight were
    /// taken from available positions `usedIndex` to `usedIndex + k - 1` (the device takes in
    /// order and has used everything before `usedIndex`), so those entries of the available
    /// ring — read once each — are the order. The marked heads must be exactly those entries.
    ///
    /// - Throws: ``VhostUserError/Code-swift.struct/invalidInflightArea`` naming the first marked
    ///   head that is not among them; what reading the ring throws.
    func inOrderResubmission(
        _ heads: [UInt16],
        usedIndex: UInt16,
        availableRing: UInt64,
        size: Int,
        memory: VhostUserMemory,
        queue index: Int
    ) throws(VhostUserError) -> [UInt16] {
        let mask = UInt16(truncatingIfNeeded: size - 1)
        let available: [UInt16]
        do {
            // Read once, into private memory: the entries at the positions in flight.
            available = try memory.withBytes(
                at: availableRing &+ UInt64(SplitRingFields.availableEntry(slot: 0)),
                count: 2 * size
            ) { ring in
                (0..<heads.count).map { offset in
                    let slot = Int((usedIndex &+ UInt16(truncatingIfNeeded: offset)) & mask)
                    return UInt16(littleEndian: ring.loadUnaligned(fromByteOffset: 2 * slot, as: UInt16.self))
                }
            }
        } catch {
            throw VhostUserError(.invalidRing, "queue \(index): the available ring cannot be read: \(error)")
        }
        // The marked heads are distinct (one flag each) and as many as the entries: if each is
        // among them, the entries are the marked heads in the order made available.
        // (A set: up to N heads, which a linear search per head would make N² work on resume.)
        let entries = Set(available)
        if let stray = heads.first(where: { !entries.contains($0) }) {
            let positions = "\(usedIndex)…\(usedIndex &+ UInt16(truncatingIfNeeded: heads.count - 1))"
            throw VhostUserError(
                .invalidInflightArea,
                "queue \(index): under IN_ORDER the \(heads.count) requests in flight are the available entries at "
                    + "positions \(positions) (heads \(available.map(String.init).joined(separator: ", "))), but the "
                    + "inflight record marks heads \(heads.map(String.init).joined(separator: ", ")) (head \(stray) differs)"
            )
        }
        return available
    }

    func notifier(kick: VhostUserFileDescriptor?, call: VhostUserFileDescriptor?) throws -> VhostUserEventNotifier {
        try VhostUserEventNotifier(waitingOn: kick, notifying: call)
    }

    /// Stops ring `index` if it runs: asks its thread to stop, waits for it, and keeps the
    /// cursor's available index as the ring's base and the device for the next start.
    ///
    /// - Returns: GET_VRING_BASE's number for where the ring stopped (``VhostUserVringBase``), or
    ///   `nil` if it was not running.
    /// - Throws: ``VhostUserError/Code-swift.struct/ringDidNotStop`` if the thread did not end
    ///   within the stop timeout (the session then closes the connection).
    mutating func stopRing(_ index: Int, reason: String) throws(VhostUserError) -> UInt32? {
        guard let runner = rings[index].runner else { return nil }
        guard let outcome = runner.stop(timeout: backend.options.stopTimeout) else {
            rings[index].runner = nil
            throw VhostUserError(
                .ringDidNotStop,
                "queue \(index): its thread did not stop within \(backend.options.stopTimeout) (\(reason)); "
                    + "it is abandoned"
            )
        }
        settle(index, outcome, reason: reason)
        return rings[index].base
    }

    /// Records how ring `index`'s thread ended.
    ///
    /// The log line counts the requests the ring completed in this run and in the whole
    /// connection: how a test learns that every queue carried requests.
    mutating func settle(_ index: Int, _ outcome: RingRunner<Device>.Outcome, reason: String) {
        rings[index].runner = nil
        rings[index].base = VhostUserVringBase.encode(outcome.cursor, format: outcome.format)
        rings[index].device = outcome.device
        let served = outcome.completed
        rings[index].served += served
        let count = "served \(served) requests in this run, \(rings[index].served) in this connection"
        if let failure = outcome.failure {
            log(.error, "stopped at cursor \(outcome.cursor) after a failure (\(count)): \(failure)", queue: index)
        } else {
            log(.info, "stopped at cursor \(outcome.cursor) (\(reason)); \(count)", queue: index)
        }
    }

    /// Collects the rings whose thread ended by itself (a ring violation, a device error), so
    /// they count as stopped.
    mutating func reapEndedRings() {
        for index in rings.indices {
            guard let runner = rings[index].runner, runner.hasEnded else { continue }
            if let outcome = runner.stop(timeout: .zero) {
                settle(index, outcome, reason: "it ended")
            } else {
                rings[index].runner = nil
            }
        }
    }

    /// Stops every ring (at the end of the connection).
    mutating func stopAllRings() {
        for index in rings.indices {
            do {
                _ = try stopRing(index, reason: "the connection ended")
            } catch {
                log(.error, "could not stop the ring", error: error, queue: index)
            }
        }
        memory = nil
    }
}
