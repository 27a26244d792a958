import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A message received on a subscribed channel.
public struct PubSubMessage: Sendable {
    public var channel: String
    public var payload: ByteBuffer
}

/// One sharded pub/sub connection shared by everything on a node (`SSUBSCRIBE`, Redis 7: a
/// channel belongs to a slot like a key, and a single Redis serves it too). Channels are
/// reference-counted: the first `subscribe` of a channel sends SSUBSCRIBE and waits for Redis to
/// confirm it, the last `unsubscribe` sends SUNSUBSCRIBE. `run()` keeps the connection up, and
/// after a reconnect subscribes to every channel still wanted. Messages arrive on `messages`.
public final class RedisSubscriber: Sendable {
    public let endpoint: RedisEndpoint
    /// Every message on every subscribed channel, in the order Redis sent them (unless an
    /// `onMessage` handler takes them instead).
    public let messages: AsyncStream<PubSubMessage>
    private let messageSink: AsyncStream<PubSubMessage>.Continuation
    private let onMessage: (@Sendable (PubSubMessage) -> Void)?
    private let onConnectionEvent: (@Sendable (RedisClient.ConnectionEvent) -> Void)?
    private let onResubscribed: (@Sendable () -> Void)?
    private let group: EventLoopGroup
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private typealias Waiter = CheckedContinuation<Void, Error>
    /// Waits for a channel's confirmation without holding a reference: false if the channel
    /// stops being wanted first.
    private typealias Watcher = CheckedContinuation<Bool, Error>

    private struct Channel {
        /// References held: confirmed subscribers, and `waiters` (which hold one each).
        var count = 0
        var confirmed = false
        var waiters: [UInt64: Waiter] = [:]
        var watchers: [UInt64: Watcher] = [:]
    }

    private struct State {
        var connection: RedisConnection?
        var channels: [String: Channel] = [:]
        /// SSUBSCRIBEs sent on this connection whose confirmation has not come back, by channel.
        /// Only the confirmation of the last one counts: after SSUBSCRIBE, SUNSUBSCRIBE,
        /// SSUBSCRIBE the first confirmation comes before the channel is dropped again.
        var subscribesInFlight: [String: Int] = [:]
        /// SUNSUBSCRIBEs sent and not confirmed, by channel: a `sunsubscribe` beyond these is
        /// the server dropping the channel (its slot moved away).
        var unsubscribesInFlight: [String: Int] = [:]
        var connectedWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        /// A PING follows the SUBSCRIBEs sent after a reconnect: its reply says they all took.
        var awaitingResubscription = false
        var nextWaiter: UInt64 = 0

        mutating func waiterID() -> UInt64 {
            defer { nextWaiter += 1 }
            return nextWaiter
        }

        mutating func sendSubscribe(_ channel: String, on connection: RedisConnection) {
            subscribesInFlight[channel, default: 0] += 1
            connection.sendWithoutReply(["SSUBSCRIBE", channel])
        }

        mutating func sendUnsubscribe(_ channel: String) {
            guard let connection else { return }
            unsubscribesInFlight[channel, default: 0] += 1
            connection.sendWithoutReply(["SUNSUBSCRIBE", channel])
        }
    }

    /// - Parameter onMessage: if given, called with each message on the connection's event
    ///   loop, in order, instead of queueing it on `messages` (saves a task switch per message;
    ///   it must not block).
    /// - Parameter onResubscribed: called after a reconnect once Redis has confirmed every
    ///   channel again: messages published from then on arrive; those published while the
    ///   connection was down did not.
    public init(
        endpoint: RedisEndpoint,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis.subscriber"),
        onMessage: (@Sendable (PubSubMessage) -> Void)? = nil,
        onConnectionEvent: (@Sendable (RedisClient.ConnectionEvent) -> Void)? = nil,
        onResubscribed: (@Sendable () -> Void)? = nil
    ) {
        self.endpoint = endpoint
        self.onResubscribed = onResubscribed
        self.onMessage = onMessage
        self.onConnectionEvent = onConnectionEvent
        self.group = group
        self.logger = logger
        (messages, messageSink) = AsyncStream.makeStream(of: PubSubMessage.self)
    }

    public var isConnected: Bool { state.withLockedValue { $0.connection?.isActive ?? false } }

    /// Subscribes to `channel` (or adds a reference to it) and returns once Redis has confirmed
    /// the subscription, so every message published after this returns is delivered. Throws
    /// `RedisConnectionError` while Redis is unreachable, and `CancellationError` if the task
    /// is cancelled first (it then holds no reference).
    public func subscribe(_ channel: String) async throws {
        enum Outcome { case unavailable, subscribed, waiting, cancelled }
        let id = state.withLockedValue { $0.waiterID() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: Waiter) in
                let outcome: Outcome = state.withLockedValue { state in
                    if Task.isCancelled { return .cancelled }
                    guard let connection = state.connection, connection.isActive else { return .unavailable }
                    var entry = state.channels[channel, default: Channel()]
                    entry.count += 1
                    defer { state.channels[channel] = entry }
                    if entry.confirmed { return .subscribed }
                    entry.waiters[id] = waiter
                    if entry.count == 1 { state.sendSubscribe(channel, on: connection) }
                    return .waiting
                }
                switch outcome {
                case .unavailable: waiter.resume(throwing: RedisConnectionError.unavailable(retryAfterMilliseconds: 1000))
                case .subscribed: waiter.resume()
                case .cancelled: waiter.resume(throwing: CancellationError())
                case .waiting: break
                }
            }
        } onCancel: {
            // Gives back the reference the waiter held; the subscription itself, if Redis
            // confirms it later, stays until the last reference goes.
            let (waiter, watchers) = state.withLockedValue { state -> (Waiter?, [Watcher]) in
                guard let waiter = state.channels[channel]?.waiters.removeValue(forKey: id) else { return (nil, []) }
                state.channels[channel]?.count -= 1
                guard let entry = state.channels[channel], entry.count == 0 else { return (waiter, []) }
                state.channels[channel] = nil
                state.sendUnsubscribe(channel)
                return (waiter, Array(entry.watchers.values))
            }
            waiter?.resume(throwing: CancellationError())
            watchers.forEach { $0.resume(returning: false) }
        }
    }

    /// Adds a reference to `channel` without waiting: SSUBSCRIBE goes out now if this is the
    /// first one and the connection is up, else with the others after a reconnect. For callers
    /// that must take the reference in order with other state (under their own lock), and
    /// wait for the confirmation later with `waitUntilSubscribed`.
    public func retain(_ channel: String) {
        state.withLockedValue { state in
            var entry = state.channels[channel, default: Channel()]
            entry.count += 1
            defer { state.channels[channel] = entry }
            if entry.count == 1, let connection = state.connection, connection.isActive { state.sendSubscribe(channel, on: connection) }
        }
    }

    /// Waits until Redis has confirmed `channel` on the live connection, so every message
    /// published on it from then on is delivered. Returns false if nothing holds a reference to
    /// the channel (any more). Throws `RedisConnectionError` while Redis is unreachable, and
    /// `CancellationError` if the task is cancelled first.
    public func waitUntilSubscribed(_ channel: String) async throws -> Bool {
        enum Outcome { case unavailable, subscribed, unwanted, waiting, cancelled }
        let id = state.withLockedValue { $0.waiterID() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (watcher: Watcher) in
                let outcome: Outcome = state.withLockedValue { state in
                    if Task.isCancelled { return .cancelled }
                    guard var entry = state.channels[channel], entry.count > 0 else { return .unwanted }
                    guard let connection = state.connection, connection.isActive else { return .unavailable }
                    if entry.confirmed { return .subscribed }
                    entry.watchers[id] = watcher
                    state.channels[channel] = entry
                    return .waiting
                }
                switch outcome {
                case .unavailable: watcher.resume(throwing: RedisConnectionError.unavailable(retryAfterMilliseconds: 1000))
                case .subscribed: watcher.resume(returning: true)
                case .unwanted: watcher.resume(returning: false)
                case .cancelled: watcher.resume(throwing: CancellationError())
                case .waiting: break
                }
            }
        } onCancel: {
            state.withLockedValue { $0.channels[channel]?.watchers.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// Whether Redis has confirmed the channel's latest SSUBSCRIBE on the live connection. Asked
    /// from `onMessage`, it tells whether the message came on that subscription (one still in
    /// flight from an earlier subscription of the channel comes before the confirmation).
    public func isConfirmed(_ channel: String) -> Bool {
        state.withLockedValue { $0.channels[channel]?.confirmed ?? false }
    }

    /// Drops one reference to `channel`; the last one unsubscribes.
    public func unsubscribe(_ channel: String) {
        let watchers = state.withLockedValue { state -> [Watcher] in
            guard var entry = state.channels[channel] else { return [] }
            entry.count -= 1
            if entry.count > 0 {
                state.channels[channel] = entry
                return []
            }
            state.channels[channel] = nil
            state.sendUnsubscribe(channel)
            return Array(entry.watchers.values)
        }
        watchers.forEach { $0.resume(returning: false) }
    }

    /// Keeps the connection up until the task is cancelled.
    public func run() async {
        var backoff = Backoff()
        var recovering = false
        while !Task.isCancelled {
            do {
                let connection = try await RedisConnection.connect(
                    to: endpoint, on: group, connectTimeout: .seconds(2), commandTimeout: .seconds(5),
                    onPush: { [weak self] reply in self?.receive(reply) })
                backoff.reset()
                if recovering { onConnectionEvent?(.restored) }
                recovering = true
                resubscribe(on: connection)
                logger.debug("subscriber connected", metadata: ["redis": "\(endpoint)"])
                await withTaskCancellationHandler {
                    try? await connection.closeFuture.get()
                } onCancel: {
                    connection.channel.close(promise: nil)
                }
                connectionLost()
                if !Task.isCancelled {
                    logger.warning("subscriber connection lost", metadata: ["redis": "\(endpoint)"])
                    onConnectionEvent?(.lost)
                }
            } catch {
                recovering = true
                logger.warning("subscriber cannot connect", metadata: ["redis": "\(endpoint)", "error": "\(error)"])
                onConnectionEvent?(.connectFailed)
            }
            try? await Task.sleep(for: .nanoseconds(backoff.next().nanoseconds))
        }
        messageSink.finish()
    }

    /// Drops the connection; `run()` opens a new one and subscribes again to every channel.
    /// For a subscription found dead while its connection looks alive.
    public func reconnect() {
        state.withLockedValue { $0.connection }?.channel.close(promise: nil)
    }

    /// Waits until the subscriber has a live connection (or the task is cancelled).
    public func waitUntilConnected() async {
        let id = state.withLockedValue { $0.waiterID() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let ready = state.withLockedValue { state in
                    if Task.isCancelled || state.connection?.isActive ?? false { return true }
                    state.connectedWaiters[id] = waiter
                    return false
                }
                if ready { waiter.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.connectedWaiters.removeValue(forKey: id) }?.resume()
        }
    }

    private func resubscribe(on connection: RedisConnection) {
        let waiters = state.withLockedValue { state in
            state.connection = connection
            state.subscribesInFlight = [:]
            state.unsubscribesInFlight = [:]
            for (name, var entry) in state.channels {
                entry.confirmed = false
                state.channels[name] = entry
                state.sendSubscribe(name, on: connection)
            }
            state.awaitingResubscription = true
            connection.sendWithoutReply(["PING"])
            defer { state.connectedWaiters = [:] }
            return state.connectedWaiters.values
        }
        waiters.forEach { $0.resume() }
    }

    private func connectionLost() {
        let (waiters, watchers) = state.withLockedValue { state in
            state.connection = nil
            state.subscribesInFlight = [:]
            state.unsubscribesInFlight = [:]
            var waiters: [Waiter] = []
            var watchers: [Watcher] = []
            for (name, var entry) in state.channels {
                // A failed subscribe holds no reference: its caller was told it failed.
                waiters += entry.waiters.values
                watchers += entry.watchers.values
                entry.count -= entry.waiters.count
                entry.waiters = [:]
                entry.watchers = [:]
                entry.confirmed = false
                state.channels[name] = entry.count > 0 ? entry : nil
            }
            return (waiters, watchers)
        }
        waiters.forEach { $0.resume(throwing: RedisConnectionError.connectionClosed) }
        watchers.forEach { $0.resume(throwing: RedisConnectionError.connectionClosed) }
    }

    private func receive(_ reply: RESPValue) {
        if reply == .simpleString("PONG") { return resubscribed() }  // PING with no channels subscribed
        guard case .array(let parts) = reply, let kind = parts.first?.string else { return }
        switch kind {
        case "pong":
            resubscribed()
        case "smessage":
            guard parts.count == 3, let channel = parts[1].string, case .bulkString(let payload) = parts[2] else { return }
            let message = PubSubMessage(channel: channel, payload: payload)
            if let onMessage { onMessage(message) } else { messageSink.yield(message) }
        case "ssubscribe":
            guard parts.count == 3, let channel = parts[1].string else { return }
            let (waiters, watchers) = state.withLockedValue { state -> ([Waiter], [Watcher]) in
                let inFlight = (state.subscribesInFlight[channel] ?? 1) - 1
                state.subscribesInFlight[channel] = inFlight > 0 ? inFlight : nil
                guard inFlight <= 0, var entry = state.channels[channel] else { return ([], []) }
                entry.confirmed = true
                defer { entry.waiters = [:]; entry.watchers = [:]; state.channels[channel] = entry }
                return (Array(entry.waiters.values), Array(entry.watchers.values))
            }
            waiters.forEach { $0.resume() }
            watchers.forEach { $0.resume(returning: true) }
        case "sunsubscribe":
            guard parts.count == 3, let channel = parts[1].string else { return }
            let dropped = state.withLockedValue { state -> Bool in
                let ours = state.unsubscribesInFlight[channel] ?? 0
                state.unsubscribesInFlight[channel] = ours > 1 ? ours - 1 : nil
                guard ours == 0, state.channels[channel] != nil else { return false }
                state.channels[channel]!.confirmed = false
                return true
            }
            if dropped {
                // Redis dropped a channel still wanted (its slot moved to another shard): a new
                // connection subscribes to everything again, and the streams catch up.
                logger.warning("Redis dropped a subscribed channel: reconnecting", metadata: ["channel": "\(channel)"])
                reconnect()
            }
        default:
            break
        }
    }

    private func resubscribed() {
        let first = state.withLockedValue { state in
            defer { state.awaitingResubscription = false }
            return state.awaitingResubscription
        }
        if first { onResubscribed?() }
    }
}
