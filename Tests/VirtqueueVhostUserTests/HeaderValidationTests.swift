import Testing
import VirtqueueVhostUser

extension VhostUserTests {
    /// Header rules: one test per rule, each planting one bad value.
    @Suite struct HeaderValidation {
        @Test func fewerThanTwelveBytesIsATruncatedHeader() {
            expectRefused(.truncatedHeader, Array(raw(.getFeatures).prefix(11)))
            expectRefused(.truncatedHeader, [])
        }

        @Test(arguments: [0, 2, 3, 0xA] as [UInt32])
        func versionOtherThanOneIsRefused(_ flags: UInt32) {
            expectRefused(.unsupportedVersion, raw(.getFeatures, flags: flags))
        }

        @Test(arguments: [0x10, 0x8000_0000, 0xFFFF_FFF1] as [UInt32])
        func reservedFlagBitsAreRefused(_ flags: UInt32) {
            expectRefused(.invalidFlags, raw(.getFeatures, flags: flags | 1))
        }

        @Test func replyFlagOnARequestIsRefused() {
            expectRefused(.invalidFlags, raw(.getFeatures, flags: 0x5))
        }

        @Test func replyWithoutReplyFlagOrWithNeedReplyIsRefused() {
            for flags: UInt32 in [0x1, 0x5 | 0x8] {
                do {
                    _ = try VhostUserHeader.decode(raw(.getFeatures, flags: flags, le(UInt64(0))), isReply: true)
                    Issue.record("accepted reply flags \(flags)")
                } catch {
                    #expect(error.code == .invalidFlags)
                }
            }
        }

        @Test func payloadSizeAboveTheBoundIsRefusedFromTheHeaderAlone() {
            // Only the header is given: the bound is checked before any payload is read.
            do {
                _ = try VhostUserHeader.decode(le(UInt32(24), UInt32(1), UInt32(4097)))
                Issue.record("accepted a 4097-byte payload")
            } catch {
                #expect(error.code == .payloadTooLarge)
                #expect(error.message.contains("4097"))
            }
            #expect(throws: Never.self) { try VhostUserHeader.decode(le(UInt32(24), UInt32(1), UInt32(4096))) }
        }

        @Test func sizeFieldDifferentFromTheBytesIsRefused() {
            expectRefused(.sizeMismatch, raw(.setFeatures, size: 8, le(UInt32(1))))
            expectRefused(.sizeMismatch, raw(.setFeatures, size: 4, le(UInt64(1))))
            expectRefused(.sizeMismatch, raw(.getFeatures, size: 0, [0]))
        }

        @Test func needReplyIsReported() throws {
            let decoded = try VhostUserFrame.decodeRequest(
                bytes: raw(.setOwner, flags: 0x9),
                fileDescriptorCount: 0,
                limits: .test
            )
            #expect(decoded.needsReply)
        }

        @Test func errorsNameTheOffendingValue() {
            do {
                _ = try VhostUserFrame.decodeRequest(
                    bytes: raw(.setVringNum, le(UInt32(7), UInt32(256))),
                    fileDescriptorCount: 0,
                    limits: .test
                )
                Issue.record("accepted queue 7")
            } catch {
                #expect(error.code == .queueIndexOutOfRange)
                #expect(error.message.contains("SET_VRING_NUM"))
                #expect(error.message.contains("7"))
                #expect(error.description.hasPrefix("VhostUserError.queueIndexOutOfRange: "))
            }
        }
    }
}
