import Foundation

/// Whole structs: properties, initialisers and codec.
extension MessageContext {
    /// Emits one struct: properties, initialisers, codec and (for nested structs) the minimum-size helper.
    func emitStruct(_ structSpec: StructSpec, isTop: Bool, into w: inout CodeWriter) throws {
        let name = structSpec.name
        let valid = self.valid
        let inline = structSpec.fields.filter { !isTagged($0) }
        let tagged = structSpec.fields.filter { isTagged($0) }.sorted { ($0.tag ?? 0) < ($1.tag ?? 0) }

        for field in structSpec.fields {
            if let doc = docLine(field.about) { w.line(doc) }
            w.line("public var \(propertyName(field.name)): \(fieldType(field)) = \(try defaultExpression(field))")
        }
        w.line("/// Tagged fields this version of the schema does not know, kept for re-encoding.")
        w.line("public var unknownTaggedFields: [UnknownTaggedField] = []")
        w.line("")
        w.line("/// Every field at its schema default.")
        w.line("public init() {}")
        w.line("")

        // Decoder.
        w.line("/// Decodes the struct as written at `version`.")
        w.open("public init(from buffer: inout ByteBuffer, version: Int16) throws(ProtocolError)")
        if isTop {
            w.open("guard Self.validVersions.contains(version) else")
            w.line("throw .unsupportedVersion(apiKey: \(spec.apiKey ?? -1), version: version)")
            w.close()
        }
        declareFlexible(into: &w)
        for field in inline {
            let condition = versionCondition(field.versions, within: valid)
            if condition == "false" { continue }
            if condition != "true" { w.open("if \(condition)") }
            try emitDecode(field, owner: name, target: "self.\(propertyName(field.name))", buffer: "buffer", into: &w)
            if condition != "true" { w.close() }
        }
        if openFlexibleBlock(into: &w) {
        if tagged.isEmpty {
            w.line("self.unknownTaggedFields = try buffer.readUnknownTaggedFields()")
        } else {
            w.line("let tagCount: Int = try buffer.readTaggedFieldCount()")
            w.line("var previousTag: Int64 = -1")
            w.open("for _ in 0..<tagCount")
            w.line("var field: UnknownTaggedField = try buffer.readTaggedField(after: &previousTag)")
            w.line("switch field.tag {")
            for field in tagged {
                let tag = field.tag ?? 0
                let condition = versionCondition(field.taggedVersions, within: valid)
                w.line(condition == "true" ? "case \(tag):" : "case \(tag) where \(condition):")
                w.open("do")
                try emitDecode(field, owner: name, target: "self.\(propertyName(field.name))", buffer: "field.data", into: &w)
                w.open("guard field.data.readableBytes == 0 else")
                w.line("throw .invalidTaggedField(tag: \(tag))")
                w.close()
                w.close()
            }
            w.line("default:")
            w.line("    self.unknownTaggedFields.append(field)")
            w.line("}")
            w.close()
        }
        w.close()
        }
        w.close()
        w.line("")

        // Encoder.
        w.line("/// Encodes the struct at `version`.")
        w.open("public func encode(to buffer: inout ByteBuffer, version: Int16) throws(ProtocolError)")
        if isTop {
            w.open("guard Self.validVersions.contains(version) else")
            w.line("throw .unsupportedVersion(apiKey: \(spec.apiKey ?? -1), version: version)")
            w.close()
        }
        declareFlexible(into: &w)
        for field in inline {
            let condition = versionCondition(field.versions, within: valid)
            let value = "self.\(propertyName(field.name))"
            if condition == "true" {
                try emitEncode(field, owner: name, value: value, buffer: "buffer", into: &w)
                continue
            }
            if condition != "false" {
                w.open("if \(condition)")
                try emitEncode(field, owner: name, value: value, buffer: "buffer", into: &w)
                if !field.ignorable {
                    w.reopen("else if !(\(try isDefaultExpression(field, value: value)))")
                    w.line("throw .fieldNotRepresentable(field: \(fieldLabel(name, field)), version: version)")
                }
                w.close()
            } else if !field.ignorable {
                w.open("if !(\(try isDefaultExpression(field, value: value)))")
                w.line("throw .fieldNotRepresentable(field: \(fieldLabel(name, field)), version: version)")
                w.close()
            }
        }
        for field in tagged where !field.ignorable {
            let condition = versionCondition(field.taggedVersions, within: valid)
            if condition == "true" { continue }
            let value = "self.\(propertyName(field.name))"
            w.open(condition == "false" ? "if !(\(try isDefaultExpression(field, value: value)))" : "if !(\(condition)) && !(\(try isDefaultExpression(field, value: value)))")
            w.line("throw .fieldNotRepresentable(field: \(fieldLabel(name, field)), version: version)")
            w.close()
        }
        if openFlexibleBlock(into: &w) {
        if tagged.isEmpty {
            w.line("try buffer.writeTaggedFields([], unknown: self.unknownTaggedFields)")
        } else {
            w.line("var tagged: [UnknownTaggedField] = []")
            for field in tagged {
                let tag = field.tag ?? 0
                let condition = versionCondition(field.taggedVersions, within: valid)
                let value = "self.\(propertyName(field.name))"
                let check = "!(\(try isDefaultExpression(field, value: value)))"
                w.open(condition == "true" ? "if \(check)" : "if \(condition) && \(check)")
                w.line("var payload: ByteBuffer = ByteBuffer()")
                try emitEncode(field, owner: name, value: value, buffer: "payload", into: &w)
                w.line("tagged.append(UnknownTaggedField(tag: \(tag), data: payload))")
                w.close()
            }
            w.line("try buffer.writeTaggedFields(tagged, unknown: self.unknownTaggedFields)")
        }
        w.close()
        }
        w.close()

        if !isTop {
            w.line("")
            w.line("/// The fewest bytes one encoded element can take at `version`; bounds array counts read off the wire.")
            w.open("static func minimumEncodedSize(version: Int16) -> Int")
            var sizes: [(Int, Int)] = []
            for version in valid {
                sizes.append((version, try structMinimumSize(name, version: version)))
            }
            // Runs of equal sizes, newest first, become `if version >= start` returns.
            var index = sizes.count - 1
            while index > 0 {
                let size = sizes[index].1
                var start = index
                while start > 0 && sizes[start - 1].1 == size { start -= 1 }
                if start == 0 { break }
                w.line("if version >= \(sizes[start].0) { return \(size) }")
                index = start - 1
            }
            w.line("return \(sizes[Swift.max(index, 0)].1)")
            w.close()
        }
    }
}
