import ArgumentParser
import Coordinator
import Foundation
import HTTPServer

/// `switchboard token`: mints a token as an application's backend would, for scripts and
/// operators. Prints the token alone on stdout.
struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mint a token signed with the fleet's secret.",
        discussion: """
            The id names one peer, that is one browser tab: two streams with the same id replace
            each other, so a backend that uses its user ids must add a per-tab suffix.
            """
    )

    @Option(help: "The peer's id: \(identifierRule).")
    var id: String

    @Option(help: "The name other peers see: 1 to 64 characters, no control characters.")
    var username: String

    @Option(help: ArgumentHelp(
        "Comma-separated rooms the token may join: room ids, prefixes ending in * (team-*), or * for all. Default: no rooms claim, every room.",
        valueName: "rooms"))
    var rooms: String?

    @Option(help: ArgumentHelp(
        "Seconds the token is valid, at most \(Int(TokenAuthority.maximumLifetime)) (7 days). (default: 3600)", valueName: "seconds"))
    var ttl: Int = 3600

    @Option(help: ArgumentHelp(
        "HS256 secret, at least 32 bytes, used as UTF-8 text. (env: SWITCHBOARD_TOKEN_SECRET; required)", valueName: "secret"))
    var tokenSecret: String?

    func run() async throws {
        guard let secret = tokenSecret ?? ProcessInfo.processInfo.environment["SWITCHBOARD_TOKEN_SECRET"] else {
            throw ValidationError("no secret: pass --token-secret or set SWITCHBOARD_TOKEN_SECRET (the fleet's secret)")
        }
        guard let peer = PeerID(id) else { throw ValidationError("--id '\(id)': use \(identifierRule)") }
        guard PeerUser.isValidUsername(username) else {
            throw ValidationError("--username must be 1 to 64 characters without control characters")
        }
        guard ttl > 0, TimeInterval(ttl) <= TokenAuthority.maximumLifetime else {
            throw ValidationError("--ttl must be 1 to \(Int(TokenAuthority.maximumLifetime)) seconds")
        }
        var grants = RoomGrants.all
        if let rooms {
            let entries = rooms.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard let parsed = RoomGrants(claim: rooms.isEmpty ? [] : entries) else {
                throw ValidationError("--rooms: each entry is a room id (\(identifierRule)), such an id followed by *, or *")
            }
            grants = parsed
        }
        let authority: TokenAuthority
        do { authority = try await TokenAuthority(secret: secret) } catch { throw ValidationError("\(error)") }
        print(try await authority.issue(for: PeerUser(id: peer, username: username), rooms: grants, lifetime: TimeInterval(ttl)))
    }
}
