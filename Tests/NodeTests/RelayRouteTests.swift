import HTTPTypes
@testable import HTTPServer
import Testing

/// Which requests the connection serves as relays itself: `POST /relay/<peer>/<event>`, with or
/// without a query; anything else goes on to Hummingbird's router, which decodes and matches it.
@Suite("Relay routes")
struct RelayRouteTests {
    private func route(_ path: String, _ method: HTTPRequest.Method = .post) -> RelayEndpoint.Route? {
        RelayEndpoint.route(of: HTTPRequest(method: method, scheme: nil, authority: nil, path: path))
    }

    @Test func aRelayPathGivesItsPeerAndEvent() throws {
        let plain = try #require(route("/relay/peer-1/offer"))
        #expect(plain.peerID == "peer-1" && plain.event == "offer" && plain.uri == nil)
        let queried = try #require(route("/relay/p/ice?token=abc"))
        #expect(queried.peerID == "p" && queried.event == "ice")
        #expect(queried.uri?.queryParameters["token"] == "abc")
        #expect(route("/relay/p/e?").map { [$0.peerID, $0.event] } == ["p", "e"])
    }

    @Test(arguments: [
        "/relay/", "/relay/p", "/relay/p/", "/relay//e", "/relay/p/e/", "/relay/p/e/x", "/relay/p?x=1/e", "/relay/p/?q",
        "/relay/p%2F/e", "/relays/p/e", "/relay", "/connect", "/relay/p//e",
    ])
    func anyOtherPathIsLeftToTheRouter(_ path: String) {
        #expect(route(path) == nil)
    }

    @Test func onlyAPostIsARelay() {
        #expect(route("/relay/p/e", .get) == nil)
    }
}
