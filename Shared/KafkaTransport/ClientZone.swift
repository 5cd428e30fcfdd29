/// The zone a client says it is in, through a `floe_zone=NAME` tag in its client id (for example
/// `client.id=orders,floe_zone=b`). Kafka's own request headers carry no zone; the tag is how a client
/// that reaches services outside its zone (a group coordinator, an admin call) keeps its zone's view,
/// and how the cluster's own services label their traffic. A client without the tag is taken to be in
/// the zone of the service it connected to (it bootstrapped through its zone's router).
public enum ClientZone {
    public static let tag = "floe_zone="

    /// The zone the client id declares (a `,` `;` `&` or space separated part `floe_zone=NAME`), or nil.
    public static func declared(in clientId: String?) -> String? {
        guard let clientId else { return nil }
        let separators: Set<Character> = [",", ";", " ", "&"]
        for part in clientId.split(whereSeparator: { separators.contains($0) }) where part.hasPrefix(tag) {
            let name = part.dropFirst(tag.count)
            if !name.isEmpty { return String(name) }
        }
        return nil
    }

    /// The client's zone: the declared one, else `fallback` (the zone of the service it reached).
    public static func of(_ clientId: String?, fallback: String) -> String {
        declared(in: clientId) ?? fallback
    }

    /// `clientId` with a tag for `zone` appended, unless it already declares one.
    public static func tagging(_ clientId: String?, zone: String) -> String {
        guard declared(in: clientId) == nil else { return clientId ?? "" }
        guard let clientId, !clientId.isEmpty else { return tag + zone }
        return clientId + "," + tag + zone
    }
}
