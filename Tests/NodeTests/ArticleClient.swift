import Foundation
import NIOConcurrencyHelpers
import SignalingClient

/// A client written the way the original article's browser client is: one EventSource (here
/// `BrowserEventSource`, which reconnects and fails exactly as a browser's does), one
/// `POST /:room/join` on each `connected` event, and no retry logic of its own. Its join may go
/// to another node than its stream: there are no sticky sessions.
final class ArticleClient: Sendable {
    struct View: Sendable {
        /// The peer id from the last `connected` event.
        var id: String?
        /// Peers of the room, from `add-peer` and `remove-peer`.
        var peers: Set<String> = []
        /// Every event but pings, `<event> <data>`.
        var events: [String] = []
        /// Status of each join it posted.
        var joins: [Int] = []
        /// Set once the EventSource failed for good, with the status it got.
        var failedWith: Int?
        var opens = 0
    }

    let token: String
    private let source: BrowserEventSource
    private let joinNode: SignalingClient
    private let room: String
    private let state = NIOLockedValueBox(View())

    init(token: String, streamNode: SignalingClient, joinNode: SignalingClient, room: String) {
        self.token = token
        self.source = BrowserEventSource(client: streamNode, path: "/connect?token=\(token)")
        self.joinNode = joinNode
        self.room = room
    }

    var view: View { state.withLockedValue { $0 } }

    /// Runs the page until the task is cancelled (or its EventSource fails for good).
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.source.run() }
            for await occurrence in source.occurrences {
                switch occurrence {
                case .open: state.withLockedValue { $0.opens += 1 }
                case .error: break
                case .failed(let status): state.withLockedValue { $0.failedWith = status }
                case .message(let event): await handle(event)
                }
            }
        }
    }

    private func handle(_ event: ServerSentEvent) async {
        guard event.event != "ping" else { return }
        let data = json(event.data)
        state.withLockedValue { $0.events.append("\(event.event) \(event.data)") }
        switch event.event {
        case "connected":
            let id = (data["user"] as? [String: Any])?["id"] as? String
            state.withLockedValue { $0.id = id }
            let status = (try? await joinNode.request(.POST, "/\(room)/join", token: token).status) ?? -1
            state.withLockedValue { $0.joins.append(status) }
        case "add-peer", "remove-peer":
            guard let peer = (data["peer"] as? [String: Any])?["id"] as? String else { return }
            state.withLockedValue { view in
                if event.event == "add-peer" { view.peers.insert(peer) } else { view.peers.remove(peer) }
            }
        default:
            break
        }
    }
}
