import ClusterMetadata
import KafkaProtocol

extension AdminHandlers {
    /// DeleteTopics (v0-6): by name, and from v6 by topic id.
    public func deleteTopics(_ request: DeleteTopicsRequest, version: Int16) async -> DeleteTopicsResponse {
        typealias Entry = (name: String?, id: KafkaUUID)
        let entries: [Entry] = request.topicNames.map { ($0, KafkaUUID.zero) } + request.topics.map { ($0.name, $0.topicId) }
        var nameCounts: [String: Int] = [:]
        var idCounts: [KafkaUUID: Int] = [:]
        for entry in entries {
            if let name = entry.name, entry.id == .zero { nameCounts[name, default: 0] += 1 }
            if entry.name == nil, entry.id != .zero { idCounts[entry.id, default: 0] += 1 }
        }

        let state = await metadata.state
        var results: [DeleteTopicsResponse.DeletableTopicResult] = []
        var pendingSlots: [Int] = []
        var pendingNames: [String] = []
        var targeted: Set<String> = []
        func answer(_ name: String?, _ id: KafkaUUID, _ code: KafkaErrorCode, _ message: String?) {
            results.append(Self.deletedTopic(name, id, code.rawValue, message, version: version))
        }

        for entry in entries {
            let name: String
            let id: KafkaUUID
            switch (entry.name, entry.id == .zero) {
            case (nil, true):
                answer(nil, .zero, .invalidRequest, "Neither topic name nor id were specified.")
                continue
            case (.some(let given), false):
                answer(given, entry.id, .invalidRequest, "You may not specify both topic name and topic id.")
                continue
            case (nil, false):
                guard (idCounts[entry.id] ?? 0) == 1 else { continue }
                guard let topic = state.topic(id: entry.id) else {
                    answer(nil, entry.id, .unknownTopicId, "Topic id \(entry.id) does not exist.")
                    continue
                }
                name = topic.name
                id = entry.id
            case (.some(let given), true):
                guard (nameCounts[given] ?? 0) == 1 else { continue }
                name = given
                // A name the image does not know yet still goes to the controller, which has the last word.
                id = state.topics[given]?.topicId ?? .zero
            }
            guard targeted.insert(name).inserted else {
                answer(name, id, .invalidRequest, "The provided topic name maps to an ID that was already supplied.")
                continue
            }
            if state.topics[name]?.isInternal == true || Self.internalTopics[name] != nil {
                answer(name, id, .invalidRequest, "Topic \(name) is an internal topic and cannot be deleted.")
                continue
            }
            pendingSlots.append(results.count)
            pendingNames.append(name)
            results.append(Self.deletedTopic(name, id, 0, nil, version: version))
        }

        if !pendingNames.isEmpty {
            let outcome = await execute(.deleteTopics(names: pendingNames, now: now()), validateOnly: false, waitMs: request.timeoutMs)
            for (offset, result) in Self.itemResults(outcome, count: pendingNames.count).enumerated() {
                let slot = pendingSlots[offset]
                results[slot].errorCode = result.code
                results[slot].errorMessage = result.code == 0 ? nil : result.message
                if result.code == 0 { logger.info("deleted topic", metadata: ["topic": "\(pendingNames[offset])"]) }
            }
        }

        for name in nameCounts.keys.sorted() where (nameCounts[name] ?? 0) > 1 {
            answer(name, .zero, .invalidRequest, "Duplicate topic name.")
        }
        for id in idCounts.keys.sorted(by: { ($0.high, $0.low) < ($1.high, $1.low) }) where (idCounts[id] ?? 0) > 1 {
            answer(nil, id, .invalidRequest, "Duplicate topic id.")
        }
        var response = DeleteTopicsResponse()
        response.responses = results
        return response
    }

    static func deletedTopic(
        _ name: String?, _ id: KafkaUUID, _ code: Int16, _ message: String?, version: Int16
    ) -> DeleteTopicsResponse.DeletableTopicResult {
        var result = DeleteTopicsResponse.DeletableTopicResult()
        // Names are nullable only from v6, where a topic may be known by id alone.
        result.name = version >= 6 ? name : (name ?? "")
        if version >= 6 { result.topicId = id }
        result.errorCode = code
        result.errorMessage = message
        return result
    }
}
