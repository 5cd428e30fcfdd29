import Foundation

/// Decoding and encoding of one field at every version its spec allows.
extension MessageContext {
    func fieldLabel(_ owner: String, _ field: FieldSpec) -> String {
        swiftStringLiteral("\(owner).\(field.name)")
    }

    /// Statements decoding `field` from `buffer` into `target`.
    func emitDecode(_ field: FieldSpec, owner: String, target: String, buffer: String, into w: inout CodeWriter) throws {
        let flex = flexibleExpression(field)
        let nullable = nullableExpression(field)
        let optional = isOptional(field)
        let label = fieldLabel(owner, field)
        if let read = readScalar(field.type, buffer: buffer) {
            w.line("\(target) = \(read)")
            return
        }
        switch field.type {
        case .string:
            if optional {
                w.line("\(target) = try \(buffer).readKafkaString(compact: \(flex), nullable: \(nullable), field: \(label))")
            } else {
                w.line("\(target) = try \(buffer).readKafkaString(compact: \(flex), field: \(label))")
            }
        case .bytes, .records:
            if optional {
                w.line("\(target) = try \(buffer).readKafkaBytes(compact: \(flex), nullable: \(nullable), field: \(label))")
            } else {
                w.line("\(target) = try \(buffer).readKafkaBytes(compact: \(flex), field: \(label))")
            }
        case let .array(element):
            let elementType = swiftType(element)
            let minimum: String
            switch element {
            case let .structure(name): minimum = "\(name).minimumEncodedSize(version: version)"
            case .string: minimum = flex == "true" ? "1" : flex == "false" ? "2" : "(\(flex) ? 1 : 2)"
            case .bytes, .records: minimum = flex == "true" ? "1" : flex == "false" ? "4" : "(\(flex) ? 1 : 4)"
            default: minimum = String(try minimumSize(element, version: 0, flexible: false, nullable: false))
            }
            if optional {
                w.open("if let count: Int = try \(buffer).readArrayCount(compact: \(flex), minimumElementSize: \(minimum), nullable: \(nullable), field: \(label))")
            } else {
                w.open("do")
                w.line("let count: Int = try \(buffer).readArrayCount(compact: \(flex), minimumElementSize: \(minimum), field: \(label))")
            }
            w.line("var items: [\(elementType)] = []")
            // The count is already bounded by the input size; capping the up-front reservation also keeps a
            // garbage count that fails a few elements in from costing a large transient allocation.
            w.line("items.reserveCapacity(Swift.min(count, 1024))")
            w.open("for _ in 0..<count")
            let elementRead: String
            if let read = readScalar(element, buffer: buffer) {
                elementRead = read
            } else {
                switch element {
                case .string: elementRead = "try \(buffer).readKafkaString(compact: \(flex), field: \(label))"
                case .bytes, .records: elementRead = "try \(buffer).readKafkaBytes(compact: \(flex), field: \(label))"
                case let .structure(name): elementRead = "try \(name)(from: &\(buffer), version: version)"
                default: throw SchemaError("\(spec.name).\(field.name): nested arrays are not supported")
                }
            }
            w.line("let item: \(elementType) = \(elementRead)")
            w.line("items.append(item)")
            w.close()
            w.line("\(target) = items")
            if optional {
                w.reopen("else")
                w.line("\(target) = nil")
            }
            w.close()
        case let .structure(name):
            let read = "try \(name)(from: &\(buffer), version: version)"
            if !optional {
                w.line("\(target) = \(read)")
            } else if nullable == "true" {
                w.open("if try \(buffer).readStructPresence(field: \(label))")
                w.line("\(target) = \(read)")
                w.reopen("else")
                w.line("\(target) = nil")
                w.close()
            } else {
                w.open("if \(nullable)")
                w.open("if try \(buffer).readStructPresence(field: \(label))")
                w.line("\(target) = \(read)")
                w.reopen("else")
                w.line("\(target) = nil")
                w.close()
                w.reopen("else")
                w.line("\(target) = \(read)")
                w.close()
            }
        default:
            throw SchemaError("\(spec.name).\(field.name): unhandled type")
        }
    }

    /// Statements encoding `value` (the field's current value) into `buffer`.
    func emitEncode(_ field: FieldSpec, owner: String, value: String, buffer: String, into w: inout CodeWriter) throws {
        let flex = flexibleExpression(field)
        let nullable = nullableExpression(field)
        let optional = isOptional(field)
        let label = fieldLabel(owner, field)
        if let write = writeScalar(field.type, value: value, buffer: buffer) {
            w.line(write)
            return
        }
        switch field.type {
        case .string:
            w.line("try \(buffer).writeKafkaString(\(value), compact: \(flex), nullable: \(optional ? nullable : "false"), field: \(label))")
        case .bytes, .records:
            w.line("try \(buffer).writeKafkaBytes(\(value), compact: \(flex), nullable: \(optional ? nullable : "false"), field: \(label))")
        case let .array(element):
            if optional {
                w.open("if let items = \(value)")
            } else {
                w.open("do")
                w.line("let items: [\(swiftType(element))] = \(value)")
            }
            w.line("\(buffer).writeArrayCount(items.count, compact: \(flex))")
            w.open("for item in items")
            if let write = writeScalar(element, value: "item", buffer: buffer) {
                w.line(write)
            } else {
                switch element {
                case .string: w.line("try \(buffer).writeKafkaString(item, compact: \(flex), nullable: false, field: \(label))")
                case .bytes, .records: w.line("try \(buffer).writeKafkaBytes(item, compact: \(flex), nullable: false, field: \(label))")
                case .structure: w.line("try item.encode(to: &\(buffer), version: version)")
                default: throw SchemaError("\(spec.name).\(field.name): nested arrays are not supported")
                }
            }
            w.close()
            if optional {
                w.reopen("else")
                w.line("try \(buffer).writeNullArrayCount(compact: \(flex), nullable: \(nullable), field: \(label))")
            }
            w.close()
        case .structure:
            if !optional {
                w.line("try \(value).encode(to: &\(buffer), version: version)")
            } else {
                if nullable != "true" { w.open("if \(nullable)") }
                w.open("if let present = \(value)")
                w.line("\(buffer).writeKafkaInteger(Int8(1))")
                w.line("try present.encode(to: &\(buffer), version: version)")
                w.reopen("else")
                w.line("\(buffer).writeKafkaInteger(Int8(-1))")
                w.close()
                if nullable != "true" {
                    w.reopen("else")
                    w.open("guard let present = \(value) else")
                    w.line("throw .unexpectedNull(field: \(label))")
                    w.close()
                    w.line("try present.encode(to: &\(buffer), version: version)")
                    w.close()
                }
            }
        default:
            throw SchemaError("\(spec.name).\(field.name): unhandled type")
        }
    }
}
