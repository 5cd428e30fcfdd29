import ClusterMetadata
import KafkaProtocol
import Logging

/// Hands out producer ids from blocks the controller allocates to this broker (AllocateProducerIds
/// semantics), so ids are unique across brokers without a controller round trip per producer.
public actor ProducerIdAllocator {
    let nodeId: NodeID
    let writer: any MetadataWriter
    let incarnation: @Sendable () async -> Int64?
    private var next: Int64 = 0
    private var end: Int64 = 0

    public init(nodeId: NodeID, writer: any MetadataWriter, incarnation: @escaping @Sendable () async -> Int64?) {
        self.nodeId = nodeId
        self.writer = writer
        self.incarnation = incarnation
    }

    public struct Unavailable: Error {
        public var code: KafkaErrorCode
    }

    /// A producer id never handed out before anywhere in the cluster.
    public func allocate() async throws(Unavailable) -> Int64 {
        if next >= end {
            guard let incarnation = await incarnation() else { throw Unavailable(code: .coordinatorNotAvailable) }
            let result: MetadataResult
            do {
                result = try await writer.writeWithIndex(.allocateProducerIds(brokerId: nodeId, incarnation: incarnation)).result
            } catch {
                throw Unavailable(code: .coordinatorNotAvailable)
            }
            // Another allocation may have completed while this one waited.
            if next < end { return take() }
            guard case .producerIds(let first, let count) = result else { throw Unavailable(code: .coordinatorNotAvailable) }
            next = first
            end = first + Int64(count)
        }
        return take()
    }

    private func take() -> Int64 {
        defer { next += 1 }
        return next
    }
}

/// InitProducerId for idempotent producers: a new producer id, or the same id with the next epoch
/// when a producer bumps its epoch (KIP-360). Transactions are not supported.
enum InitProducerId {
    static func handle(_ request: InitProducerIdRequest, version: Int16, allocator: ProducerIdAllocator) async -> InitProducerIdResponse {
        var response = InitProducerIdResponse()
        if request.transactionalId != nil {
            response.errorCode = KafkaErrorCode.transactionalIdAuthorizationFailed.rawValue
            return response
        }
        if request.producerId >= 0 {
            guard request.producerEpoch >= 0 else {
                response.errorCode = KafkaErrorCode.invalidRequest.rawValue
                return response
            }
            if request.producerEpoch < Int16.max - 1 {
                response.producerId = request.producerId
                response.producerEpoch = request.producerEpoch + 1
                return response
            }
            // The epoch is exhausted: continue under a new id, as Kafka does.
        }
        do {
            response.producerId = try await allocator.allocate()
            response.producerEpoch = 0
        } catch {
            response.errorCode = error.code.rawValue
        }
        return response
    }
}
